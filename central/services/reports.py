"""办不成事 at the county: a station's ``report.filed`` is stored; a member of staff takes it
(``report.taken``: 首问负责, whoever takes it answers for it) and answers (``report.answered``);
both go down to the station that filed it. The facts and their rules: sync/law/reports.py. The rest of
the back office (routing, time limits, statistics) is still to come."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from central.errors import CountyError, N_
from sync import log
from sync.law import facts, reports
from sync.log import Event

if TYPE_CHECKING:
    from central.services.context import Context


def take_report(county: Context, report_id: str, user: dict[str, Any]) -> dict[str, Any]:
    """The user takes the report and answers for it; 409 if someone already has."""
    with county.store.transaction() as db:
        r = _open_report(county, db, report_id)
        if r["status"] != reports.OPEN:
            raise CountyError(409, "already_taken", N_("%(name)s already took this report."),
                              {"name": r["taken_by"] or ""})
        _take(county, db, r, user)
        return county.store.report(report_id, db) or {}


def _take(county: Context, db: Any, r: dict[str, Any], user: dict[str, Any]) -> None:
    """``report.taken`` by ``user`` (the fact names the display name and department, as stations
    show them), and the taker's user name kept beside it: 首问负责 is checked by it (``owns``)."""
    county.record(db, r["station"], facts.Fact(reports.TAKEN, {
        "id": r["id"], "by": user["name"], "department": user.get("department") or "", "at": log.utcnow()}))
    county.store.update_report(db, r["id"], taken_username=user["username"])


def answer_report(county: Context, report_id: str, answer: str, user: dict[str, Any]) -> dict[str, Any]:
    """Answer a report (taking it first if nobody has); only whoever took it may answer it."""
    answer = answer.strip()
    if not answer or len(answer) > 2000:
        raise CountyError(422, "answer_required", N_("Write the answer for the citizen (at most 2000 characters)."))
    with county.store.transaction() as db:
        r = _open_report(county, db, report_id)
        if r["status"] == reports.ANSWERED_STATE:
            raise CountyError(409, "already_answered", N_("This report has already been answered."))
        if r["status"] == reports.OPEN:
            _take(county, db, r, user)
        elif not owns(r, user) and user.get("role") != "supervisor":
            raise CountyError(403, "not_yours", N_("%(name)s took this report and answers it."),
                              {"name": r["taken_by"] or ""})
        county.record(db, r["station"], facts.Fact(reports.ANSWERED, {
            "id": report_id, "by": user["name"], "department": user.get("department") or "", "answer": answer,
            "at": log.utcnow()}))
        return county.store.report(report_id, db) or {}


def _open_report(county: Context, db: Any, report_id: str) -> dict[str, Any]:
    r = county.store.report(report_id, db)
    if r is None:
        raise CountyError(404, "not_found", N_("No such report."))
    return r


def owns(r: dict[str, Any], user: dict[str, Any]) -> bool:
    """Whether ``user`` took report ``r`` (首问负责): by user name; a report taken before the user name
    was kept (``taken_username`` NULL) by display name and department both, as the fact recorded them."""
    if r.get("taken_username"):
        return bool(r["taken_username"] == user.get("username"))
    return bool(r["taken_by"]) and r["taken_by"] == user.get("name") \
        and (r["taken_department"] or "") == (user.get("department") or "")


def as_json(r: dict[str, Any]) -> dict[str, Any]:
    b = json.loads(r["body"])
    return {"id": r["id"], "station": r["station"], "receipt_no": r["receipt_no"], "status": r["status"],
            "filed_at": r["filed_at"], "received_at": r["received_at"], "citizen": b["citizen"], "tried": b["tried"],
            "where": b["where"], "item_code": b["item_code"] or None, "contact": b["contact"], "agent": b["agent"],
            "owner": ({"by": r["taken_by"], "department": r["taken_department"], "at": r["taken_at"]}
                      if r["taken_by"] else None),
            "answer": ({"answer": r["answer"], "by": r["answered_by"], "at": r["answered_at"]} if r["answer"] else None)}


# projections ------------------------------------------------------------------------------------


def filed(county: Context, db: Any, ev: Event) -> None:
    b = ev.body
    held = county.store.report(b["id"], db)
    reports.next_state(held["status"] if held else reports.NEW, ev.kind, b["id"])
    county.store.insert_report(db, {"id": b["id"], "station": ev.author, "seq": ev.seq, "receipt_no": b["receipt_no"],
                                    "status": reports.OPEN, "body": json.dumps(b, ensure_ascii=False),
                                    "filed_at": b["at"], "received_at": log.utcnow()})


def taken(county: Context, db: Any, ev: Event) -> None:
    b = ev.body
    held = county.store.report(b["id"], db)
    county.store.update_report(db, b["id"], status=reports.next_state(held["status"] if held else None, ev.kind, b["id"]),
                               taken_by=b["by"], taken_department=b["department"], taken_at=b["at"])


def answered(county: Context, db: Any, ev: Event) -> None:
    b = ev.body
    held = county.store.report(b["id"], db)
    county.store.update_report(db, b["id"], status=reports.next_state(held["status"] if held else None, ev.kind, b["id"]),
                               answer=b["answer"], answered_by=b["by"], answered_at=b["at"])
