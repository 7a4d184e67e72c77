"""办不成事 at the station: filing a citizen's report (it gets a receipt number from the day's
series and goes up as ``report.filed``), and the county's ``report.taken`` / ``report.answered``
coming down. The facts and their rules: sync/law/reports.py."""

from __future__ import annotations

import json
import sqlite3
import uuid
from typing import TYPE_CHECKING, Any

from crypto import canonical
from node.services import receipts
from node.services.cases import IntakeError
from node.store import Store
from sync.law import facts, reports
from sync.law.errors import N_, RuleError
from sync.log import Event

if TYPE_CHECKING:
    from node.services.desk import Desk

FIELDS = ("tried", "where", "item_code", "contact")


def file(st: Desk, form: dict[str, Any], agent: str) -> dict[str, Any]:
    """Record a report from the agent's form (``name``, ``phone``, ``id_number``, ``tried``, ``where``,
    ``item_code``, ``contact``); IntakeError naming the entry at fault."""
    citizen = {k: str(form.get(k, "")).strip() for k in ("name", "phone", "id_number")}
    citizen["id_number"] = citizen["id_number"].upper()
    values = {k: str(form.get(k, "")).strip() for k in FIELDS}
    if not values["contact"] and citizen["phone"]:
        values["contact"] = citizen["phone"]
    errors = {k: N_("This field is required.") for k in ("tried", "where", "contact") if not values[k]}
    if not citizen["name"]:
        errors["name"] = N_("Enter the citizen's name.")
    if errors:
        raise IntakeError(errors)
    now = st.now()
    with st.store.transaction() as db:
        body = {"id": str(uuid.uuid4()), "receipt_no": receipts.next_number(st, db, now), "station": st.code, "agent": agent,
                "at": now.isoformat(timespec="seconds"), "citizen": citizen, **values}
        try:
            st.record(db, facts.Fact(reports.FILED, body))
        except RuleError as exc:
            raise IntakeError({"report": exc.message}) from exc
    return report(st.store, body["id"]) or {}


def report(store: Store, report_id: str) -> dict[str, Any] | None:
    with store.lock:
        rows = list(store.db["reports"].rows_where("id = ?", [report_id]))
    if not rows:
        return None
    return {**rows[0], "body": json.loads(rows[0]["body"])}


def open_reports(store: Store) -> list[dict[str, Any]]:
    """Reports still waiting for the county's answer, oldest first."""
    with store.lock:
        return list(store.db["reports"].rows_where("status != ?", [reports.ANSWERED_STATE], order_by="created_at"))


def as_json(r: dict[str, Any]) -> dict[str, Any]:
    b = r["body"]
    return {"id": r["id"], "receipt_no": r["receipt_no"], "status": r["status"], "filed_at": b["at"],
            "agent": b["agent"], "citizen": b["citizen"], "tried": b["tried"], "where": b["where"],
            "item_code": b["item_code"] or None, "contact": b["contact"],
            "owner": ({"by": r["taken_by"], "department": r["taken_department"], "at": r["taken_at"]}
                      if r["taken_by"] else None),
            "answer": ({"answer": r["answer"], "by": r["answered_by"], "at": r["answered_at"]}
                       if r["answer"] else None)}


# projections ------------------------------------------------------------------------------------

def filed(store: Store, db: sqlite3.Connection, ev: Event) -> None:
    b = ev.body
    store.db["reports"].upsert({"id": b["id"], "seq": ev.seq, "receipt_no": b["receipt_no"], "status": reports.OPEN,
                                "citizen_name": b["citizen"]["name"], "body": canonical.dumps(b).decode(),
                                "agent": b["agent"], "created_at": b["at"]}, pk="id")


def _moved(db: sqlite3.Connection, ev: Event) -> str:
    row = db.execute("SELECT status FROM reports WHERE id = ?", (ev.body["id"],)).fetchone()
    return reports.next_state(row[0] if row else reports.NEW, ev.kind, ev.body["id"])


def taken(store: Store, db: sqlite3.Connection, ev: Event) -> None:
    b = ev.body
    store.update_report(db, b["id"], status=_moved(db, ev), taken_by=b["by"], taken_department=b["department"],
                        taken_at=b["at"])


def answered(store: Store, db: sqlite3.Connection, ev: Event) -> None:
    b = ev.body
    store.update_report(db, b["id"], status=_moved(db, ev), answer=b["answer"], answered_by=b["by"],
                        answered_at=b["at"])
