"""JSON API counterparts of page actions that had none (docs/ARCHITECTURE.md, "Page actions and
their API"): thin handlers over the same station methods the pages call."""

from __future__ import annotations

import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from crypto.errors import CryptoError
from node.http import sittings as sitting_api
from node.http.common import api_scans, api_user, app_json, replayed, station, today_lists
from node.http.errors import intake_refusal
from node.services import cases, idem, ratings, reports, search, sittings
from node.services import verify as doc_verify
from node.station import Station
from sync.errors import Retryable, SyncError
from templates import N_, gettext_for, locale_of, reason_text
from templates.web import api_error, json_object

logger = logging.getLogger("lastmile.node")



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
        return intake_refusal(request, exc)
    return JSONResponse(await run_in_threadpool(app_json, st, done))


def _today_json(st: Any) -> dict[str, Any]:
    """The start page's "today" lists (node/http/common.py ``today_lists``) as the API's applications and reports."""
    lists = today_lists(st)
    return {"results": [app_json(st, a) for a in lists["results"]], "waiting": [app_json(st, a) for a in lists["waiting"]],
            "due": [app_json(st, a) for a, _ in lists["due"]],
            "open_reports": [reports.as_json(reports.report(st.store, r["id"]) or {}) for r in lists["open_reports"]]}


async def api_today(request: Request) -> Response:
    """``GET /api/v1/today``: what the start page lists for the agent today: ``results`` to hand out,
    cases ``waiting`` for the citizen, open cases ``due`` within 3 working days (or late), most urgent
    first, and 办不成事 reports still ``open_reports``."""
    await api_user(request)
    return JSONResponse(await run_in_threadpool(_today_json, station(request)))


async def api_catalog(request: Request) -> Response:
    await api_user(request)
    st = station(request)
    q = request.query_params.get("q", "")
    version, items = await run_in_threadpool(lambda: (st.store.catalog()["version"], search.items(st.items(), q)))
    offered = await run_in_threadpool(lambda: [{k: v for k, v in b.items() if k != "item_list"}
                                               for b in (sittings.find(st, q) if q.strip() else sittings.offered(st))])
    return JSONResponse({"version": version, "level": st.level, "items": items, "bundles": offered})


async def api_create(request: Request) -> Response:
    user = await api_user(request)
    key = request.headers.get("idempotency-key")
    if key is not None and not idem.valid_api_key(key):
        return api_error(400, "invalid_idempotency_key", gettext_for(locale_of(request))(N_(
            "An Idempotency-Key is 1 to 100 printable ASCII characters.")))
    payload = await json_object(request)
    if "items" in payload:          # 一件事一次办: several items at one sitting (node/http/sittings.py)
        return await sitting_api.api_create(request, user, payload, key)
    st = station(request)
    scope, fingerprint = "api:" + user["username"], idem.fingerprint(payload)
    first = await run_in_threadpool(idem.find, st.store, scope, key) if key is not None else None
    if first is not None:
        return await run_in_threadpool(replayed, request, st, first, fingerprint)
    applicant = payload.get("applicant") if isinstance(payload.get("applicant"), dict) else {}
    fields = payload.get("fields") if isinstance(payload.get("fields"), dict) else {}
    materials = payload.get("materials") if isinstance(payload.get("materials"), list) else []
    attached = await api_scans(request, payload)
    if isinstance(attached, Response):
        return attached
    form: dict[str, Any] = {**{k: applicant.get(k, "") for k in ("name", "id_number", "phone", "address")},
                            **{"f_" + k: v for k, v in fields.items()},
                            "materials": [str(m) for m in materials], "reason": payload.get("reason", "")}
    remember = None if key is None else idem.claimer(
        scope, key, fingerprint, lambda app_id: app_json(st, st.store.application(app_id) or {}))
    try:
        app = await run_in_threadpool(st.take, str(payload.get("item", "")), form, str(payload.get("decision", "")),
                                      user["name"], attached, within=remember)
    except idem.Replay as exc:      # the same key at the same moment: the other request recorded its case
        return await run_in_threadpool(replayed, request, st, exc.row, fingerprint)
    except cases.IntakeError as exc:
        return intake_refusal(request, exc)
    return JSONResponse(await run_in_threadpool(app_json, st, app), 201)


def _application_json(st: Station, app_id: str, request: Request | None = None) -> dict[str, Any] | None:
    app = st.store.application(app_id)
    if app is None or request is None:
        return app_json(st, app) if app is not None else None
    locale = locale_of(request)
    return {**app_json(st, app), **ratings.page_json(st, app, gettext_for(locale), lambda r: reason_text(r, locale))}


async def api_application(request: Request) -> Response:
    await api_user(request)
    st = station(request)
    found = await run_in_threadpool(_application_json, st, request.path_params["id"], request)
    if found is None:
        return api_error(404, "not_found", "No such application at this station.")
    return JSONResponse(found)


async def api_sync(request: Request) -> Response:
    """One sync, answered when it is over (for scripts); it runs in a worker thread."""
    await api_user(request)
    st = station(request)
    try:
        result = await run_in_threadpool(st.sync)
    except (SyncError, CryptoError) as exc:
        return api_error(503 if isinstance(exc, Retryable) else 502, getattr(exc, "code", "sync"),
                         str(exc), {"state": await run_in_threadpool(st.sync_state)})
    return JSONResponse({**result.to_dict(), "state": await run_in_threadpool(st.sync_state)})


async def api_status(request: Request) -> Response:
    await api_user(request)
    st = station(request)
    state = await run_in_threadpool(st.sync_state)
    return JSONResponse({"station": st.code, "name": st.name, "level": st.level, "sync": state})


async def api_supplement(request: Request) -> Response:
    """``POST /api/v1/applications/{id}/supplement`` ``{"materials": [codes], "scans": [{material, name,
    data_base64}], "note"}``: what the citizen brought after the county's correction request."""
    user = await api_user(request)
    payload = await json_object(request)
    st = station(request)
    materials = payload.get("materials", [])
    if not isinstance(materials, list) or not all(isinstance(m, str) for m in materials):
        return api_error(422, "invalid", "materials is a list of material codes",
                         {"materials": "a list of material codes"})
    attached = await api_scans(request, payload)
    if isinstance(attached, Response):
        return attached
    try:
        app = await run_in_threadpool(st.supplement, request.path_params["id"], materials, attached,
                                      str(payload.get("note", "")), user["name"])
    except cases.IntakeError as exc:
        return intake_refusal(request, exc)
    return JSONResponse(await run_in_threadpool(app_json, st, app))


async def api_handout(request: Request) -> Response:
    """``POST /api/v1/applications/{id}/handout`` ``{"collector": {"name", "id_number", "relation"} or
    null, "identity_checked": true}``."""
    user = await api_user(request)
    payload = await json_object(request)
    st = station(request)
    collector = payload.get("collector")
    if collector is not None and not isinstance(collector, dict):
        return api_error(422, "invalid", "collector is null (the applicant) or {name, id_number, relation}",
                         {"collector": "null or {name, id_number, relation}"})
    try:
        app = await run_in_threadpool(st.hand_out, request.path_params["id"], user["name"], collector,
                                      payload.get("identity_checked") is True)
    except cases.IntakeError as exc:
        return intake_refusal(request, exc)
    return JSONResponse(await run_in_threadpool(app_json, st, app))


async def api_applications(request: Request) -> Response:
    """``GET /api/v1/applications?q=``: cases by receipt number, ID number (or its last 6), name or phone."""
    await api_user(request)
    st = station(request)
    q = request.query_params.get("q", "")
    if not q.strip():
        return api_error(422, "invalid", "give q: a receipt number, an ID number (or its last 6), a name or a phone",
                         {"q": "required"})

    def found() -> list[dict[str, Any]]:
        return [app_json(st, st.store.application(a["id"]) or {}) for a in search.applications(st.store, q)]
    return JSONResponse({"q": q, "applications": await run_in_threadpool(found)})


async def api_report_create(request: Request) -> Response:
    """``POST /api/v1/reports``: a 办不成事 report (``name``, ``phone``, ``id_number``, ``tried``, ``where``,
    ``item_code``, ``contact``) → 201 with its receipt number."""
    user = await api_user(request)
    payload = await json_object(request)
    st = station(request)
    form = {k: payload.get(k, "") for k in ("name", "phone", "id_number", *reports.FIELDS)}
    if not all(isinstance(v, str) for v in form.values()):
        return api_error(422, "invalid", "every field of a report is a string",
                         {k: "a string" for k, v in form.items() if not isinstance(v, str)})
    try:
        r = await run_in_threadpool(reports.file, st, form, user["name"])
    except cases.IntakeError as exc:        # the report's own field names, not an application's
        return intake_refusal(request, exc, lambda errors, _: {k: _(v) for k, v in errors.items()})
    return JSONResponse({**reports.as_json(r), **await run_in_threadpool(doc_verify.report_printed, st, r)}, 201)


async def api_report(request: Request) -> Response:
    """``GET /api/v1/reports/{id}``: the report, who at the county took it (``owner``) and the ``answer``."""
    await api_user(request)
    st = station(request)
    r = await run_in_threadpool(reports.report, st.store, request.path_params["id"])
    if r is None:
        return api_error(404, "not_found", "No such report at this station.")
    return JSONResponse({**reports.as_json(r), **await run_in_threadpool(doc_verify.report_printed, st, r)})
