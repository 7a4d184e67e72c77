"""The station's projections: fact kind -> ``fn(store, db, event)``, the one place a fact changes
the station's tables.

``UP`` projects the station's own facts (written by ``Station.record``); ``DOWN`` the county's
(applied by sync, inside its transaction). A fact the station writes and the same fact given back
by the county (self-heal, PROTOCOL.md §8.5) go through the same function where the row they make
is the same (the hand-out). Kinds and statuses: sync/law/facts.py and sync/law/transitions.py.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Callable

from node.services import ratings
from node.services import reports as node_reports
from node.services import verify
from node.services import retention as node_retention
from node.store import Store
from sync import recovery
from sync.law import facts, reports, workdays
from sync.law.clock import china_day, resume, suspend
from sync.law.facts import Status
from sync.log import Event

Projection = Callable[[Store, sqlite3.Connection, Event], None]

#: the status an application has at the station the moment it is taken
TAKEN_STATUS = {facts.ACCEPTED: Status.ACCEPTED, facts.CORRECTION_NOTICE: Status.CORRECTION_NOTICE,
                facts.REFUSED: Status.REFUSED}


def application_taken(store: Store, db: sqlite3.Connection, ev: Event) -> None:
    """A new case, or the same case completed when the citizen came back after a correction notice."""
    store.insert_application(db, ev, TAKEN_STATUS[ev.kind])


def handed_out(store: Store, db: sqlite3.Connection, ev: Event) -> None:
    b = ev.body
    collector = b.get("collector")
    store.update_application(db, b["id"], status=Status.HANDED_OUT, handed_out_at=b.get("at", ""),
                             handed_out_by=b.get("by", ""),
                             collector=json.dumps(collector, ensure_ascii=False) if collector else None)


def supplemented(store: Store, db: sqlite3.Connection, ev: Event) -> None:
    """The citizen brought what the county asked for: the case goes up again (``accepted`` until the
    county's ack covers this event) and its time limit runs again from the next working day."""
    b = ev.body
    row = db.execute("SELECT suspensions FROM applications WHERE id = ?", (b["id"],)).fetchone()
    store.update_application(db, b["id"], status=Status.ACCEPTED, last_seq=ev.seq,
                             suspensions=resume(row[0] if row else None, b["at"][:10]))


def keys_announced(store: Store, db: sqlite3.Connection, ev: Event) -> None:
    """Our new keys are announced: used once the county's ack covers this event (Station._switch_keys)."""
    from sync import log
    log.set_status(db, "rotation_seq", str(ev.seq))


def catalog_published(store: Store, db: sqlite3.Connection, ev: Event) -> None:
    store.set_meta(db, "catalog", json.dumps(ev.body["catalog"], ensure_ascii=False))


def case_decided(store: Store, db: sqlite3.Connection, ev: Event) -> None:
    """The county's decision, checked against the transition table like every fact (a decision on a
    case that is not waiting for one is set aside for repair with the rule it broke)."""
    b = ev.body
    held = db.execute("SELECT status, suspensions, body FROM applications WHERE id = ?", (b["id"],)).fetchone()
    if held is None:
        if recovery.healing(db):
            return      # its application comes back from the county's copy, and the decision with it
        raise LookupError(f"no application {b['id']} at this station")
    if held[0] == Status.HANDED_OUT:
        status = Status.HANDED_OUT   # rebuilt from the county's copy: the hand-out came back first
    else:
        status = facts.next_state(facts.county_state(held[0]), facts.decided(b["decision"]), case_id=b["id"])
    facts.spec(ev.kind).validate(b, facts.Context(item=facts.case_item(json.loads(held[2]))))
    extra: dict[str, Any] = {}
    if b["decision"] == "correction":
        names = {m.get("code"): m.get("name") for m in json.loads(held[2]).get("materials", [])}
        extra["correction"] = json.dumps([{**m, "name": names.get(m["code"], m["code"])}
                                          for m in b.get("materials", [])], ensure_ascii=False)
        extra["suspensions"] = suspend(held[1], china_day(b["at"]))
    store.update_application(db, b["id"], status=status, decision=b["decision"],
                             decision_note=b.get("note", ""), decided_by=b.get("by", ""),
                             decided_at=b.get("at", ""), **extra)


def receipts_voided(store: Store, db: sqlite3.Connection, ev: Event) -> None:
    """Nothing to change: the day's counter was raised past the block in the same transaction
    (Station._receipt_no); the fact tells the county (and an auditor) why the numbers jump."""


def calendar_published(store: Store, db: sqlite3.Connection, ev: Event) -> None:
    """The county's schedule of a year: intake counts working days by it from now on (sync/law/workdays.py)."""
    facts.SPECS[facts.CALENDAR_PUBLISHED].validate(ev.body)
    workdays.store_year(db, ev.body)


def county_keys_rotated(store: Store, db: sqlite3.Connection, ev: Event) -> None:
    """Nothing to project: sync/exchange.py stores the county's new keys before the event is applied."""


UP: dict[str, Projection] = {
    facts.ACCEPTED: application_taken, facts.CORRECTION_NOTICE: application_taken,
    facts.REFUSED: application_taken, facts.HAND_OUT: handed_out, facts.STATION_KEYS_ROTATED: keys_announced,
    facts.SUPPLEMENTED: supplemented, facts.RECEIPTS_VOIDED: receipts_voided, reports.FILED: node_reports.filed,
    facts.RATED: ratings.rated,
}
DOWN: dict[str, Projection] = {
    reports.TAKEN: node_reports.taken, reports.ANSWERED: node_reports.answered,
    facts.CATALOG_PUBLISHED: catalog_published, facts.CASE_DECIDED: case_decided,
    facts.COUNTY_KEYS_ROTATED: county_keys_rotated,
    facts.CALENDAR_PUBLISHED: calendar_published, facts.RATING_ANSWERED: ratings.answered,
    facts.STATIONS_DIRECTORY: verify.directory_published,
    "retention.set": node_retention.retention_set,      # node/services/retention.py: the period purges use
}


def may_hand_out(status: Any) -> bool:
    """The transition table allows a hand-out from this station status."""
    try:
        facts.next_state(facts.county_state(status), facts.HAND_OUT)
    except facts.RuleError:
        return False
    return True
