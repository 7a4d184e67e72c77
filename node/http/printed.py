"""Thin handlers of the county's written decisions at the station: the printable 办结通知书 /
不予批准决定书, and the result documents the county sent, served only once they verified."""

from __future__ import annotations

import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from node.http.common import application_of, decision_qr, verification_text
from node.services import documents
from node.services import verify as doc_verify
from node.station import Station
from sync.law.transitions import Status
from templates import N_, qr_svg, render

logger = logging.getLogger("lastmile.node")


def _decision_parts(st: Station, app: dict[str, Any]) -> dict[str, Any]:
    return {"decision": documents.decision_body(st, app), "documents": documents.listing(st, app),
            "departments": st.department_names(), **decision_qr(st, app)}


async def decision_document(request: Request) -> Response:
    """The printable written decision of the county: 办结通知书 or 不予批准决定书."""
    st, app = await application_of(request)
    parts = await run_in_threadpool(_decision_parts, st, app)
    if parts["decision"] is None or parts["decision"]["decision"] not in ("approve", "reject"):
        raise HTTPException(404, N_("The county has not approved or rejected this application yet."))
    return render(request, "node/decision_document.html", official=True, st=st, app=app, body=app["body"], **parts)


async def attachment(request: Request) -> Response:
    """A result document, once it arrived and verified against the signed decision; else 404."""
    st, app = await application_of(request)
    found = await run_in_threadpool(documents.attachment, st, app, request.path_params["sha"])
    if found is None:
        raise HTTPException(404, N_("This result document has not arrived yet."))
    listed, data = found
    return Response(data, media_type=listed["mime"], headers={
        "cache-control": "private, no-store", "x-content-type-options": "nosniff",
        "content-security-policy": "default-src 'none'; img-src 'self'",
        "content-disposition": "inline"})


def _document_parts(st: Station, app: dict[str, Any]) -> tuple[str, dict[str, dict[str, str]]]:
    return qr_svg(verification_text(st, app)), st.department_names()


async def document(request: Request) -> Response:
    st, app = await application_of(request)
    qr, departments = await run_in_threadpool(_document_parts, st, app)
    return render(request, "node/document.html", official=True, st=st, app=app, body=app["body"], qr=qr,
                  departments=departments,
                  appeal=await run_in_threadpool(documents.catalog_appeal, st),
                  verify_code=doc_verify.verify_code(app),
                  item=await run_in_threadpool(st.item, app["item_code"]), contact=await run_in_threadpool(st.contact))


async def correction_document(request: Request) -> Response:
    """材料补正通知书: everything the county's correction request asks for, at once, in the
    deciding department's name, for the citizen to take home."""
    st, app = await application_of(request)
    if app["status"] != Status.CORRECTION_REQUESTED:       # the notice of the round the citizen must answer now
        raise HTTPException(404, N_("The county has not asked for corrections on this case."))
    life = await run_in_threadpool(st.life, app)
    departments = await run_in_threadpool(st.department_names)
    qr = await run_in_threadpool(decision_qr, st, app)
    return render(request, "node/correction_document.html", official=True, st=st, app=app, life=life,
                  departments=departments, contact=await run_in_threadpool(st.contact), **qr)
