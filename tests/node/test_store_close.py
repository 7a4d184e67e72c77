"""Closing the station's store while the background sync is inside a transaction.

The connection is shared between the web handlers and the sync thread; Python's sqlite3 frees it
at ``close()`` even while another thread is inside a statement, and that thread then crashes the
whole interpreter. A station whose sync could not be stopped in time (a slow purge on a slow PC)
must shut down cleanly instead: the transaction in flight commits, and what comes after it gets a
plain error. Run in a child process, so that a crash fails this test instead of ending the run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

CHILD = textwrap.dedent("""
    import sqlite3, sys, threading, time
    from pathlib import Path
    from node.store import Store

    store = Store(Path(sys.argv[1]))
    with store.transaction() as db:
        db.execute("CREATE TABLE busy (total INTEGER)")
    started, closed, outcome = threading.Event(), threading.Event(), []

    def sync_thread():
        try:
            with store.transaction() as db:
                started.set()
                # a statement that takes a while, like a purge's VACUUM on a slow disk
                db.execute("INSERT INTO busy WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c"
                           " WHERE i < 2000000) SELECT sum(i) FROM c")
            outcome.append("committed")
            closed.wait()           # the sync's next step, after the app closed the store
            store.meta("anything")
        except sqlite3.ProgrammingError as exc:
            outcome.append(f"then: {exc}")

    t = threading.Thread(target=sync_thread)
    t.start()
    started.wait()
    time.sleep(0.05)            # the statement is running
    store.close()               # the app shuts down
    closed.set()
    t.join()
    print("|".join(outcome))
""")


def test_closing_the_store_waits_for_the_transaction_in_flight(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    run = subprocess.run([sys.executable, "-c", CHILD, str(db)], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0, f"the station crashed (exit {run.returncode}): {run.stderr[-2000:]}"
    assert run.stdout.strip() == "committed|then: Cannot operate on a closed database."
    import sqlite3
    with sqlite3.connect(db) as conn:        # what the sync was writing is in the file
        assert conn.execute("SELECT total FROM busy").fetchone()[0] == 2000000 * 2000001 // 2
