"""A station process to be killed with SIGKILL by tests/sync/test_crash.py.

    python tests/crashworker.py intake DATA_DIR N   take N valid applications, one receipt line each
    python tests/crashworker.py sync DATA_DIR       sync until nothing moves, one line per sync

Output, one line each, flushed at once:
    READY                          the station is open (after imports and Station())
    TAKE <n>                       about to call take() for the n-th application
    RECEIPT <receipt_no> <id>      take() returned: the transaction has committed
    SYNCED <json>                  Station.sync() returned this SyncResult
    ERROR <message>                (stderr) a sync failed; retried a few times
Exit code 0 when done; 1 when sync kept failing.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __name__ == "__main__":
    # Run as a script: import this checkout's packages (not whatever the venv points at).
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import json  # noqa: E402

from sync.law.intake import valid_id_for_demo  # noqa: E402
from node.settings import Settings  # noqa: E402
from node.station import Station


def form_for(item: dict, n: int) -> dict:
    """A form the station must accept: every field filled, every material received."""
    form = {"name": f"申请人{n}", "id_number": valid_id_for_demo(f"41152119{60 + n % 40:02d}{n % 12 + 1:02d}{n % 28 + 1:02d}{n % 1000:03d}"),
            "phone": "13800138000", "address": "张村三组12号",
            "materials": [m["code"] for m in item["materials"]]}
    for f in item["fields"]:
        form["f_" + f["name"]] = {"int": "3", "date": "2026-01-05",
                                  "select": (f.get("options") or [{"value": ""}])[0]["value"]}.get(f["type"], "家中困难，申请办理")
    return form


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def intake(st: Station, n: int) -> int:
    items = st.items()
    if not items:
        print("ERROR the station has no catalogue items", file=sys.stderr, flush=True)
        return 1
    start = st.sync_state()["up_written"]      # vary the forms across runs
    for i in range(n):
        k = start + i
        item = items[k % len(items)]
        say(f"TAKE {i}")
        app = st.take(item["code"], form_for(item, k), "accept", "crashworker")
        say(f"RECEIPT {app['receipt_no']} {app['id']}")
    return 0


def sync(st: Station, tries: int = 5) -> int:
    failures = 0
    for _ in range(200):
        try:
            result = st.sync()
        except Exception as exc:  # noqa: BLE001 - report, back off, try again a few times
            failures += 1
            print(f"ERROR {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            if failures >= tries:
                return 1
            time.sleep(0.1 * failures)
            continue
        moved = result.to_dict()
        say("SYNCED " + json.dumps(moved, sort_keys=True))
        if not (moved["sent"] or moved["acked"] or moved["received"]):
            return 0
    return 1


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("intake", "sync") or (argv[0] == "intake" and len(argv) != 3):
        print(__doc__, file=sys.stderr)
        return 2
    st = Station(Settings(data=Path(argv[1])))
    st.store.unlock_from_env()          # node/vault.py: the test gives the station's token
    try:
        say("READY")
        return intake(st, int(argv[2])) if argv[0] == "intake" else sync(st)
    finally:
        st.store.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
