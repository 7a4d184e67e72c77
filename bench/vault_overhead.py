"""What encryption at rest costs the station (node/vault.py): the same 200 cases (each with its
event body) in a store without a vault and in one with a vault, unlocked; then the list of the
200 newest cases, a search by name (LIKE on every row: decrypt and match), a search by the last 6
of an ID number, and a JSON query over the event bodies (json_extract on every row), each timed
over ``--rounds`` rounds, cold (first round, nothing decrypted yet) and warm. Not a test.

    .venv/bin/python bench/vault_overhead.py --cases 200
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.services import search  # noqa: E402
from node.store import Store  # noqa: E402
from sync.law.intake import valid_id_for_demo  # noqa: E402

PASSWORD = "village-key-2718"


def fill(store: Store, n: int) -> None:
    with store.transaction() as db:
        for i in range(n):
            name, idn, phone = f"测试{i:04d}号", valid_id_for_demo(f"41052219600101{i:03d}"), f"139{i:08d}"
            body = {"id": f"case-{i}", "receipt_no": f"V1-20260101-{i:04d}", "at": "2026-01-01T00:00:00Z",
                    "applicant": {"name": name, "id_number": idn, "phone": phone, "address": f"{name}家"},
                    "fields": {"reason": "家中困难，申请办理" * 5}}
            text = json.dumps(body, ensure_ascii=False)
            db.execute("INSERT INTO applications (id, seq, receipt_no, kind, status, item_code, item_name,"
                       " applicant_name, id_number, phone, body, created_at) VALUES (?, ?, ?, 'application.accepted',"
                       " 'accepted', 'MZ-001', '低保', ?, ?, ?, ?, ?)",
                       (body["id"], i + 1, body["receipt_no"], name, idn, phone, text, body["at"]))
            db.execute("INSERT INTO _sync_events (stream, seq, prev, hash, author, key_id, kind, at, body, sig,"
                       " stored_at) VALUES ('up/V1', ?, '', '', 'V1', 'k', 'application.accepted', ?, ?, '', ?)",
                       (i + 1, body["at"], text, body["at"]))


def timed(fn: Callable[[], Any], rounds: int) -> tuple[float, float]:
    t = time.perf_counter()
    fn()
    cold = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(rounds):
        fn()
    return cold * 1000, (time.perf_counter() - t) / rounds * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stores = {}
        for label in ("clear", "vault"):
            store = Store(Path(tmp) / label / "node.db")
            if label == "vault":
                store.add_user("agent", "代办员", PASSWORD)      # makes the vault: unlocked in this process
            fill(store, args.cases)
            stores[label] = store
        if "测试0001号".encode() in (Path(tmp) / "vault" / "node.db-wal").read_bytes():
            print("vault store holds a name in clear!", file=sys.stderr)
            return 1
        probes = {
            "list 200 newest": lambda s: s.applications(limit=200),
            "search by name": lambda s: search.applications(s, "测试0150号"),
            "search by ID last 6": lambda s: search.applications(s, valid_id_for_demo("41052219600101150")[-6:]),
            "json_extract over bodies": lambda s: s.conn.execute(
                "SELECT count(*) FROM _sync_events WHERE json_extract(body, '$.applicant.phone') LIKE '139%'").fetchone(),
        }
        raw = sqlite3.connect(Path(tmp) / "clear" / "node.db")      # SQLite's own functions, no row factory
        plain_sql = {
            "list 200 newest": "SELECT * FROM applications ORDER BY seq DESC LIMIT 200",
            "search by name": "SELECT * FROM applications WHERE applicant_name LIKE '%测试0150号%' ORDER BY seq DESC",
            "search by ID last 6": "SELECT * FROM applications WHERE id_number LIKE '%"
                                   + valid_id_for_demo("41052219600101150")[-6:] + "' ORDER BY seq DESC",
            "json_extract over bodies": "SELECT count(*) FROM _sync_events WHERE json_extract(body, '$.applicant.phone')"
                                        " LIKE '139%'",
        }
        print(f"{args.cases} cases, ms per query (cold = first run after the start; warm = mean of {args.rounds})")
        print(f"{'query':26} {'raw SQL':>8} {'no vault':>9} {'vault cold':>11} {'vault warm':>11}")
        for name, probe in probes.items():
            _, bare = timed(lambda: raw.execute(plain_sql[name]).fetchall(), args.rounds)
            _, clear = timed(lambda: probe(stores["clear"]), args.rounds)
            stores["vault"].vault._cache.clear()
            cold, warm = timed(lambda: probe(stores["vault"]), args.rounds)
            print(f"{name:26} {bare:8.2f} {clear:9.2f} {cold:11.2f} {warm:11.2f}")
        raw.close()
        for s in stores.values():
            s.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
