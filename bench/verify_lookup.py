"""Typed-code lookups at a station holding 10k, 100k and 1M events (issue 15, finding 4): p50 and
p95 of ``node.services.verify.check`` for a typed code (the page's and the API's path, after the request
is parsed), against the scan it replaced (every document event's code hashed in Python under the
store's lock), and with a writer holding the store's lock for a push-sized transaction over and
over. Not a test.

How the station's database is filled:

* A real county and station, enrolled by the real code (tests/sync/test_protocol_machine.make_pair),
  with a staff account, so the station has its vault (node/vault.py: event bodies encrypted) and is
  unlocked; one exchange with the county brings the catalogue.
* ``--seed`` applications taken through ``Station.take``, the real code path: signed
  ``application.accepted`` events, their bodies encrypted, their codes indexed by ``sync.log.store``.
* For scale, those seeded rows of ``up/S1`` are copied in bulk with SQL on the store's own
  connection (``INSERT … SELECT``): the same encrypted body, a new ``seq`` after the head and a new
  ``hash`` (SHA-256 of the old one and the copy number, so every copy has its own code), and their
  codes inserted into ``_sync_codes`` the way the migration does (``sync.codes.index_existing``).
  Copies are not signed anew (nothing here checks their signatures) and carry the seeded
  application's id, so the answer finds a case, as at a real station.

    .venv/bin/python bench/verify_lookup.py                    # 10k, 100k, 1M
    .venv/bin/python bench/verify_lookup.py --sizes 10000 --samples 50
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.services import verify as station_verify  # noqa: E402
from sync import log  # noqa: E402
from sync.codes import CANDIDATES, DOCS, EVENT_KINDS, code_of  # noqa: E402
from sync.law import transitions  # noqa: E402
from tests.sync.test_protocol_machine import form_for, make_pair  # noqa: E402
from tests.sync.test_recovery import round_trip  # noqa: E402

PASSWORD = "village-key-2718"


def old_by_code(st: Any, code: str) -> Any:
    """The lookup before the index (node/services/verify.py before issue 15): every document event of the
    station's streams read, and each one's codes hashed, under the store's lock."""
    streams = (log.up(st.code), log.down(st.code))
    marks = ",".join("?" * len(EVENT_KINDS))
    with st.store.lock:
        rows = st.store.conn.execute(f"SELECT stream, seq, kind, hash FROM _sync_events WHERE stream IN (?, ?)"
                                     f" AND kind IN ({marks})", (*streams, *EVENT_KINDS)).fetchall()
        for row in rows:
            for d in DOCS:
                if row[-2] in d.events and code_of(row[-1], d.kind) == code:
                    return log.get(st.store.conn, row[0], row[1])
    return None


def grow(st: Any, seed: int, to: int) -> None:
    """Copy the ``seed`` first events of up/S1 until the station holds ``to`` events."""
    conn, stream = st.store.conn, log.up(st.code)
    conn.create_function("bench_hash", 2, lambda h, k: hashlib.sha256(f"{h}|{k}".encode()).hexdigest())
    conn.create_function("bench_code", 2, code_of)
    while True:
        with st.store.lock:
            held = conn.execute("SELECT count(*) FROM _sync_events").fetchone()[0]
            head = log.head(conn, stream)[0]
        if held >= to:
            return
        n = min(seed, to - held)
        with st.store.transaction() as db:
            db.execute("INSERT INTO _sync_events (stream, seq, prev, hash, author, key_id, kind, at, body, sig, stored_at)"
                       " SELECT stream, seq + ?, prev, bench_hash(hash, ?), author, key_id, kind, at, body, sig, stored_at"
                       " FROM _sync_events WHERE stream = ? AND seq <= ? AND seq >= ?",
                       (head - first_seq(st) + 1, head, stream, first_seq(st) + n - 1, first_seq(st)))
            for doc in CANDIDATES[transitions.ACCEPTED]:
                db.execute("INSERT INTO _sync_codes (code, stream, seq, doc) SELECT bench_code(hash, ?), stream, seq, ?"
                           " FROM _sync_events WHERE stream = ? AND seq > ? AND kind = ?",
                           (doc, doc, stream, head, transitions.ACCEPTED))


_FIRST: dict[str, int] = {}


def first_seq(st: Any) -> int:
    """The seq of the first seeded application event (what the copies copy)."""
    if st.code not in _FIRST:
        with st.store.lock:
            _FIRST[st.code] = st.store.conn.execute("SELECT min(seq) FROM _sync_events WHERE stream = ? AND kind = ?",
                                                    (log.up(st.code), transitions.ACCEPTED)).fetchone()[0]
    return _FIRST[st.code]


def codes(st: Any, k: int) -> list[str]:
    with st.store.lock:
        rows = st.store.conn.execute("SELECT hash FROM _sync_events WHERE stream = ? AND kind = ? ORDER BY random()"
                                     " LIMIT ?", (log.up(st.code), transitions.ACCEPTED, k)).fetchall()
    return [code_of(r[0]) for r in rows]


def sample(fn: Callable[[str], Any], typed: list[str]) -> tuple[float, float]:
    times = []
    for code in typed:
        t = time.perf_counter()
        assert fn(code), code
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[max(0, int(len(times) * 0.95) - 1)]


class Writer(threading.Thread):
    """Load on the store: transactions of ``batch`` signed events, one after another, as a sync
    storing a push holds the store's lock."""

    def __init__(self, st: Any, batch: int) -> None:
        super().__init__(daemon=True)
        self.st, self.batch, self.stop, self.held_ms = st, batch, threading.Event(), []

    def run(self) -> None:
        while not self.stop.is_set():
            t = time.perf_counter()
            with self.st.store.transaction() as db:
                for i in range(self.batch):
                    log.append(db, self.st.me, stream=log.down(self.st.code), author="county", kind="bench.load",
                               body={"i": i, "pad": "x" * 400})
            self.held_ms.append((time.perf_counter() - t) * 1000)
            time.sleep(0.001)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--seed", type=int, default=1000, help="applications taken through the real code path")
    ap.add_argument("--samples", type=int, default=200, help="typed codes looked up per size (after)")
    ap.add_argument("--old-samples", type=int, default=10, help="typed codes looked up per size the old way")
    ap.add_argument("--batch", type=int, default=100, help="events per transaction of the writer (load)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="lastmile-verify-bench-") as tmp:
        county, st = make_pair(Path(tmp))
        st.store.add_user("agent", "代办员", PASSWORD)          # the vault: bodies encrypted, unlocked
        round_trip(county, st)
        t = time.perf_counter()
        items = st.items()
        for i in range(args.seed):
            item = items[i % len(items)]
            st.take(item["code"], form_for(item, i), "accept", "代办员")
        print(f"seeded {args.seed} applications through Station.take in {time.perf_counter() - t:.1f} s")
        check = lambda code: station_verify.check(st, code)["valid"]          # noqa: E731
        print(f"{'events':>9} {'old p50':>9} {'old p95':>9} {'new p50':>9} {'new p95':>9}"
              f" {'loaded p50':>10} {'loaded p95':>10} {'writer tx':>9}   (ms)")
        for size in (int(s) for s in args.sizes.split(",")):
            t = time.perf_counter()
            grow(st, args.seed, size)
            grown = time.perf_counter() - t
            old = sample(lambda c: old_by_code(st, c), codes(st, args.old_samples))
            new = sample(check, codes(st, args.samples))
            writer = Writer(st, args.batch)
            writer.start()
            time.sleep(0.2)
            loaded = sample(check, codes(st, args.samples))
            writer.stop.set()
            writer.join()
            tx = statistics.median(writer.held_ms) if writer.held_ms else 0.0
            print(f"{size:>9} {old[0]:>9.1f} {old[1]:>9.1f} {new[0]:>9.2f} {new[1]:>9.2f} {loaded[0]:>10.2f}"
                  f" {loaded[1]:>10.2f} {tx:>9.1f}   (filled in {grown:.0f} s)", flush=True)
        st.store.close()
        county.store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
