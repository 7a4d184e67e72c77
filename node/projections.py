"""The station's projections: fact kind -> ``fn(store, db, event)``, the one place a fact changes
the station's tables.

``UP`` projects the station's own facts (written by ``Station.record``); ``DOWN`` the county's
(applied by sync, inside its transaction). A fact the station writes and the same fact given back
by the county (self-heal, PROTOCOL.md §8.5) go through the same function where the row they make
is the same (the hand-out). Kinds and statuses: sync/facts.py and sync/rules.py.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Callable

from node import ratings
from node.store import Store
from sync import facts, recovery
from sync.facts import Status
from sync.log import Event

Projection = Callable[[Store, sqlite3.Connection, Event], None]

#: the status an application has at the station the moment it is taken
TAKEN_STATUS = {facts.ACCEPTED: Status.ACCEPTED, facts.CORRECTION_NOTICE: Status.CORRECTION_NOTICE,
                facts.REFUSED: Status.REFUSED}


def application_taken(store: Store, db: sqlite3.Connection, ev: Event) -> None:
    store.insert_application(db, ev, TAKEN_STATUS[ev.kind])


def handed_out(store: Store, db: sqlite3.Connection, ev: Event) -> None:
    b = ev.body
    store.update_application(db, b["id"], status=Status.HANDED_OUT, handed_out_at=b.get("at", ""),
                             handed_out_by=b.get("by", ""))


def keys_announced(store: Store, db: sqlite3.Connection, ev: Event) -> None:
    """Our new keys are announced: used once the county's ack covers this event (Station._switch_keys)."""
    from sync import log
    log.set_status(db, "rotation_seq", str(ev.seq))


def catalog_published(store: Store, db: sqlite3.Connection, ev: Event) -> None:
    store.set_meta(db, "catalog", json.dumps(ev.body["catalog"], ensure_ascii=False))


def case_decided(store: Store, db: sqlite3.Connection, ev: Event) -> None:
    b = ev.body
    status = facts.DECISIONS[b["decision"]]
    held = db.execute("SELECT status FROM applications WHERE id = ?", (b["id"],)).fetchone()
    if held and held[0] == Status.HANDED_OUT:
        status = Status.HANDED_OUT   # rebuilt from the county's copy: the hand-out came back first
    if not store.update_application(db, b["id"], status=status, decision=b["decision"],
                                    decision_note=b.get("note", ""), decided_by=b.get("by", ""),
                                    decided_at=b.get("at", "")):
        if recovery.healing(db):
            return      # its application comes back from the county's copy, and the decision with it
        raise LookupError(f"no application {b['id']} at this station")


def county_keys_rotated(store: Store, db: sqlite3.Connection, ev: Event) -> None:
    """Nothing to project: sync/exchange.py stores the county's new keys before the event is applied."""


UP: dict[str, Projection] = {
    facts.ACCEPTED: application_taken, facts.CORRECTION_NOTICE: application_taken,
    facts.REFUSED: application_taken, facts.HAND_OUT: handed_out, facts.STATION_KEYS_ROTATED: keys_announced,
    facts.RATED: ratings.rated,
}
DOWN: dict[str, Projection] = {
    facts.CATALOG_PUBLISHED: catalog_published, facts.CASE_DECIDED: case_decided,
    facts.COUNTY_KEYS_ROTATED: county_keys_rotated, facts.RATING_ANSWERED: ratings.answered,
}


def may_hand_out(status: Any) -> bool:
    """The transition table allows a hand-out from this station status."""
    try:
        facts.next_state(facts.county_state(status), facts.HAND_OUT)
    except facts.RuleError:
        return False
    return True
