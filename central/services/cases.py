"""The county's cases (a service: functions of a ``Context``, central/services/context.py): applying station facts (checked again, then projected), decisions, the
re-projection of its own facts given back after a restore, and the signed view of a case."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Sequence

from central.services import calendar, catalogue, documents, permissions, projections
from central.errors import CountyError, N_
from sync import log
from sync.errors import BadEvent
from sync.law import facts, intake, reports, retention, transitions
from sync.law.clock import case_clock
from sync.law.errors import RuleError
from sync.log import Event

if TYPE_CHECKING:
    from central.services.context import Context

logger = logging.getLogger("lastmile.central")
DECISIONS = facts.DECISIONS


# The columns of a case row copied from the station's signed application, and where in the signed
# body each comes from. Anything else in the row (status, decision, times at the county) is the
# county's own.
SIGNED_COLUMNS: dict[str, tuple[str, ...]] = {
    "station": ("station",), "receipt_no": ("receipt_no",), "item_code": ("item_code",),
    "item_name": ("item_name",), "department": ("department",), "applicant_name": ("applicant", "name"),
    "id_number": ("applicant", "id_number"), "accepted_at": ("at",), "promised_date": ("promised_date",)}
SCAN_KEYS = ("sha256", "material", "name", "mime", "size")


def signed_columns(body: dict[str, Any]) -> dict[str, Any]:
    """The values the case row's copied columns must hold, taken from the signed body."""
    out: dict[str, Any] = {}
    for column, path in SIGNED_COLUMNS.items():
        value: Any = body
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        out[column] = value
    return out


def record_mismatches(case: dict[str, Any], body: dict[str, Any],
                      scans: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every copied column of the stored row (and the stored scan list) that differs from the
    signed application: ``[{"field", "stored", "signed"}]``, empty when they agree."""
    out = [{"field": column, "stored": case.get(column), "signed": value}
           for column, value in signed_columns(body).items()
           if (case.get(column) or None) != (value or None)]
    if scans is not None:
        def listed(rows: list[Any]) -> list[tuple[str, ...]]:   # one per SHA-256, as the county stores them
            first = {}
            for r in rows:
                if isinstance(r, dict):
                    first.setdefault(str(r.get("sha256")), tuple(str(r.get(k)) for k in SCAN_KEYS))
            return sorted(first.values())
        stored, signed = listed(scans), listed(body.get("scans") or [])
        if stored != signed:
            out.append({"field": "scans", "stored": [dict(zip(SCAN_KEYS, s)) for s in stored],
                        "signed": [dict(zip(SCAN_KEYS, s)) for s in signed]})
    return out


def reproject_down(county: Context, db: Any, ev: Event) -> None:
    """Re-project one of the county's own downstream events that a station gave back after the
    county was restored from an old backup (``recovery.take_back`` has already checked that it is
    whole, hashes to what the county signed, and sits in that station's stream at the number the
    county sent it). Checked like any other fact, since a station chose to send it: the body's
    shape (sync/law/facts.py), the case or report it names belongs to that station, and the
    transition is legal (the projection checks the state). A catalogue, calendar, retention,
    directory or key fact is stored but never re-projected: the county's own tables are their
    source (issue 15), not what a station hands back. A decision on a case the county has not got
    back yet waits for it (``recovery_pending``, for that station only). A broken rule sets the
    event aside for repair (sync/inbox.py)."""
    if ev.kind in projections.GIVEN_BACK_STORED_ONLY:
        return
    project = projections.DOWN.get(ev.kind)
    if project is None:
        raise RuleError(N_("Unknown event kind %(kind)s."), kind=ev.kind)
    facts.spec(ev.kind).validate(ev.body)
    station = ev.stream.split("/", 1)[1]
    named = ev.body.get("id")
    if ev.kind in (reports.TAKEN, reports.ANSWERED):
        owner = (county.store.report(named, db) or {}).get("station")
    else:
        owner = (county.store.case(named, db) or {}).get("station")
    if owner is not None and owner != station:
        raise RuleError(N_("Station %(author)s sent %(fact)s for case %(id)s, which belongs to station "
                           "%(owner)s."), author=station, fact=transitions.FACT_LABELS.get(ev.kind, ev.kind),
                        id=str(named), owner=owner)
    project(county, db, ev)


def apply_up_recovering(county: Context, db: Any, ev: Event) -> None:
    """``apply_up``, plus the decisions given back before their case came back (a restore)."""
    case_id = ev.body.get("id") if isinstance(ev.body, dict) else None
    if ev.kind == "application.handed_out" and isinstance(case_id, str):
        _apply_pending(county, db, case_id)
    apply_up(county, db, ev)
    if ev.kind != "application.handed_out" and isinstance(case_id, str):
        _apply_pending(county, db, case_id)


def _apply_pending(county: Context, db: Any, case_id: str) -> None:
    """A decision given back before its case came back: applied to the case only if the case is
    the same station's (the one whose stream carried the decision), else dropped with a log line."""
    pending = county.store.take_pending_decision(db, case_id)
    case = county.store.case(case_id, db) if pending else None
    if pending and case:
        station, body = pending
        if station != case["station"]:
            logger.error("a decision given back by %s names case %s of %s: not applied", station, case_id,
                         case["station"])
            return
        projections.decide_case(county, db, case, json.loads(body))


def apply_up(county: Context, db: Any, ev: Event) -> None:
    """Project one station event into cases (inside the sync transaction).

    A valid signature proves only who wrote the event: every fact is checked again here with
    the station's own rules (sync/law/intake.py), against the catalogue version it names and the
    station's level, and must name a case its author owns in a state that allows it. A
    broken rule raises RuleError; the inbox sets the event aside with that reason."""
    if retention.is_redacted(ev.body):          # given back by a station after its purge (§8.7)
        raise RuleError(retention.PURGED_AT_STATION)
    project = projections.UP.get(ev.kind)
    if project is None:
        raise RuleError(N_("Unknown event kind %(kind)s."), kind=ev.kind)
    facts.spec(ev.kind).validate(ev.body, _context(county, db, ev))
    project(county, db, ev)


def _context(county: Context, db: Any, ev: Event) -> facts.Context:
    """What the station knew: its level, the catalogue version the body names, and for a fact
    about a case held already, the case's item as its signed application lists it."""
    version = ev.body.get("catalog_version") if isinstance(ev.body, dict) else None
    catalog = catalogue.catalog_version(county, db, version) if type(version) is int else None
    st = county.store.station(ev.author)
    item = None
    case_id = ev.body.get("id") if isinstance(ev.body, dict) else None
    if ev.kind == facts.SUPPLEMENTED and isinstance(case_id, str):
        case = county.store.case(case_id, db)
        item = facts.case_item(application_body(county, db, case)) if case else None
    return facts.Context(author=ev.author, level=st["level"] if st else None, catalog=catalog, item=item)


def application_body(county: Context, db: Any, case: dict[str, Any]) -> dict[str, Any]:
    """The body of the application event a case row was made from (as the station signed it)."""
    ev = log.get(db, log.up(case["station"]), int(case["seq"]))
    return ev.body if ev is not None and isinstance(ev.body, dict) else {}


def decide(county: Context, case_id: str, decision: str, note: str, user: dict[str, Any],
           materials: list[dict[str, Any]] | None = None, *, reason: str = "", basis: str = "",
           attachments: Sequence[tuple[str, bytes]] = ()) -> dict[str, Any]:
    """Decide a case waiting for a decision. A correction request (退回补正) lists each material
    that is missing or defective, with the problem (``materials``: ``[{"code", "problem", "text"}]``),
    and/or a note; the case then waits for the citizen and its time limit is suspended. A rejection
    needs ``reason`` and ``basis`` (the appeal block is copied from the catalogue); an approval may
    carry result documents (``attachments``: (name, bytes)), checked and sealed to the station
    before the decision is recorded (central/services/documents.py)."""
    if decision not in DECISIONS:
        raise CountyError(422, "bad_decision", N_("Choose approve, reject or correction."))
    note = note.strip()
    if materials and decision != "correction":
        raise CountyError(422, "bad_materials", N_("Only a correction request lists materials to correct."))
    if decision == "correction" and not note and not materials:
        raise CountyError(422, "note_required", N_(
            "A correction request names the materials to correct, or says in the note what to bring."))
    if len(note) > 2000:
        raise CountyError(422, "note_too_long", N_("The note is too long."))
    written = documents.written(county, case_id, decision, reason, basis, attachments, user)
    with county.store.transaction() as db:
        case = county.store.case(case_id, db)
        if case is None:
            raise CountyError(404, "not_found", N_("No such case."))
        if not permissions.may_decide(user, case):
            raise CountyError(403, "other_department", N_("This case belongs to another department."))
        if case["status"] != "received":
            raise CountyError(409, "not_open", N_("This case is not waiting for a decision."))
        values: dict[str, Any] = {}
        if decision == "correction":
            try:
                values["materials"] = intake.check_correction(
                    materials or [], facts.case_item(application_body(county, db, case)) or {"materials": []})
            except RuleError as exc:
                raise CountyError(422, "bad_materials", exc.message, exc.params) from exc
        county.record(db, case["station"], facts.Fact(facts.CASE_DECIDED, facts.SPECS[facts.CASE_DECIDED].to_body(
            id=case_id, decision=decision, note=note, by=user["name"], department=case["department"],
            at=log.utcnow(), **written, **values)))
        return county.store.case(case_id, db) or {}


def signed_application(county: Context, case: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The application as the station signed it, and its signature re-verified now with the
    key its ``key`` id names in the station's key history: ``valid``, ``invalid`` or ``missing``.
    A key revoked after the event was stored still verifies it; one revoked before does not."""
    body, signature, _ = signed_application_key(county, case)
    return body, signature


def signed_application_key(county: Context, case: dict[str, Any]) -> tuple[dict[str, Any], str, dict[str, Any] | None]:
    """``signed_application`` and the key-history entry of the key that signed it (None if unknown)."""
    stream = log.up(case["station"])
    with county.store.lock:
        ev = log.get(county.store.conn, stream, int(case["seq"]))
    history = county.store.station_key_history(case["station"])
    if ev is None or not history:
        return (ev.body if ev else {}), "missing", None
    key = next((k for k in history if k["sign_id"] == ev.key), None)
    if key is None:
        return ev.body, "invalid", None
    try:
        ev.check(key["sign_key"])
    except BadEvent:
        return ev.body, "invalid", key
    stored = county.store.stored_at(stream, ev.seq) or ""
    if key["revoked_at"] and stored >= key["revoked_at"]:
        return ev.body, "invalid", key
    return ev.body, ("valid" if ev.body.get("id") == case["id"] else "invalid"), key


def life(county: Context, case: dict[str, Any], today: Any = None) -> dict[str, Any]:
    """A case's life beyond its row, decoded for the page and the API: the time limit (days used
    and left, suspended while waiting on the citizen), the materials the last correction request
    listed, the last supplement, and who collected the result."""
    import datetime as dt

    clock = case_clock(time_limit_days=case.get("time_limit_days"), accepted_at=case.get("accepted_at"),
                       suspensions=case.get("suspensions"), status=case.get("status"),
                       decided_at=case.get("decided_at"),
                       today=today or dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date(),
                       workday=calendar.calendar_of(county).is_workday)
    return {"time_limit_days": case.get("time_limit_days"),
            "days_used": clock["days_used"] if clock else None,
            "days_left": clock["days_left"] if clock else None,
            "suspended": bool(clock and clock["suspended"]),
            "due_date": clock["promised_date"] if clock else None,
            "correction": json.loads(case["correction"]) if case.get("correction") else None,
            "supplement": json.loads(case["supplement"]) if case.get("supplement") else None,
            "collector": json.loads(case["collector"]) if case.get("collector") else None}


def signed_case(county: Context, case: dict[str, Any]) -> dict[str, Any]:
    """What the case page and API show: the case row with every column it copies from the
    application replaced by the signed value (when the signature verifies), the signed body,
    the signature's state, the scans, and ``mismatches``: each place where the stored row (or
    its scans) differs from what the station signed. Blocking: call it in a worker thread."""
    body, signature, key = signed_application_key(county, case)
    scans = county.store.scans_of(case["id"])
    mismatches = record_mismatches(case, body, scans) if body else []
    shown = {**case, **signed_columns(body)} if body and signature == "valid" else dict(case)
    return {"case": shown, "body": body, "signature": signature, "scans": scans, "mismatches": mismatches,
            "signed_by": key, "decision_key": decision_key(county, case), "life": life(county, case)}


def decision_key(county: Context, case: dict[str, Any]) -> dict[str, Any] | None:
    """The county key that signed the case's latest decision (``sign_id``, ``current``) and whether
    that signature verifies now with the county's key history (``valid``); None if undecided."""
    stream = log.down(case["station"])
    with county.store.lock:
        row = county.store.conn.execute(
            "SELECT seq FROM _sync_events WHERE stream = ? AND kind = 'case.decided'"
            " AND json_extract(body, '$.id') = ? ORDER BY seq DESC LIMIT 1", (stream, case["id"])).fetchone()
        ev = log.get(county.store.conn, stream, int(row[0])) if row else None
    if ev is None:
        return None
    try:
        ev.check(county.own_keys())
        valid = True
    except BadEvent:
        valid = False
    return {"sign_id": ev.key, "valid": valid, "current": ev.key == county.me.public.sign_id, "seq": ev.seq}

