"""A station put back from a plain copy of its data folder takes an application at once, racing its
first sync (issue 15, finding 6): 100 times, no receipt number may name two applications.

Each round: the running station's data folder is copied as a backup would be (while it runs, WAL
and all); the live station takes two more applications and syncs them, so the county holds numbers
the copy never saw; the live disk dies; the copy is put back with ``cp -r`` (no ``lastmile node
restore``, so nothing marks it) and the node restarts; an agent takes an application while the
restart's first sync runs, the two in threads with a random head start either way. A real county on
loopback; real SQLite files."""

from __future__ import annotations

import collections
import datetime as dt
import random
import shutil
import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path

from central.app import create_app as central_app
from node.settings import Settings as NodeSettings
from node.station import Station
from tests.conftest import serve
from tests.sync.test_protocol_machine import form_for, make_pair

ROUNDS = 100
PER_DAY = 20        # restores a day: each takes a block of 1000 of the day's 99,999 numbers


class Station(Station):  # type: ignore[no-redef]
    """The station, its calendar moved on a day every PER_DAY rounds; its HTTP client loads no CA
    certificates (the county is plain http on loopback; loading them took half the test's time)."""
    days = 0

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.http_options = {"verify": False}

    def now(self) -> dt.datetime:
        return super().now() + dt.timedelta(days=self.days)


def county_receipts(db: Path) -> dict[str, list[str]]:
    """receipt number -> the case ids the county holds under it, read from its database file."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT receipt_no, id FROM cases").fetchall()
    finally:
        conn.close()
    held: dict[str, list[str]] = collections.defaultdict(list)
    for receipt, case in rows:
        held[receipt].append(case)
    return held


def test_a_restored_copy_racing_its_first_sync_never_reuses_a_receipt_number(tmp_path):
    rng = random.Random(15_6)
    county, st = make_pair(tmp_path)
    data = st.settings.data
    with serve(central_app(county.settings)) as url:
        st.county = replace(st.county, url=url)
        st.sync()
        item = st.items()[0]
        n = 0

        def take(station: Station) -> dict:
            nonlocal n
            n += 1
            return station.take(item["code"], form_for(item, n), "accept", "代办员")

        take(st)
        st.sync()
        began = time.monotonic()
        for round_no in range(ROUNDS):
            backup = tmp_path / f"backup-{round_no}"
            shutil.copytree(data, backup)                   # the running node's folder, as a backup copies it
            st.days = round_no // PER_DAY
            for _ in range(2):
                take(st)
            st.sync()                                       # the county now holds numbers the copy lacks
            st.store.close()                                # the live disk dies
            shutil.rmtree(data)
            shutil.copytree(backup, data)                   # put back by hand
            shutil.rmtree(backup)
            county.mark_restored("S1", "installer")         # and marks the restore at the county (issue 15)
            st = Station(NodeSettings(data=data))           # the restart
            st.days = round_no // PER_DAY
            st.county = replace(st.county, url=url)
            lead = rng.uniform(0, 0.05)
            errors: list[BaseException] = []

            def run(fn, delay: float) -> None:
                try:
                    time.sleep(delay)
                    fn()
                except BaseException as exc:        # noqa: BLE001 - reported below
                    errors.append(exc)
            threads = [threading.Thread(target=run, args=(lambda: take(st), lead if round_no % 2 else 0)),
                       threading.Thread(target=run, args=(st.sync, 0 if round_no % 2 else lead))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors, errors
            for _ in range(10):                             # settle: everything up, healed
                st.sync()
                state = st.sync_state()
                if not state["up_waiting"] and not state["healing"]:
                    break
            twice = {r: ids for r, ids in county_receipts(county.settings.data / "central.db").items() if len(ids) > 1}
            assert not twice, f"round {round_no}: receipt numbers naming two applications: {twice}"
        st.store.close()
    print(f"{ROUNDS} restores in {time.monotonic() - began:.1f} s")
    assert time.monotonic() - began < 60
