"""How long the station's retention purge takes (node/services/retention.py): ``--cases`` cases taken,
decided, handed out and acknowledged at a real county (in this process, scratch SQLite), then a
purge counted to 31 days later removes all of them (VACUUM and WAL truncation included), and a
second purge finds nothing to do (the hourly cost of the background check). Not a test.

    .venv/bin/python bench/retention_purge.py --cases 2000
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.services import retention  # noqa: E402
from sync import exchange  # noqa: E402

CLERK = {"name": "科员", "role": "supervisor", "department": None}


def on_disk(db: Path) -> float:
    """MB of the database and its WAL together."""
    wal = db.with_name(db.name + "-wal")
    return (db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)) / 1e6


def round_trip(county, st) -> None:  # type: ignore[no-untyped-def]
    while True:
        with st.store.transaction() as db:
            push = exchange.build_push(db, me=st.me, station=st.code, county=st.county.keys,
                                       county_name=st.county.name)
        answer = county.answer(push.blob)
        with st.store.transaction() as db:
            got = exchange.apply_answer(db, answer, me=st.me, station=st.code, county=st.county.keys,
                                        county_name=st.county.name, apply=st.apply_down, fresh=True)
        if not push.last and not got.received:
            return


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--cases", type=int, default=2000)
    args = p.parse_args()
    from tests.sync.test_protocol_machine import form_for, make_pair
    with tempfile.TemporaryDirectory() as tmp:
        county, st = make_pair(Path(tmp))
        round_trip(county, st)
        t0 = time.perf_counter()
        ids = []
        for i in range(args.cases):
            item = st.items()[i % len(st.items())]
            ids.append(st.take(item["code"], form_for(item, i), "accept", "代办员")["id"])
        round_trip(county, st)
        for case_id in ids:
            county.decide(case_id, "approve", "", CLERK)
        round_trip(county, st)
        for case_id in ids:
            st.hand_out(case_id, "代办员")
        round_trip(county, st)
        size = on_disk(st.settings.db_path)
        print(f"{args.cases} cases taken, decided, handed out and acknowledged in {time.perf_counter() - t0:.0f} s;"
              f" node.db and WAL {size:.1f} MB")
        t1 = time.perf_counter()
        done = retention.purge(st, dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=31))
        t2 = time.perf_counter()
        again = retention.purge(st, dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=31))
        t3 = time.perf_counter()
        chain = retention.verify_chain(st)
        t4 = time.perf_counter()
        print(f"purge of {len(done['cases'])} cases ({done['events']} event bodies): {t2 - t1:.2f} s, "
              f"node.db and WAL {on_disk(st.settings.db_path):.1f} MB after")
        print(f"purge with nothing to do (the hourly check): {(t3 - t2) * 1000:.0f} ms ({len(again['cases'])} cases)")
        print(f"chain check of {chain['events']} events ({chain['redacted']} redacted, "
              f"{len(chain['problems'])} problems): {t4 - t3:.2f} s")
        county.store.close()
        st.store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
