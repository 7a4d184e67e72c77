"""Read-only SQLite connections beside a store's one writing connection, one per thread.

Each store (node/store.py, central/store.py) writes through one connection under one lock, so a
long write (a push of hundreds of events, the hourly purge) makes every reader of that connection
wait. A reader that needs no write and may see the last committed state (a typed code checked on
the public verify page, the county's log self-check walking a whole stream) takes one of these
instead: in WAL mode SQLite lets it read while the writer writes, and ``query_only`` makes any
write on it an error. ``setup`` gives each new connection what the store's own has (the node's
vault: its row factory and SQL functions).

Blocking, like the stores: call from worker threads.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Callable, Iterator


class Readers:
    def __init__(self, path: Path, setup: Callable[[sqlite3.Connection], None] | None = None,
                 busy_ms: int = 5000) -> None:
        self.path, self.setup, self.busy_ms = path, setup, busy_ms
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._busy = 0
        self._closed = False
        self._cv = threading.Condition()

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=self.busy_ms / 1000)
        conn.execute(f"PRAGMA busy_timeout={self.busy_ms}")
        conn.execute("PRAGMA query_only=ON")
        if self.setup is not None:
            self.setup(conn)
        return conn

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """This thread's read-only connection, inside one read transaction (one consistent snapshot
        of the database for all the statements of the ``with`` block)."""
        with self._cv:
            if self._closed:
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
            self._busy += 1
        try:
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = self._open()
                with self._cv:
                    self._all.append(conn)
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")
        finally:
            with self._cv:
                self._busy -= 1
                self._cv.notify_all()

    def close(self) -> None:
        """Close every reader once none is in use (closing one under a running statement crashes
        the interpreter: node/store.py ``close``); later ``read`` calls raise."""
        with self._cv:
            self._closed = True
            self._cv.wait_for(lambda: self._busy == 0, timeout=30)
            for conn in self._all:
                conn.close()
            self._all.clear()
