"""What a service needs of the county it serves: its store, its keys and name, and the one write
path. ``central/county.py``'s ``County`` has all of it; tests may pass anything else that has.

A Protocol, so that no service imports the facade above it (import-linter's layers contract):
each service is a module of functions taking this first, never a handler, the app or ``County``.
Imports only the store and the machinery below it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Callable, Protocol

from central.store import Store
from crypto.keys import Identity
from sync.law import facts
from sync.log import Event


class Folders(Protocol):
    data: Path                          # the county's data folder (``central.county.Settings``)


class Context(Protocol):
    settings: Folders
    store: Store
    me: Identity                        # the county's current keys
    name: str                           # the county's name, as its events name their author
    now: Callable[[], dt.datetime]      # the county's clock for the retention period (tests move it on)
    catalogs: dict[int, dict[str, Any]]  # published catalogue versions, by version (they never change)

    def record(self, db: Any, station: str, fact: facts.Fact) -> Event:
        """The one write path: validate a county fact, append it to ``down/<station>``, project it."""
        ...

    def own_keys(self) -> dict[str, str]:
        """The county's sign keys by key id, current and retired."""
        ...

    def blob_dir(self, station: str) -> Path:
        """Where a station's sealed scans are kept."""
        ...

    def catalog(self) -> dict[str, Any]:
        """The latest published catalogue."""
        ...

    def fresh_nonce(self, nonce: str, expires: int, now: float) -> bool:
        """Record a signed request's nonce; False if seen before."""
        ...
