"""The station's counter work on a case: taking an application (and completing one a correction
notice left waiting), recording a supplement after the county's correction request, handing out a
result. Each is one transaction that records a fact through ``Desk.record`` (the one write path); the receipt
numbers: node/services/receipts.py."""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any, Callable

from node.services import cases, projections, receipts, sittings
from node.services.scans import Scan
from sync.law import facts, workdays
from sync.law.errors import RuleError
from sync.law.intake import check_collector
from sync.law.transitions import Status

if TYPE_CHECKING:
    from node.services.desk import Desk


def take(st: Desk, item_code: str, form: dict[str, Any], decision: str, agent: str,
         attached: list[Scan] | tuple[Scan, ...] = (),
         within: Callable[[sqlite3.Connection, str], None] | None = None,
         case_id: str | None = None) -> dict[str, Any]:
    """Record the agent's decision on an application; raises cases.IntakeError with field errors.
    ``within(db, app_id)``, if given, runs last in the transaction that records it (node/services/idem.py
    remembers the submission's key there); whatever it raises undoes the whole intake.
    ``case_id``: complete the case a correction notice left waiting for the citizen (一次性告知):
    the same case, its earlier scans kept, a new receipt number, the time limit from now.

    Scans are sealed to the county and written to disk (fsync) before the transaction that
    records the application, whose signed body lists each scan's hash and size."""
    item = st.item(item_code)
    if item is None:
        raise cases.IntakeError({"item": cases.N_("This service item is not in the station's catalogue.")})
    materials = {m["code"] for m in item["materials"]}
    if any(s.material not in materials for s in attached):
        raise cases.IntakeError({"scans": cases.N_("A scan is attached to a material this item does not ask for.")})
    listed = [{"sha256": s.sha256, "size": len(s.data), "name": s.name, "mime": s.mime, "material": s.material}
              for s in attached]
    sealed = {s.sha256: st.seal_scan(s) for s in attached}
    now = st.now()
    with st.store.transaction() as db:
        earlier: list[dict[str, Any]] = []
        if case_id is not None:
            earlier = _waiting_case(st, db, case_id, item_code)
            listed = earlier + [s for s in listed if s["sha256"] not in {e["sha256"] for e in earlier}]
        receipt_no = receipts.next_number(st, db, now)
        intake = cases.take(item, form, decision=decision, station=st.code, agent=agent,
                            catalog_version=int(st.store.catalog()["version"]), now=now,
                            receipt_no=receipt_no, level=st.level, case_id=case_id,
                            calendar=workdays.calendar_from(db))
        if case_id is not None:     # a case of a sitting (一件事一次办) stays linked when completed
            intake = sittings.carried(st.store, case_id, intake)
        body = {**intake.body, "scans": listed} if listed else intake.body
        # The scans themselves were checked at intake (node/services/scans.py); the body is checked as before.
        st.record(db, facts.Fact(intake.kind, body), check=facts.Fact(intake.kind, intake.body))
        for scan in listed:
            st.store.db["scans"].insert({**scan, "app_id": body["id"], "sealed_size": sealed.get(
                scan["sha256"], 0), "sent": 0, "done": 0, "created_at": now.isoformat()}, ignore=True)
        if within is not None:
            within(db, body["id"])
    return st.store.application(intake.body["id"]) or {}

def _waiting_case(st: Desk, db: sqlite3.Connection, case_id: str, item_code: str) -> list[dict[str, Any]]:
    """The scans of a case waiting for the citizen after our correction notice; NoSuchCase, or
    WrongState if the case is not one."""
    row = db.execute("SELECT status, item_code, body FROM applications WHERE id = ?", (case_id,)).fetchone()
    if row is None:
        raise cases.NoSuchCase({"application": cases.N_("No such application at this station.")})
    if row[0] != Status.CORRECTION_NOTICE or row[1] != item_code:
        raise cases.WrongState({"application": cases.N_(
            "This case is not waiting for the citizen to complete it.")})
    return list(json.loads(row[2]).get("scans", []))

def hand_out(st: Desk, app_id: str, by: str, collector: dict[str, str] | None = None,
             identity_checked: bool = True) -> dict[str, Any]:
    """Record who collected a decided case's result (统一窗口出件): the applicant, or a proxy
    (``collector``: name, ID number, relation). cases.NoSuchCase, cases.WrongState if the transition
    table forbids it, cases.IntakeError if the collector's details are wrong."""
    with st.store.transaction() as db:
        row = db.execute("SELECT status FROM applications WHERE id = ?", (app_id,)).fetchone()
        if row is None:
            raise cases.NoSuchCase({"application": cases.N_("No such application at this station.")})
        if not projections.may_hand_out(row[0]):
            raise cases.WrongState({"application": cases.N_(
                "This result cannot be handed out (not decided yet, or already handed out).")})
        if not identity_checked:
            raise cases.IntakeError({"identity_checked": cases.N_(
                "Check the identity document of the person who collects, then tick the box.")})
        values: dict[str, Any] = {"id": app_id, "by": by, "at": st.now().isoformat(timespec="seconds"),
                                  "identity_checked": True}
        if collector is not None:
            values["collector"] = {k: str(collector.get(k, "")).strip() for k in ("name", "id_number", "relation")}
            values["collector"]["id_number"] = values["collector"]["id_number"].upper()
            try:
                check_collector(values["collector"])
            except RuleError as exc:
                raise cases.IntakeError({"collector": exc.message}) from exc
        st.record(db, facts.Fact(facts.HAND_OUT, facts.SPECS[facts.HAND_OUT].to_body(**values)))
    return st.store.application(app_id) or {}

def supplement(st: Desk, app_id: str, materials: list[str], attached: list[Scan] | tuple[Scan, ...],
               note: str, by: str) -> dict[str, Any]:
    """Record what the citizen brought after the county asked for corrections (补正): the same
    case goes up again as a supplement and its time limit resumes. cases.NoSuchCase; cases.WrongState if the
    case is not waiting for one, cases.IntakeError if the supplement is wrong."""
    app = st.store.application(app_id)
    if app is None:
        raise cases.NoSuchCase({"application": cases.N_("No such application at this station.")})
    item = facts.case_item(app["body"]) or {"materials": []}
    codes = {m["code"] for m in item["materials"]}
    if any(m not in codes for m in materials) or any(s.material not in codes for s in attached):
        raise cases.IntakeError({"materials": cases.N_("The supplement lists a material this item does not ask for.")})
    listed = [{"sha256": s.sha256, "size": len(s.data), "name": s.name, "mime": s.mime, "material": s.material}
              for s in attached]
    sealed = {s.sha256: st.seal_scan(s) for s in attached}
    now = st.now()
    body: dict[str, Any] = {"id": app_id, "by": by, "at": now.isoformat(timespec="seconds"),
                            "materials": list(dict.fromkeys(materials)), "note": note.strip()}
    if listed:
        body["scans"] = listed
    with st.store.transaction() as db:
        row = db.execute("SELECT status FROM applications WHERE id = ?", (app_id,)).fetchone()
        if row is None or row[0] != Status.CORRECTION_REQUESTED:
            raise cases.WrongState({"application": cases.N_("This case is not waiting for a supplement.")})
        try:
            ev = st.record(db, facts.Fact(facts.SUPPLEMENTED, body))
        except RuleError as exc:
            raise cases.IntakeError({"materials": exc.message}) from exc
        for scan in listed:
            st.store.db["scans"].insert({**scan, "app_id": app_id, "sealed_size": sealed[scan["sha256"]],
                                           "sent": 0, "done": 0, "created_at": now.isoformat(), "seq": ev.seq},
                                          ignore=True)
    return st.store.application(app_id) or {}

