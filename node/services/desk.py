"""What the station's services are handed: the ``Desk``, a Protocol of the station's keys, store,
clock, catalogue and the one write path (``record``). node/station.py's ``Station`` is the one
implementation; a service never imports it (nor the web layer), only this Protocol, so the services
sit below the facade that composes them (docs/ARCHITECTURE.md, "What may import what").

Imports nothing of node/ but the store and the settings, for types."""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import TYPE_CHECKING, Any, Protocol

from crypto.keys import Identity, PublicKeys
from sync import client
from sync.law import facts
from sync.log import Event

if TYPE_CHECKING:
    from node.services.scans import Scan
    from node.settings import Settings
    from node.store import Store


class Desk(Protocol):
    """The station as its services see it."""
    settings: Settings
    store: Store
    me: Identity                    #: the station's current keys (they change at a key switch)
    code: str
    name: str
    level: str
    county: client.Peer             #: the county's address, name and newest keys held
    enrolled_county: PublicKeys
    http_options: dict[str, Any]

    def now(self) -> dt.datetime:
        """China time, corrected by the clock skew found at the last contact."""

    def item(self, code: str) -> dict[str, Any] | None:
        """A catalogue item by code (None if the catalogue has none)."""

    def department_names(self) -> dict[str, dict[str, str]]:
        """Department code -> the catalogue's entry."""

    def seal_scan(self, scan: Scan) -> int:
        """Write the scan sealed to the county; return its sealed size."""

    def record(self, db: sqlite3.Connection, fact: facts.Fact, *, check: facts.Fact | None = None) -> Event:
        """The one write path: validate, append to our upstream log, project (the caller's transaction)."""

    def apply_down(self, db: sqlite3.Connection, ev: Event) -> None:
        """Apply one county event (deferred while locked)."""
