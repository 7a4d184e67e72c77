"""Thin handlers of the county's written decisions at the station: the printable 办结通知书 /
不予批准决定书, and the result documents the county sent, served only once they verified."""

from __future__ import annotations

import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from node.services import documents
from node.station import Station
from node.views import _decision_qr, application_of
from templates import N_, render

logger = logging.getLogger("lastmile.node")


def _decision_parts(st: Station, app: dict[str, Any]) -> dict[str, Any]:
    return {"decision": documents.decision_body(st, app), "documents": documents.listing(st, app),
            "departments": st.department_names(), **_decision_qr(st, app)}


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
