"""Crash trials: a real station process killed with SIGKILL at random moments, again and again.

A printed receipt must survive any crash exactly once, the upstream log must stay dense and
chained, and a sync cut at any point must, after a clean sync, leave the county with every
application exactly once. Workers are ``tests/crashworker.py`` subprocesses.

``LASTMILE_CRASH_TRIALS=200`` raises the number of trials of each test (a bench run);
``LASTMILE_CRASH_SEED`` picks another seed (the seed is in every failure message).
"""

from __future__ import annotations

import asyncio
import os
import random
import selectors
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from central.app import create_app as central_app
from central.county import County, Settings as CentralSettings
from crypto.keys import Identity
from node.settings import Settings as NodeSettings
from node.station import Station
from node.store import TOKEN_ENV, Store as NodeStore
from sync import log
from tests.conftest import add_station, make_county, serve
from tests.crashworker import form_for

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "crashworker.py"
TRIALS = int(os.environ.get("LASTMILE_CRASH_TRIALS", "0"))
INTAKE_TRIALS = TRIALS or 30
SYNC_TRIALS = TRIALS or 20
SEED = int(os.environ.get("LASTMILE_CRASH_SEED", "20261122"))
INTAKE_N = 40
SYNC_START = 100          # accepted applications before the first sync
SPAWN_TIMEOUT = 30.0      # a worker that has not said READY by then is a failure, not a slow machine


# --- a worker process ------------------------------------------------------------------------------

@dataclass
class Run:
    """One worker subprocess; its stdout is read as it comes so the test can time the kill."""

    args: tuple[str, ...]
    proc: subprocess.Popen = field(init=False)
    out: bytes = b""
    started: float = 0.0
    ready_at: float | None = None
    killed: bool = False
    first_sync_at: float | None = None

    def __post_init__(self) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, str(WORKER), *self.args], cwd=ROOT, bufsize=0,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)

    def _read(self, timeout: float) -> bool:
        """Read what is there (waiting at most ``timeout``); False at end of file."""
        if self.sel.select(max(timeout, 0)):
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                return False
            self.out += chunk
            now = time.monotonic()
            if self.ready_at is None and b"READY\n" in self.out:
                self.ready_at = now
            if self.first_sync_at is None and b"SYNCED " in self.out:
                self.first_sync_at = now
        return True

    def wait_ready(self) -> bool:
        """Wait for READY; False if the worker ended first."""
        deadline = time.monotonic() + SPAWN_TIMEOUT
        while self.ready_at is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {self.args} did not start within {SPAWN_TIMEOUT} s")
            if not self._read(deadline - time.monotonic()):
                return False
        return True

    def sleep(self, seconds: float) -> bool:
        """Keep reading for ``seconds``; False if the worker ended (end of file) before."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self._read(deadline - time.monotonic()):
                return False
        return True

    def kill(self) -> None:
        if self.proc.poll() is None:         # not reaped yet, so the pid is still ours
            os.kill(self.proc.pid, signal.SIGKILL)
            self.killed = True

    def finish(self) -> tuple[int, list[str], str]:
        """Wait for the end; return exit code, the complete stdout lines and stderr."""
        deadline = time.monotonic() + SPAWN_TIMEOUT
        while self._read(1.0):
            if time.monotonic() > deadline and not self.killed:
                self.kill()                      # hung: never leave a worker behind
        self.sel.close()
        _, err = self.proc.communicate(timeout=SPAWN_TIMEOUT)
        self.proc.stdout.close()
        rc = self.proc.returncode
        lines = self.out.decode("utf-8", "replace").split("\n")[:-1]     # a cut-off last line is dropped
        if self.killed and rc == 0:
            self.killed = False                  # it ended between poll() and the signal
        return rc, lines, err.decode("utf-8", "replace")


# --- a county and one enrolled station -------------------------------------------------------------

class Link:
    """ASGI wrapper around the county app: counts requests in flight and can hold each answer
    back for ``delay`` seconds after the county has committed (a slow link), which widens the
    window in which a kill loses an answer the county already acted on."""

    def __init__(self, app: Any) -> None:
        self.app, self.delay, self.in_flight = app, 0.0, 0
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        delay = self.delay

        async def slow_send(message: Any) -> None:
            if message["type"] == "http.response.start" and delay:
                await asyncio.sleep(delay)
            await send(message)

        with self._lock:
            self.in_flight += 1
        try:
            await self.app(scope, receive, slow_send)
        finally:
            with self._lock:
                self.in_flight -= 1

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until the county has finished every request (those of killed workers too)."""
        deadline = time.monotonic() + timeout
        while self.in_flight:
            assert time.monotonic() < deadline, "the county did not finish its requests"
            time.sleep(0.005)


@dataclass
class Site:
    central: CentralSettings
    url: str
    node: NodeSettings
    link: Link


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    central, _ = make_county(tmp_path / "central")
    link = Link(central_app(central))
    with serve(link) as url:
        node, token = add_station(central, url, tmp_path / "V1", "V1", "village")
        monkeypatch.setenv(TOKEN_ENV, token)         # workers and stations here unlock with it (node/vault.py)
        st = Station(node)
        st.store.unlock_from_env()
        try:
            st.sync()                                    # the catalogue comes down
            assert st.items()
        finally:
            st.store.close()
        yield Site(central, url, node, link)


def connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, timeout=10)


def check_log(db: sqlite3.Connection, stream: str, sign_key: str) -> list[log.Event]:
    """The whole stream: dense from 1, each prev the hash before, each hash and signature valid."""
    events: list[log.Event] = []
    while batch := log.events_after(db, stream, events[-1].seq if events else 0):
        events += batch
    prev = log.GENESIS
    for i, ev in enumerate(events, start=1):
        assert ev.seq == i, f"{stream}: seq {ev.seq} where {i} was due"
        assert ev.prev == prev, f"{stream}#{ev.seq}: prev does not chain onto the event before"
        ev.check(sign_key)
        prev = ev.hash
    return events


def integrity(path: Path) -> None:
    db = connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)], path
        assert db.execute("PRAGMA foreign_key_check").fetchall() == [], path
    finally:
        db.close()


# --- kill during intake ----------------------------------------------------------------------------

def test_kill_during_intake(site: Site) -> None:
    """Every receipt a killed intake process printed is in the node DB exactly once.

    The first run is not killed: it measures how long N takes last (the take window). Then a
    quarter of the kills come at 0.05-1.0 s after spawn (many land in start-up: imports, opening
    and migrating the store; some after the worker is done), the rest at a random point of the take window after READY, so they
    land inside take(): before, inside or just after its transaction."""
    rng = random.Random(SEED)
    db_path, stream = site.node.db_path, log.up("V1")
    printed: dict[str, str] = {}                # receipt_no -> id
    outcome: Counter[str] = Counter()
    window = 0.0

    def rows() -> int:
        db = connect(db_path)
        try:
            return int(db.execute("SELECT count(*) FROM applications").fetchone()[0])
        finally:
            db.close()

    for trial in range(INTAKE_TRIALS):
        where = f"trial {trial}, seed {SEED}"
        before = rows()
        run = Run(("intake", str(site.node.data), str(INTAKE_N)))
        try:
            if trial == 0:
                assert run.wait_ready(), where
                run.sleep(SPAWN_TIMEOUT)
                window = time.monotonic() - (run.ready_at or run.started)
            elif rng.random() < 0.25:
                run.sleep(rng.uniform(0.05, 1.0))
            elif run.wait_ready():
                run.sleep(rng.uniform(0.0, window))
            run.kill()
        except BaseException:
            run.kill()
            run.finish()
            raise
        rc, lines, err = run.finish()
        receipts = [line.split() for line in lines if line.startswith("RECEIPT ")]
        for _, receipt_no, app_id in receipts:
            assert receipt_no not in printed, f"{where}: receipt {receipt_no} printed twice"
            printed[receipt_no] = app_id
        new = rows() - before
        if not run.killed:
            assert rc == 0 and len(receipts) == INTAKE_N == new, f"{where}: rc={rc} {err}"
            outcome["completed"] += 1
            continue
        assert rc == -signal.SIGKILL, f"{where}: rc={rc} {err}"
        assert new - len(receipts) in (0, 1), f"{where}: {new} rows for {len(receipts)} receipts"
        last = lines[-1] if lines else ""
        if "READY" not in lines:
            outcome["killed in start-up"] += 1
        elif last.startswith("TAKE "):
            # killed inside take(): rolled back (no row), or committed before the receipt was printed
            outcome["killed in take, committed, receipt not printed" if new > len(receipts)
                    else "killed in take, rolled back"] += 1
        else:
            assert new == len(receipts), f"{where}: a row without a receipt after {last!r}"
            outcome["killed after the last receipt, exiting" if len(receipts) == INTAKE_N
                    else "killed between takes"] += 1

    store = NodeStore(db_path)          # the bodies are encrypted (node/vault.py): read through the store
    assert store.unlock_from_env()
    db = store.conn
    try:
        events = check_log(db, stream, Identity.load(site.node.key_dir).public.sign)
        apps = {r[0]: r[1:] for r in db.execute("SELECT receipt_no, id, seq, event_hash FROM applications")}
        by_seq = {ev.seq: ev for ev in events}
        dupes = db.execute("SELECT receipt_no, count(*) FROM applications GROUP BY receipt_no HAVING count(*) > 1").fetchall()
        assert dupes == [], f"seed {SEED}: duplicate receipt numbers {dupes}"
        assert len(apps) == len(events), f"seed {SEED}: {len(apps)} applications, {len(events)} events"
        for receipt_no, app_id in printed.items():
            assert receipt_no in apps, f"seed {SEED}: printed receipt {receipt_no} is lost"
            row_id, seq, event_hash = apps[receipt_no]
            assert row_id == app_id, f"seed {SEED}: receipt {receipt_no} names {row_id}, printed {app_id}"
            ev = by_seq[seq]
            assert (ev.hash, ev.body["id"], ev.body["receipt_no"]) == (event_hash, app_id, receipt_no)
            n = db.execute("SELECT count(*) FROM _sync_events WHERE stream = ? AND json_extract(body, '$.receipt_no') = ?",
                           (stream, receipt_no)).fetchone()[0]
            assert n == 1, f"seed {SEED}: receipt {receipt_no} is in {n} events"
        unprinted = len(apps) - len(printed)
        assert unprinted == outcome["killed in take, committed, receipt not printed"], outcome
    finally:
        store.close()
    integrity(db_path)
    print(f"\nintake: {INTAKE_TRIALS} trials (seed {SEED}), take window {window:.3f} s for {INTAKE_N}, "
          f"{len(printed)} receipts printed, {len(apps)} rows; {dict(outcome)}")


# --- kill during sync ------------------------------------------------------------------------------

def accept(st: Station, n: int) -> list[str]:
    items, start, ids = st.items(), st.sync_state()["up_written"], []
    for i in range(start, start + n):
        item = items[i % len(items)]
        ids.append(st.take(item["code"], form_for(item, i), "accept", "代办员")["id"])
    return ids


def stream_of(db: sqlite3.Connection, stream: str) -> list[tuple[int, str]]:
    return [(int(r[0]), r[1]) for r in db.execute(
        "SELECT seq, hash FROM _sync_events WHERE stream = ? ORDER BY seq", (stream,)).fetchall()]


def test_kill_during_sync(site: Site) -> None:
    """Sync cut by SIGKILL at random points, more intake and county decisions in between; then one
    clean sync must leave both ends with the same logs and the county with every case once."""
    rng = random.Random(SEED + 1)
    st = Station(site.node)
    st.store.unlock_from_env()
    county = County(site.central)
    up, down = log.up("V1"), log.down("V1")
    supervisor = {"name": "督办", "role": "supervisor", "department": None}
    outcome: Counter[str] = Counter()
    try:
        ids = accept(st, SYNC_START)
        decided: dict[str, str] = {}
        durations: list[float] = []              # READY to the end of the first sync
        window = 0.3                             # kills come at a random point of it after READY
        for trial in range(SYNC_TRIALS):
            where = f"trial {trial}, seed {SEED}"
            site.link.delay = 0.0 if rng.random() < 0.4 else rng.uniform(0.0, 0.15)
            run = Run(("sync", str(site.node.data)))
            try:
                if rng.random() < 0.15:
                    run.sleep(rng.uniform(0.05, 0.8))          # from spawn: may land in start-up
                elif run.wait_ready():
                    run.sleep(rng.uniform(0.0, window))
                run.kill()
            except BaseException:
                run.kill()
                run.finish()
                raise
            rc, lines, err = run.finish()
            if run.first_sync_at and run.ready_at:
                durations.append(run.first_sync_at - run.ready_at)
                window = 1.3 * max(durations[-5:])
            elif run.killed and run.ready_at:
                window = min(2.0, window * 1.3)  # no sync got through: the backlog outgrew the window
            if run.killed:
                assert rc == -signal.SIGKILL, f"{where}: rc={rc} {err}"
            else:
                assert rc == 0, f"{where}: rc={rc} {err}"
            # Mostly let the county finish what a killed worker sent before looking; sometimes go
            # on at once, so that the next worker's push races the killed one's at the county.
            racing = run.killed and rng.random() < 0.25 and site.link.in_flight > 0
            if not racing:
                site.link.settle()
            state = st.sync_state()
            cdb = connect(site.central.db_path)
            try:
                county_high = log.head(cdb, up)[0]
            finally:
                cdb.close()
            assert state["up_acked"] <= county_high <= state["up_written"], (where, state, county_high)
            if not run.killed:
                outcome["completed"] += 1
            elif "READY" not in lines:
                outcome["killed in start-up"] += 1
            elif racing:
                outcome["killed, next worker started while the county still answered"] += 1
            elif county_high > state["up_acked"]:
                outcome["killed after the county stored, before the station took its answer"] += 1
            elif county_high < state["up_written"]:
                outcome["killed before the county stored"] += 1
            else:
                outcome["killed after the push was acked"] += 1
            # Life goes on between cuts: more applications, some decisions at the county.
            if rng.random() < 0.8:
                ids += accept(st, rng.randint(5, 30))
            open_cases = [c["id"] for c in county.store.cases(station="V1", status="received")]
            for case_id in rng.sample(open_cases, min(len(open_cases), rng.randint(0, 4))):
                decision = rng.choice(["approve", "reject", "correction"])
                county.decide(case_id, decision, "" if decision == "approve" else "材料不全", supervisor,
                              reason="材料不全", basis="《示范条例》第三条")
                decided[case_id] = {"approve": "approved", "reject": "rejected",
                                    "correction": "correction_requested"}[decision]
        site.link.delay = 0.0

        for _ in range(10):                              # the clean sync, in this process
            moved = st.sync()
            if not (moved.sent or moved.acked or moved.received):
                break
        else:
            raise AssertionError(f"seed {SEED}: the clean sync did not come to rest")

        state = st.sync_state()
        assert state["up_acked"] == state["up_written"] == len(ids), (SEED, state)
        assert state["forks"] == 0 and state["repairs"] == 0, (SEED, state)
        cdb = connect(site.central.db_path)
        try:
            node_db = st.store.conn
            with st.store.lock:
                assert stream_of(cdb, up) == stream_of(node_db, up), f"seed {SEED}: up logs differ"
                assert stream_of(cdb, down) == stream_of(node_db, down), f"seed {SEED}: down logs differ"
                check_log(node_db, up, st.me.public.sign)
                check_log(node_db, down, county.me.public.sign)
                statuses = dict(node_db.execute("SELECT id, status FROM applications").fetchall())
            rows = cdb.execute("SELECT id, receipt_no, seq FROM cases WHERE station = 'V1'").fetchall()
            assert cdb.execute("SELECT count(*) FROM _sync_forks").fetchone()[0] == 0
            assert cdb.execute("SELECT count(*) FROM _sync_repairs").fetchone()[0] == 0
            # every document's QR text went up beside its event, whichever push the kills cut
            no_qr = cdb.execute("SELECT count(*) FROM _sync_events e WHERE e.stream = ? AND e.kind IN"
                                " ('application.accepted', 'application.correction_notice', 'application.refused')"
                                " AND NOT EXISTS (SELECT 1 FROM document_qr q WHERE q.event_hash = e.hash)",
                                (up,)).fetchone()[0]
            assert no_qr == 0, f"seed {SEED}: {no_qr} documents without their QR text at the county"
        finally:
            cdb.close()
        assert len(rows) == len(ids) == len(set(ids)), f"seed {SEED}: {len(rows)} cases for {len(ids)} applications"
        assert {r[0] for r in rows} == set(ids), f"seed {SEED}: cases and applications differ"
        assert len({r[1] for r in rows}) == len(rows) and len({r[2] for r in rows}) == len(rows)
        for app_id in ids:
            assert statuses[app_id] == decided.get(app_id, "received"), (SEED, app_id, statuses[app_id])
        print(f"\nsync: {SYNC_TRIALS} trials (seed {SEED}), {len(ids)} applications, {len(decided)} decided, "
              f"first sync took {min(durations, default=0):.3f}-{max(durations, default=0):.3f} s; {dict(outcome)}")
    finally:
        st.store.close()
        county.store.close()
    integrity(site.node.db_path)
    integrity(site.central.db_path)
