"""Restore trials: a station's data directory copied at random points and later put back, mixed
with a replaced PC and a county restored from its backup, applications taken and decided all along.

After each trial, with one more sync: the county has every application that still lives in the
county's data or the station's data (what reached the county, or the backup that was put back)
exactly once, with the receipt number its citizen holds; no receipt number names two applications;
station and county hold the same log; nothing is stuck (sync completes, nothing waiting, no fork,
nothing set aside). Real SQLite files, a real server on loopback.

The quick version (3 trials) runs by default; the full one (30 trials) with ``-m slow``. The figures
of a run are printed (``-s``)."""

from __future__ import annotations

import random
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest

from central.app import create_app as central_app
from central.county import County
from node.services.enrolment import enroll
from node.settings import Settings as NodeSettings
from node.station import Station
from sync.errors import SyncError
from tests.conftest import serve
from tests.sync.test_protocol_machine import form_for, make_pair

CLERK = {"name": "科员", "role": "supervisor", "department": None}


class Trial:
    def __init__(self, root: Path, seed: int) -> None:
        self.root, self.rng = root, random.Random(seed)
        self.county, self.st = make_pair(root)
        self.cset = self.county.settings
        self.live = {"station": set(), "county": set()}       # application ids each current copy holds
        self.receipts: dict[str, str] = {}                      # id -> receipt number its citizen holds
        self.backups: list[tuple[Path, set[str]]] = []
        self.county_backups: list[tuple[Path, set[str]]] = []
        self.figures = {"taken": 0, "station_restores": 0, "replaced": 0, "county_restores": 0, "settles": 0,
                        "decided": 0, "decided_fresh_county": 0, "handed_out": 0}
        self.decided: set[str] = set()
        self.fresh_county = False        # restored and not yet synced: the county decides nothing then
        self.n = 0

    # the moving parts ------------------------------------------------------------------------
    def settle(self, url: str) -> None:
        self.st.county = replace(self.st.county, url=url)
        for _ in range(30):
            self.st.sync()
            state = self.st.sync_state()
            if not state["up_waiting"] and not state["healing"] and not self.st.store.sync_status("down_return_from"):
                both = self.live["station"] | self.live["county"]
                self.live = {"station": set(both), "county": set(both)}
                self.fresh_county = False
                self.figures["settles"] += 1
                return
        raise AssertionError(f"sync did not settle: {state}")

    def take(self) -> None:
        items = self.st.items()
        if not items:                      # no catalogue yet: the first sync brings it
            return
        for _ in range(self.rng.randint(1, 3)):
            self.n += 1
            item = items[self.n % len(items)]
            app = self.st.take(item["code"], form_for(item, self.n), "accept", "代办员")
            self.receipts[app["id"]] = app["receipt_no"]
            self.live["station"].add(app["id"])
            self.figures["taken"] += 1

    def decide(self) -> None:
        """Also right after a county restore, before any sync (its new decisions then take numbers
        the station holds): only a case never decided before, as two different decisions on one
        case are a real conflict for a person (set aside for repair, PROTOCOL.md §8.5)."""
        open_cases = [c for c in self.county.store.cases(status="received") if c["id"] not in self.decided]
        if open_cases:
            case = self.rng.choice(open_cases)
            self.county.decide(case["id"], self.rng.choice(["approve", "reject"]), "材料不全", CLERK,
                               reason="材料不全", basis="《示范条例》第三条")
            self.decided.add(case["id"])
            self.figures["decided"] += 1
            self.figures["decided_fresh_county"] += self.fresh_county

    def hand_out(self) -> None:
        done = self.st.store.applications("status IN ('approved', 'rejected')")
        if done:
            self.st.hand_out(self.rng.choice(done)["id"], "代办员")
            self.figures["handed_out"] += 1

    def backup_station(self) -> None:
        data = self.st.settings.data
        self.st.store.close()
        to = self.root / f"station-backup-{self.n}-{time.monotonic_ns()}"
        shutil.copytree(data, to)
        self.backups.append((to, set(self.live["station"])))
        self.st = Station(NodeSettings(data=data))

    def restore_station(self) -> None:
        if not self.backups:
            return
        src, held = self.rng.choice(self.backups)
        data = self.st.settings.data
        self.st.store.close()
        shutil.rmtree(data)
        shutil.copytree(src, data)
        self.st = Station(NodeSettings(data=data))
        self.live["station"] = set(held)
        self.figures["station_restores"] += 1

    def replace_pc(self, url: str) -> None:
        self.st.store.close()
        otp = self.county.add_station("S1", "", "", replace=True)
        data = self.root / f"S1-pc{self.figures['replaced'] + 2}"
        enroll(NodeSettings(data=data), central_url=url, station="S1", code=otp,
               fingerprint=self.county.me.public.fingerprint())
        self.st = Station(NodeSettings(data=data))
        self.live["station"] = set()
        self.backups = []                 # the old PC's backups carry its old keys: not put back
        # A county backup from before the replacement does not know the new PC's keys: putting it
        # back would need `station add --replace` again (a known limit, INSTALL.md), so not done here.
        self.county_backups = []
        self.figures["replaced"] += 1

    def backup_county(self) -> None:      # the county is stopped (no server) around this
        self.county.store.close()
        to = self.root / f"county-backup-{self.n}-{time.monotonic_ns()}"
        shutil.copytree(self.cset.data, to)
        self.county_backups.append((to, set(self.live["county"])))
        self.county = County(self.cset)

    def restore_county(self) -> None:
        if not self.county_backups:
            return
        src, held = self.rng.choice(self.county_backups)
        self.county.store.close()
        shutil.rmtree(self.cset.data)
        shutil.copytree(src, self.cset.data)
        self.county = County(self.cset)
        self.live["county"] = set(held)
        self.fresh_county = True
        self.figures["county_restores"] += 1

    # one trial -----------------------------------------------------------------------------------
    def run(self, steps: int) -> dict[str, int]:
        plan = [self.rng.choices(["take", "settle", "decide", "hand_out", "backup", "restore", "county"],
                                 [30, 22, 12, 6, 12, 10, 8])[0] for _ in range(steps)]
        plan[self.rng.randrange(steps // 2)] = "backup"                 # at least one station backup ...
        plan[self.rng.randrange(steps // 2, steps)] = "restore"        # ... put back later
        plan[self.rng.randrange(steps)] = "replace"                     # and a new PC somewhere
        with serve(central_app(self.cset)) as url:
            self.settle(url)                                            # the first contact: the catalogue
        for action in plan:
            if action == "county":
                # stop the county, then back it up or restore it (restore only after a backup)
                (self.restore_county if self.county_backups and self.rng.random() < 0.5 else self.backup_county)()
                continue
            with serve(central_app(self.cset)) as url:
                if action == "take":
                    self.take()
                elif action == "settle":
                    self.settle(url)
                elif action == "decide":
                    self.decide()
                elif action == "hand_out":
                    self.hand_out()
                elif action == "backup":
                    self.backup_station()
                elif action == "restore":
                    self.restore_station()
                elif action == "replace":
                    self.replace_pc(url)
        expected = self.live["station"] | self.live["county"]
        with serve(central_app(self.cset)) as url:
            self.settle(url)
        self.check(expected)
        self.county.store.close()
        self.st.store.close()
        return self.figures

    def check(self, expected: set[str]) -> None:
        rows = self.county.store._all("SELECT id, receipt_no FROM cases")
        ids = [r[0] for r in rows]
        assert len(ids) == len(set(ids))
        assert set(ids) == expected, (f"missing at the county: {sorted(expected - set(ids))[:5]},"
                                      f" unexpected: {sorted(set(ids) - expected)[:5]}")
        assert len({r[1] for r in rows}) == len(rows), "a receipt number names two applications"
        assert all(self.receipts[i] == r for i, r in rows), "an application changed its receipt number"
        mine = {a["id"]: a["receipt_no"] for a in self.st.store.applications(limit=100_000)}
        assert mine == dict(rows)
        conn_c, conn_s = self.county.store.conn, self.st.store.conn
        for name in ("up/S1", "down/S1"):
            q = "SELECT seq, hash FROM _sync_events WHERE stream = ? ORDER BY seq"
            assert conn_c.execute(q, (name,)).fetchall() == conn_s.execute(q, (name,)).fetchall(), name
        for conn in (conn_c, conn_s):
            assert conn.execute("SELECT count(*) FROM _sync_forks").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM _sync_repairs").fetchone()[0] == 0
        state = self.st.sync_state()
        assert not state["up_waiting"] and not state["healing"] and not state["stalled"]
        assert self.county.store.cases(status="received") or True


def run_trials(tmp_path: Path, n: int, steps: int) -> dict[str, int]:
    totals: dict[str, int] = {}
    started = time.monotonic()
    for seed in range(n):
        try:
            figures = Trial(tmp_path / f"trial-{seed}", seed).run(steps)
        except (AssertionError, SyncError) as exc:
            raise AssertionError(f"trial {seed} (seed {seed}) failed: {exc}") from exc
        for k, v in figures.items():
            totals[k] = totals.get(k, 0) + v
    totals["trials"], totals["seconds"] = n, int(time.monotonic() - started)
    print("restore trials:", totals)
    return totals


def test_restore_trials_quick(tmp_path: Path) -> None:
    totals = run_trials(tmp_path, 3, 14)
    assert totals["station_restores"] >= 3 and totals["replaced"] == 3


@pytest.mark.slow
def test_restore_trials_full(tmp_path: Path) -> None:
    totals = run_trials(tmp_path, 30, 24)
    assert totals["station_restores"] >= 30 and totals["replaced"] == 30
