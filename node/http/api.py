"""JSON API counterparts of page actions that had none (docs/ARCHITECTURE.md, "Page actions and
their API"): thin handlers over the same station methods the pages call."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from node import views
from node.services import cases
from node.services import reports
from node.http.errors import api_names
from node.views import api_scans, api_user, app_json, station
from templates import gettext_for, locale_of
from templates.web import api_error, json_object


def application_form(payload: dict[str, Any]) -> dict[str, Any]:
    """An application body of the API (``applicant``, ``fields``, ``materials``, ``reason``) as the
    intake form node/services/cases.py reads; a part of the wrong type counts as empty (the checks then name it)."""
    applicant = payload.get("applicant") if isinstance(payload.get("applicant"), dict) else {}
    fields = payload.get("fields") if isinstance(payload.get("fields"), dict) else {}
    materials = payload.get("materials") if isinstance(payload.get("materials"), list) else []
    return {**{k: applicant.get(k, "") for k in ("name", "id_number", "phone", "address")},
            **{"f_" + k: v for k, v in fields.items()},
            "materials": [str(m) for m in materials], "reason": payload.get("reason", "")}


async def api_complete(request: Request) -> Response:
    """``POST /api/v1/applications/{id}/complete``: the citizen came back after the station's
    correction notice (一次性告知) with what was missing; the same body as ``POST /api/v1/applications``
    without ``item`` (the case's) → the same case, accepted (or refused, or noticed again);
    404 unknown case, 409 not waiting for the citizen, 422 with ``details`` in the API's names."""
    user = await api_user(request)
    payload = await json_object(request)
    st = station(request)
    app = await run_in_threadpool(st.store.application, request.path_params["id"])
    if app is None:
        return api_error(404, "not_found", "No such application at this station.")
    attached = await api_scans(request, payload)
    if isinstance(attached, Response):
        return attached
    try:
        done = await run_in_threadpool(st.take, app["item_code"], application_form(payload),
                                       str(payload.get("decision", "")), user["name"], attached, case_id=app["id"])
    except cases.IntakeError as exc:
        details = api_names(exc.errors, gettext_for(locale_of(request)))
        status = 409 if "application" in exc.errors else 422
        return api_error(status, "conflict" if status == 409 else "invalid", " ".join(details.values()), details)
    return JSONResponse(await run_in_threadpool(app_json, st, done))


def _today_json(st: Any) -> dict[str, Any]:
    """The start page's "today" lists (node/views.py ``_today``) as the API's applications and reports."""
    lists = views._today(st)
    return {"results": [app_json(st, a) for a in lists["results"]], "waiting": [app_json(st, a) for a in lists["waiting"]],
            "due": [app_json(st, a) for a, _ in lists["due"]],
            "open_reports": [reports.as_json(reports.report(st.store, r["id"]) or {}) for r in lists["open_reports"]]}


async def api_today(request: Request) -> Response:
    """``GET /api/v1/today``: what the start page lists for the agent today: ``results`` to hand out,
    cases ``waiting`` for the citizen, open cases ``due`` within 3 working days (or late), most urgent
    first, and 办不成事 reports still ``open_reports``."""
    await api_user(request)
    return JSONResponse(await run_in_threadpool(_today_json, station(request)))
