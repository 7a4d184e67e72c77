"""The county's projections: fact kind -> ``fn(county, db, event)``, the one place a fact changes
the county's tables.

``UP`` projects a station's facts after they pass the shared checks (sync/law/facts.py, against the
catalogue version the body names); ``DOWN`` the county's own facts, both when it writes them
(``County.record``) and when a station gives them back after the county was restored from an
old backup: the same function either way. A fact that breaks a rule raises RuleError; the
inbox puts it on the repair list with that reason.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable

from central.services import ratings
from crypto import canonical
from central.services import reports as county_reports
from sync import log
from sync.law import facts, reports, transitions, workdays
from sync.law.clock import china_day, resume, suspend
from sync.law.errors import N_, RuleError
from sync.law.facts import Status
from sync.log import Event

if TYPE_CHECKING:
    from central.services.context import Context

Projection = Callable[["Context", Any, Event], None]


# upstream: a station's facts -------------------------------------------------------------------

def application(county: Context, db: Any, ev: Event) -> None:
    b, station = ev.body, ev.author
    existing = county.store.case(b["id"], db)
    status = facts.next_state(existing["status"] if existing else facts.NEW, ev.kind, case_id=b["id"])
    now = log.utcnow()
    county.store.insert_case(db, {
        "id": b["id"], "station": station, "seq": ev.seq, "kind": ev.kind, "status": status,
        "receipt_no": b["receipt_no"], "item_code": b["item_code"], "item_name": b["item_name"],
        "department": b["department"], "applicant_name": b["applicant"]["name"],
        "id_number": b["applicant"]["id_number"], "accepted_at": b["at"],
        "promised_date": b.get("promised_date"), "received_at": now, "time_limit_days": b.get("time_limit_days")})
    for scan in b.get("scans", []):
        county.store.insert_scan(db, {"case_id": b["id"], "station": station, "sha256": scan["sha256"],
                                      "material": scan["material"], "name": scan["name"],
                                      "mime": scan["mime"], "size": int(scan["size"])})
        if (county.blob_dir(station) / f"{scan['sha256']}.sealed").exists():   # sent with an earlier case
            county.store.mark_scan_received(db, station, scan["sha256"], now)


def owned_case(county: Context, db: Any, ev: Event) -> dict[str, Any] | None:
    """The case a station's fact names, which must be the author's own; RuleError if another's."""
    case = county.store.case(ev.body["id"], db)
    if case is not None and case["station"] != ev.author:
        raise RuleError(N_("Station %(author)s sent %(fact)s for case %(id)s, which belongs to station "
                           "%(owner)s."), author=ev.author, fact=transitions.FACT_LABELS.get(ev.kind, ev.kind),
                        id=ev.body["id"], owner=case["station"])
    return case


def handed_out(county: Context, db: Any, ev: Event) -> None:
    b = ev.body
    case = owned_case(county, db, ev)
    status = facts.next_state(case["status"] if case else facts.NEW, ev.kind, case_id=b["id"])
    collector = b.get("collector")
    county.store.update_case(db, b["id"], status=status, handed_out_at=b["at"],
                             collector=json.dumps(collector, ensure_ascii=False) if collector else None)


def supplemented(county: Context, db: Any, ev: Event) -> None:
    """What the citizen brought after a correction request: back in review, the clock running again,
    and what changed on record for the clerk (the materials, the new scans, the note)."""
    b, station = ev.body, ev.author
    case = owned_case(county, db, ev)
    status = facts.next_state(case["status"] if case else facts.NEW, ev.kind, case_id=b["id"])
    assert case is not None
    county.store.update_case(db, b["id"], status=status, suspensions=resume(case["suspensions"], b["at"][:10]),
                             supplement=canonical.dumps({**b, "seq": ev.seq}).decode())
    now = log.utcnow()
    for scan in b.get("scans", []):
        county.store.insert_scan(db, {"case_id": b["id"], "station": station, "sha256": scan["sha256"],
                                      "material": scan["material"], "name": scan["name"],
                                      "mime": scan["mime"], "size": int(scan["size"])})
        if (county.blob_dir(station) / f"{scan['sha256']}.sealed").exists():
            county.store.mark_scan_received(db, station, scan["sha256"], now)


def receipts_voided(county: Context, db: Any, ev: Event) -> None:
    """A station restored from a backup skips a block of receipt numbers: on record, with its reason."""
    b = ev.body
    county.store.void_receipts(db, ev.author, b["day"], b["first"], b["last"], b["reason"], b["at"])


def station_keys_rotated(county: Context, db: Any, ev: Event) -> None:
    """``station.keys_rotated`` (signed by the old key): put the new keys on record; envelopes
    signed by them are accepted from now on, and make them current (``stations.promote_keys``)."""
    new = facts.SPECS[facts.STATION_KEYS_ROTATED].validate(ev.body)
    county.store.add_station_key(db, ev.author, new.sign, new.enc, new.sign_id, new.enc_id, "rotated",
                                 log.utcnow(), ev.seq + 1)
    county.store.set_meta(db, f"next_keys:{ev.author}", json.dumps(new.to_dict()))
    county.store.set_meta(db, f"next_keys_seq:{ev.author}", str(ev.seq))


# downstream: the county's own facts -------------------------------------------------------------

def catalog_published(county: Context, db: Any, ev: Event) -> None:
    """The version is on record (no-op if held: ``publish_catalog`` stores it once for all stations)."""
    b = ev.body
    county.store.restore_catalog(db, int(b["catalog"]["version"]), ev.at, canonical.dumps(b["catalog"]).decode())


def calendar_published(county: Context, db: Any, ev: Event) -> None:
    """A year's schedule is on record (a later publication of the year replaces it; the same one
    sent to each station, or given back after a restore, is stored once)."""
    facts.SPECS[facts.CALENDAR_PUBLISHED].validate(ev.body)
    workdays.store_year(db, ev.body)


def case_decided(county: Context, db: Any, ev: Event) -> None:
    """A decision on a case; one given back before its case came back (a restore) waits for it."""
    b, station = ev.body, ev.stream.split("/", 1)[1]
    case = county.store.case(b["id"], db)
    if case is None:
        county.store.add_pending_decision(db, station, b["id"], canonical.dumps(b).decode())
    else:
        decide_case(county, db, case, b)


def decide_case(county: Context, db: Any, case: dict[str, Any], b: dict[str, Any]) -> None:
    if case["decision"] == b["decision"] and case["decided_at"] == b.get("at"):
        return
    if case["status"] != Status.RECEIVED:
        raise ValueError(f"case {case['id']} was decided again after the restore; a person must look")
    status = facts.next_state(case["status"], facts.decided(b["decision"]), case_id=case["id"])
    extra: dict[str, Any] = {}
    if b["decision"] == "correction":
        extra["correction"] = canonical.dumps(b.get("materials", [])).decode()
        extra["suspensions"] = suspend(case["suspensions"], china_day(b["at"]))
    county.store.update_case(db, case["id"], status=status, decision=b["decision"],
                             decision_note=b.get("note", ""), decided_by=b.get("by", ""), decided_at=b.get("at"),
                             **extra)


UP: dict[str, Projection] = {
    facts.ACCEPTED: application, facts.CORRECTION_NOTICE: application, facts.REFUSED: application,
    facts.HAND_OUT: handed_out, facts.STATION_KEYS_ROTATED: station_keys_rotated,
    facts.SUPPLEMENTED: supplemented, facts.RECEIPTS_VOIDED: receipts_voided, reports.FILED: county_reports.filed,
    facts.RATED: ratings.rated,
}
DOWN: dict[str, Projection] = {
    reports.TAKEN: county_reports.taken, reports.ANSWERED: county_reports.answered,
    facts.CATALOG_PUBLISHED: catalog_published, facts.CASE_DECIDED: case_decided,
    facts.CALENDAR_PUBLISHED: calendar_published, facts.RATING_ANSWERED: ratings.answered,
    facts.STATIONS_DIRECTORY: lambda county, db, ev: None,    # keys are the county's own table (central/services/verify.py)
    "retention.set": lambda county, db, ev: None,     # the county's own meta (central/services/retention.py)
}
#: Downstream kinds a station may give back after a county restore that are stored again but never
#: re-projected from what the station sent: the county's own tables (catalogue versions, calendar,
#: retention period, key directory, its keys on disk) are their source (issue 15).
GIVEN_BACK_STORED_ONLY = frozenset({facts.CATALOG_PUBLISHED, facts.CALENDAR_PUBLISHED, "retention.set",
                                    facts.STATIONS_DIRECTORY, facts.COUNTY_KEYS_ROTATED})
#: Downstream kinds with no projection: ``County.rotate_keys`` writes them and keeps the key
#: history itself; one given back after a restore is not re-projected (the keys are on disk).
NOT_PROJECTED = {facts.COUNTY_KEYS_ROTATED}
