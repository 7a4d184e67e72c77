"""The county's projections: fact kind -> ``fn(county, db, event)``, the one place a fact changes
the county's tables.

``UP`` projects a station's facts after they pass the shared checks (sync/facts.py, against the
catalogue version the body names); ``DOWN`` the county's own facts, both when it writes them
(``County.record``) and when a station gives them back after the county was restored from an
old backup: the same function either way. A fact that breaks a rule raises rules.RuleError; the
inbox puts it on the repair list with that reason.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable

from central import ratings
from crypto import canonical
from sync import facts, log
from sync.facts import N_, RuleError, Status
from sync.log import Event

if TYPE_CHECKING:
    from central.county import County

Projection = Callable[["County", Any, Event], None]


# upstream: a station's facts -------------------------------------------------------------------

def application(county: County, db: Any, ev: Event) -> None:
    b, station = ev.body, ev.author
    existing = county.store.case(b["id"], db)
    status = facts.next_state(existing["status"] if existing else facts.NEW, ev.kind, case_id=b["id"])
    now = log.utcnow()
    county.store.insert_case(db, {
        "id": b["id"], "station": station, "seq": ev.seq, "kind": ev.kind, "status": status,
        "receipt_no": b["receipt_no"], "item_code": b["item_code"], "item_name": b["item_name"],
        "department": b["department"], "applicant_name": b["applicant"]["name"],
        "id_number": b["applicant"]["id_number"], "accepted_at": b["at"],
        "promised_date": b.get("promised_date"), "received_at": now})
    for scan in b.get("scans", []):
        county.store.insert_scan(db, {"case_id": b["id"], "station": station, "sha256": scan["sha256"],
                                      "material": scan["material"], "name": scan["name"],
                                      "mime": scan["mime"], "size": int(scan["size"])})
        if (county.blob_dir(station) / f"{scan['sha256']}.sealed").exists():   # sent with an earlier case
            county.store.mark_scan_received(db, station, scan["sha256"], now)


def handed_out(county: County, db: Any, ev: Event) -> None:
    b, station = ev.body, ev.author
    case_id = b["id"]
    case = county.store.case(case_id, db)
    if case is not None and case["station"] != station:
        raise RuleError(N_("Station %(author)s handed out case %(id)s, which belongs to station "
                           "%(owner)s."), author=station, id=case_id, owner=case["station"])
    status = facts.next_state(case["status"] if case else facts.NEW, ev.kind, case_id=case_id)
    county.store.update_case(db, case_id, status=status, handed_out_at=b["at"])


def station_keys_rotated(county: County, db: Any, ev: Event) -> None:
    """``station.keys_rotated`` (signed by the old key): put the new keys on record; envelopes
    signed by them are accepted from now on, and make them current (``County._promote_keys``)."""
    new = facts.SPECS[facts.STATION_KEYS_ROTATED].validate(ev.body)
    county.store.add_station_key(db, ev.author, new.sign, new.enc, new.sign_id, new.enc_id, "rotated",
                                 log.utcnow(), ev.seq + 1)
    county.store.set_meta(db, f"next_keys:{ev.author}", json.dumps(new.to_dict()))
    county.store.set_meta(db, f"next_keys_seq:{ev.author}", str(ev.seq))


# downstream: the county's own facts -------------------------------------------------------------

def catalog_published(county: County, db: Any, ev: Event) -> None:
    """The version is on record (no-op if held: ``publish_catalog`` stores it once for all stations)."""
    b = ev.body
    county.store.restore_catalog(db, int(b["catalog"]["version"]), ev.at, canonical.dumps(b["catalog"]).decode())


def case_decided(county: County, db: Any, ev: Event) -> None:
    """A decision on a case; one given back before its case came back (a restore) waits for it."""
    b, station = ev.body, ev.stream.split("/", 1)[1]
    case = county.store.case(b["id"], db)
    if case is None:
        county.store.add_pending_decision(db, station, b["id"], canonical.dumps(b).decode())
    else:
        decide_case(county, db, case, b)


def decide_case(county: County, db: Any, case: dict[str, Any], b: dict[str, Any]) -> None:
    if case["decision"] == b["decision"] and case["decided_at"] == b.get("at"):
        return
    if case["status"] != Status.RECEIVED:
        raise ValueError(f"case {case['id']} was decided again after the restore; a person must look")
    status = facts.next_state(case["status"], facts.decided(b["decision"]), case_id=case["id"])
    county.store.update_case(db, case["id"], status=status, decision=b["decision"],
                             decision_note=b.get("note", ""), decided_by=b.get("by", ""), decided_at=b.get("at"))


UP: dict[str, Projection] = {
    facts.ACCEPTED: application, facts.CORRECTION_NOTICE: application, facts.REFUSED: application,
    facts.HAND_OUT: handed_out, facts.STATION_KEYS_ROTATED: station_keys_rotated, facts.RATED: ratings.rated,
}
DOWN: dict[str, Projection] = {
    facts.CATALOG_PUBLISHED: catalog_published, facts.CASE_DECIDED: case_decided,
    facts.RATING_ANSWERED: ratings.answered,
}
#: Downstream kinds with no projection: ``County.rotate_keys`` writes them and keeps the key
#: history itself; one given back after a restore is not re-projected (the keys are on disk).
NOT_PROJECTED = {facts.COUNTY_KEYS_ROTATED}
