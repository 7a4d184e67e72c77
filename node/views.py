"""Thin handlers: parse the request, call the station, render a page or JSON."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import threading
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from node.services import sittings as bundles
from node.services import cases
from node.services import documents
from node.services import idem
from node.services import ratings
from node.services import reports
from node.services import scans
from node.services import search
from node.services import verify as doc_verify
from node.http.errors import api_names
from node.station import Station
from node.store import AccountDisabled
from sync.errors import Retryable, SyncError
from sync.law.transitions import Status
from crypto.errors import CryptoError
from templates import N_, check_csrf, csrf_token, gettext_for, locale_of, qr_svg, reason_text, render
from templates.web import api_error, bearer_user, checked_form, json_object, session_user, upload_form

logger = logging.getLogger("lastmile.node")


def station(request: Request) -> Station:
    return request.app.state.station  # type: ignore[no-any-return]


agent = session_user
form_of = checked_form


def authenticate(request: Request, username: str, password: str) -> dict[str, Any] | None:
    try:
        return station(request).store.login(username, password)
    except AccountDisabled as exc:      # the right password: say why, plainly
        logger.info("login of the disabled account %r refused", username)
        raise HTTPException(403, N_("This account is disabled. Ask the station's administrator to enable it "
                                    "again.")) from exc


def accounts(request: Request) -> Any:
    """Where the session plumbing looks up agents and ends their sessions: the station's store."""
    return station(request).store


def _home_context(st: Station) -> dict[str, Any]:
    """Everything the home page shows, read from the store (in a worker thread, never on the loop)."""
    recent = st.store.applications(limit=20)
    return {"sync": st.sync_state(), **_today(st), "recent": recent, "lives": {a["id"]: st.life(a) for a in recent},
            "items": st.items(), "bundles": bundles.offered(st), "station_code": st.code}


DUE_WITHIN = 3      # working days: a case this close to its promised date is listed on the start page


def _today(st: Station) -> dict[str, Any]:
    """What needs the agent today: results to hand out, cases waiting for the citizen, and open cases
    near or past their promised date (by the station's calendar, suspensions counted)."""
    def having(statuses: tuple[str, ...], limit: int = 100) -> list[dict[str, Any]]:
        return st.store.applications("status IN (" + ", ".join("?" for _ in statuses) + ")", statuses, limit=limit)
    due = []
    for app in having((Status.ACCEPTED, Status.RECEIVED), limit=2000):
        life = st.life(app)
        if life["days_left"] is not None and life["days_left"] <= DUE_WITHIN:
            due.append((app, life))
    due.sort(key=lambda pair: pair[1]["days_left"])
    return {"results": having(Status.RESULTS), "waiting": having(Status.WAITING), "due": due,
            "open_reports": reports.open_reports(st.store)}


async def today(request: Request) -> Response:
    """The start page's "today" lists as an HTML fragment with a stamp: the page's script asks every
    few seconds and swaps the lists in when the stamp changes, so results that sync brings down
    appear without a reload (everything is local: no internet needed)."""
    agent(request)
    st = station(request)
    context = await run_in_threadpool(_today, st)
    response = render(request, "node/_today.html", st=st, **context)
    html = bytes(response.body).decode()
    return JSONResponse({"stamp": hashlib.sha256(html.encode()).hexdigest()[:16], "html": html},
                        headers={"cache-control": "no-store"})


SYNC_REFRESH_S = 2   # while a sync runs, the home page reloads itself this often (no JavaScript)


async def home(request: Request) -> Response:
    agent(request)
    st = station(request)
    context = await run_in_threadpool(_home_context, st)
    syncing = sync_running(request)
    flash = request.query_params.get("m")
    if flash == "syncing" and not syncing:       # the run the agent asked for is over: say how it went
        flash = "sync_failed" if context["sync"]["last_error"] else "synced"
    response = render(request, "node/home.html", st=st, flash=flash, syncing=syncing, **context)
    if syncing:
        response.headers["refresh"] = str(SYNC_REFRESH_S)
    return response


def _item_form(st: Station, code: str) -> tuple[dict[str, Any] | None, dict[str, dict[str, str]]]:
    item = st.item(code)
    return (item if item is not None and item in st.items() else None), st.department_names()


async def guide(request: Request) -> Response:
    """办事指南: what to bring (original or copy, how many), who decides, how long, the fee; printable,
    for the citizen to take home or for the agent to read out on the phone before the first trip."""
    agent(request)
    st = station(request)
    item, departments = await run_in_threadpool(_item_form, st, request.path_params["code"])
    if item is None:
        raise HTTPException(404, N_("This service item is not in the station's catalogue."))
    version = await run_in_threadpool(lambda: st.store.catalog()["version"])
    return render(request, "node/guide.html", official=True, st=st, item=item, departments=departments, version=version)


async def apply_form(request: Request) -> Response:
    agent(request)
    st = station(request)
    item, departments = await run_in_threadpool(_item_form, st, request.path_params["code"])
    if item is None:
        raise HTTPException(404, N_("This service item is not in the station's catalogue."))
    return render(request, "node/apply.html", st=st, item=item, form={}, errors={}, departments=departments,
                  submit_token=idem.new_form_token(csrf_token(request)))


async def complete_form(request: Request) -> Response:
    """The citizen came back after a correction notice: the same form, filled in as it was, to tick
    what was brought, attach scans and accept (一次性告知 → 受理, the same case)."""
    st, app = await application_of(request)
    if app["status"] != Status.CORRECTION_NOTICE:
        raise HTTPException(409, N_("This case is not waiting for the citizen to complete it."))
    item, departments = await run_in_threadpool(_item_form, st, app["item_code"])
    if item is None:
        raise HTTPException(404, N_("This service item is not in the station's catalogue."))
    b = app["body"]
    form = {**b["applicant"], **{"f_" + k: str(v) for k, v in b["fields"].items()},
            "materials": [m["code"] for m in b["materials"] if m.get("received")]}
    return render(request, "node/apply.html", st=st, item=item, form=form, errors={}, departments=departments,
                  submit_token=idem.new_form_token(csrf_token(request)), completing=app)


async def form_submission(request: Request, st: Station, user: dict[str, Any], form: Any
                          ) -> tuple[str, dict[str, Any] | None]:
    """The guard of an intake form (the item form and the sitting form): the CSRF token, then the form's
    one-time ``submit_token``, which must have been issued in this session (400 with a plain sentence
    otherwise). Returns the token and what its first submission recorded, if there was one (a double
    click, the back button): the caller shows that instead of taking a second case."""
    if not check_csrf(request, form):
        raise HTTPException(400, N_("The page expired; please go back, reload and try again."))
    token = str(form.get("submit_token", ""))
    if not idem.form_token_ok(csrf_token(request), token):
        raise HTTPException(400, N_("This form was not issued to you in this session; open it again from "
                                    "the start page."))
    return token, await run_in_threadpool(idem.find, st.store, FORM + user["username"], token)


async def apply_submit(request: Request) -> Response:
    user = agent(request)
    st = station(request)
    async with upload_form(request) as form:
        token, first = await form_submission(request, st, user, form)
        if first is not None:       # a double click, the back button: the receipt of the first submission
            return RedirectResponse(f"/applications/{first['app_id']}/document", 303)
        return await _apply(request, user, st, form, token, request.path_params.get("id"))


async def form_scans(form: Any) -> list[scans.Scan]:
    """The scans of an intake or supplement form (``scan_<material>`` file fields), checked and
    prepared off the event loop; cases.IntakeError naming the field of a refused one."""
    attached = []
    for key, value in form.multi_items():
        if key.startswith("scan_") and isinstance(value, UploadFile) and value.filename:
            raw = await value.read(scans.MAX_UPLOAD + 1)
            try:
                attached.append(await run_in_threadpool(scans.prepare, key[5:], value.filename, raw))
            except scans.ScanError as exc:
                raise cases.IntakeError({key: str(exc)}) from exc
    return attached


async def api_scans(request: Request, payload: dict[str, Any]) -> list[scans.Scan] | Response:
    """The scans of an API body (``scans``: ``[{material, name, data_base64}]``), prepared off the
    event loop, or the 422 answer naming the first refused one."""
    attached = []
    for i, scan in enumerate(payload.get("scans") if isinstance(payload.get("scans"), list) else []):
        try:
            raw = base64.b64decode(str(scan.get("data_base64", "")), validate=True)
            attached.append(await run_in_threadpool(scans.prepare, str(scan.get("material", "")),
                                                    str(scan.get("name", "")), raw))
        except (ValueError, AttributeError, binascii.Error):
            return api_error(422, "invalid", f"scans[{i}] needs material, name and data_base64",
                             {f"scans[{i}]": "needs material, name and data_base64 (strings)"})
        except scans.ScanError as exc:
            return api_error(422, "invalid", gettext_for(locale_of(request))(str(exc)), {f"scans[{i}]": str(exc)})
    return attached


FORM = "form:"      # scope of the intake form's tokens in idempotency_keys, per agent; the API's is "api:"


async def _apply(request: Request, user: dict[str, Any], st: Station, form: Any, token: str,
                 case_id: str | None = None) -> Response:
    data: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str) and k != "materials"}
    data["materials"] = form.getlist("materials")
    completing = await run_in_threadpool(st.store.application, case_id) if case_id else None
    if case_id and completing is None:
        raise HTTPException(404, N_("No such application at this station."))
    code = completing["item_code"] if completing else request.path_params["code"]
    try:
        attached = await form_scans(form)
        app = await run_in_threadpool(st.take, code, data, str(form.get("decision", "")), user["name"], attached,
                                      within=idem.claimer(FORM + user["username"], token, "form"), case_id=case_id)
    except idem.Replay as first:    # the same form sent twice at once: the other request recorded it
        return RedirectResponse(f"/applications/{first.row['app_id']}/document", 303)
    except cases.IntakeError as exc:
        item = await run_in_threadpool(st.item, code)
        if item is None:
            raise HTTPException(404, N_("This service item is not in the station's catalogue.")) from exc
        departments = await run_in_threadpool(st.department_names)
        return render(request, "node/apply.html", 422, st=st, item=item, form=data, errors=exc.errors,
                      departments=departments, submit_token=token, completing=completing)
    return RedirectResponse(f"/applications/{app['id']}/document", 303)


async def application_of(request: Request) -> tuple[Station, dict[str, Any]]:
    """The station and the application the path names, for a logged-in agent; else 303/404."""
    agent(request)
    st = station(request)
    app = await run_in_threadpool(st.store.application, request.path_params["id"])
    if app is None:
        raise HTTPException(404, N_("No such application at this station."))
    return st, app


async def application_page(request: Request, status: int = 200, errors: dict[str, str] | None = None,
                           form: dict[str, Any] | None = None) -> Response:
    st, app = await application_of(request)
    key = await run_in_threadpool(st.decision_key, app["id"]) if app["decision"] else None
    life = await run_in_threadpool(st.life, app)
    docs = await run_in_threadpool(documents.listing, st, app)
    extra = await run_in_threadpool(_history_and_rating, request, st, app)
    return render(request, "node/application.html", status, st=st, app=app, decision_key=key, life=life,
                  errors=errors or {}, form=form or {}, documents=docs, **extra)


def _history_and_rating(request: Request, st: Station, app: dict[str, Any]) -> dict[str, Any]:
    """``history``, ``rating`` and ``may_rate`` of a case (node/services/ratings.py), in the reader's language."""
    locale = locale_of(request)
    return {**ratings.page_json(st, app, gettext_for(locale), lambda r: reason_text(r, locale)),
            "may_rate": ratings.may_rate(st, app)}


def _document_parts(st: Station, app: dict[str, Any]) -> tuple[str, dict[str, dict[str, str]]]:
    return qr_svg(verification_text(st, app)), st.department_names()


def verify_check(request: Request, text: Any) -> dict[str, Any]:
    """Check a document's QR text or typed code here (node/services/verify.py). Blocking."""
    return doc_verify.check(station(request), text)


async def document(request: Request) -> Response:
    st, app = await application_of(request)
    qr, departments = await run_in_threadpool(_document_parts, st, app)
    return render(request, "node/document.html", official=True, st=st, app=app, body=app["body"], qr=qr,
                  departments=departments,
                  appeal=await run_in_threadpool(documents.catalog_appeal, st),
                  verify_code=doc_verify.verify_code(app),
                  item=await run_in_threadpool(st.item, app["item_code"]), contact=await run_in_threadpool(st.contact))


async def hand_out(request: Request) -> Response:
    """统一窗口出件: who collected (the applicant, or a proxy with name, ID number and relation) and
    that their identity document was checked."""
    user = agent(request)
    form = await form_of(request)
    collector = None
    if form.get("collector") == "proxy":
        collector = {k: str(form.get("proxy_" + k, "")) for k in ("name", "id_number", "relation")}
    try:
        await run_in_threadpool(station(request).hand_out, request.path_params["id"], user["name"], collector,
                                form.get("identity_checked") == "1")
    except cases.IntakeError as exc:
        status = 409 if "application" in exc.errors else 422
        return await application_page(request, status, exc.errors, dict(form))
    return RedirectResponse("/?m=handed_out", 303)


async def supplement(request: Request) -> Response:
    """补正: the materials the citizen brought after the county's correction request, their scans
    and a note; the same case goes up again as a supplement."""
    user = agent(request)
    st = station(request)
    async with upload_form(request) as form:
        try:
            attached = await form_scans(form)
            await run_in_threadpool(st.supplement, request.path_params["id"],
                                    [str(m) for m in form.getlist("materials")], attached,
                                    str(form.get("note", "")), user["name"])
        except cases.IntakeError as exc:
            return await application_page(request, 409 if "application" in exc.errors else 422, exc.errors,
                                          {"note": str(form.get("note", "")),
                                           "materials": [str(m) for m in form.getlist("materials")]})
    return RedirectResponse(f"/applications/{request.path_params['id']}?m=supplemented", 303)


async def correction_document(request: Request) -> Response:
    """材料补正通知书: everything the county's correction request asks for, at once, in the
    deciding department's name, for the citizen to take home."""
    st, app = await application_of(request)
    if app["status"] != Status.CORRECTION_REQUESTED:       # the notice of the round the citizen must answer now
        raise HTTPException(404, N_("The county has not asked for corrections on this case."))
    life = await run_in_threadpool(st.life, app)
    departments = await run_in_threadpool(st.department_names)
    qr = await run_in_threadpool(_decision_qr, st, app)
    return render(request, "node/correction_document.html", official=True, st=st, app=app, life=life,
                  departments=departments, contact=await run_in_threadpool(st.contact), **qr)


def _decision_qr(st: Station, app: dict[str, Any]) -> dict[str, str | None]:
    """``qr`` (the SVG), ``qr_text`` and ``verify_code`` of the county's written decision on ``app``
    as the station prints it (材料补正通知书, 办结通知书, 不予批准决定书). Blocking."""
    return _printed_qr(doc_verify.decision_printed(st, app, documents.decision_event(st, app)))


def _printed_qr(printed: dict[str, str | None]) -> dict[str, str | None]:
    """A document's ``qr_text`` and ``verify_code`` with ``qr``, its SVG (None without a text)."""
    return {**printed, "qr": qr_svg(printed["qr_text"]) if printed["qr_text"] else None}


def _sync_quietly(st: Station) -> None:
    """One sync in a worker thread, for a station without a background loop; errors land in
    ``_sync_status`` (the page shows them) and the log."""
    try:
        st.sync()
    except Exception as exc:  # noqa: BLE001 - a thread of its own: log, the page shows the state
        logger.warning("sync from page failed: %s", exc)


def sync_running(request: Request) -> bool:
    """A sync the agent can wait for is going on (or was just asked for)."""
    loop = getattr(request.app.state, "sync_loop", None)
    thread = getattr(request.app.state, "sync_thread", None)
    return bool(loop is not None and loop.busy) or bool(thread is not None and thread.is_alive())


async def sync_now(request: Request) -> Response:
    """Start a sync and return at once: the background loop is woken (or, without one, a worker
    thread runs one sync). The page then shows "syncing now" and reloads until it is over."""
    agent(request)
    await form_of(request)
    loop = getattr(request.app.state, "sync_loop", None)
    if loop is not None:
        loop.wake()
    elif not sync_running(request):
        thread = threading.Thread(target=_sync_quietly, args=(station(request),), name="lastmile-sync-now",
                                  daemon=True)
        request.app.state.sync_thread = thread
        thread.start()
    return RedirectResponse("/?m=syncing", 303)


def verification_text(st: Station, app: dict[str, Any]) -> str:
    """What the QR code on a document carries: readable lines and the signed token (node/services/verify.py)."""
    return doc_verify.qr_text(st, app) or app["receipt_no"]


# JSON API ----------------------------------------------------------------------
def _api_user(request: Request) -> dict[str, Any]:
    return bearer_user(request, station(request).store.user_by_token)


async def api_user(request: Request) -> dict[str, Any]:
    """The API user of the bearer token (looked up in a worker thread), or 401."""
    return await run_in_threadpool(_api_user, request)


def app_json(st: Station, app: dict[str, Any]) -> dict[str, Any]:
    body = app["body"] if isinstance(app["body"], dict) else {}
    return {"id": app["id"], "receipt_no": app["receipt_no"], "status": app["status"], "item_code": app["item_code"],
            "item_name": app["item_name"], "applicant_name": app["applicant_name"], "created_at": app["created_at"],
            "promised_date": app["promised_date"] or None, "missing": body.get("missing", []),
            "promised_provisional": st.calendar().promised_provisional(app["created_at"], app["promised_date"]),
            "county_received_at": app["county_received_at"],
            "decision": documents.decision_json(st, app), "documents": documents.listing(st, app),
            "handed_out_at": app["handed_out_at"],
            "qr_text": doc_verify.qr_text(st, app), "verify_code": doc_verify.verify_code(app),
            "scans": [{"sha256": x["sha256"], "material": x["material"], "name": x["name"], "size": x["size"],
                       "uploaded": bool(x["done"])} for x in st.store.scans_of(app["id"])],
            **bundles.link_json(body),
            **st.life(app)}


async def api_catalog(request: Request) -> Response:
    await api_user(request)
    st = station(request)
    q = request.query_params.get("q", "")
    version, items = await run_in_threadpool(lambda: (st.store.catalog()["version"], search.items(st.items(), q)))
    offered = await run_in_threadpool(lambda: [{k: v for k, v in b.items() if k != "item_list"}
                                               for b in (bundles.find(st, q) if q.strip() else bundles.offered(st))])
    return JSONResponse({"version": version, "level": st.level, "items": items, "bundles": offered})


def _replayed(request: Request, st: Station, first: dict[str, Any], fingerprint: str) -> Response:
    """The answer to a repeat of an Idempotency-Key: the first answer, or 422 if the request differs."""
    if first["fingerprint"] != fingerprint:
        return api_error(422, "idempotency_key_reused", gettext_for(locale_of(request))(N_(
            "This Idempotency-Key was already used for a different application; use a new key for a new one.")),
            {"id": first["app_id"]})
    app = st.store.application(first["app_id"])
    body = json.loads(first["response"]) if first["response"] else app_json(st, app) if app else None
    if body is None:
        return api_error(404, "not_found", "No such application at this station.")
    return JSONResponse(body, 201, headers={"idempotent-replayed": "true"})


async def api_create(request: Request) -> Response:
    user = await api_user(request)
    key = request.headers.get("idempotency-key")
    if key is not None and not idem.valid_api_key(key):
        return api_error(400, "invalid_idempotency_key", gettext_for(locale_of(request))(N_(
            "An Idempotency-Key is 1 to 100 printable ASCII characters.")))
    payload = await json_object(request)
    if "items" in payload:          # 一件事一次办: several items at one sitting (node/http/sittings.py)
        from node.http import sittings as bundle_views
        return await bundle_views.api_create(request, user, payload, key)
    st = station(request)
    scope, fingerprint = "api:" + user["username"], idem.fingerprint(payload)
    first = await run_in_threadpool(idem.find, st.store, scope, key) if key is not None else None
    if first is not None:
        return await run_in_threadpool(_replayed, request, st, first, fingerprint)
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
        return await run_in_threadpool(_replayed, request, st, exc.row, fingerprint)
    except cases.IntakeError as exc:
        details = api_names(exc.errors, gettext_for(locale_of(request)))
        return api_error(422, "invalid", " ".join(details.values()), details)
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




def _intake_refusal(request: Request, exc: cases.IntakeError) -> Response:
    """An IntakeError as the API's answer: 409 when the case's state forbids it, else 422."""
    details = api_names(exc.errors, gettext_for(locale_of(request)))
    status = 409 if "application" in exc.errors else 422
    return api_error(status, "conflict" if status == 409 else "invalid", " ".join(details.values()), details)


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
        if exc.errors.get("application") == "No such application at this station.":
            return api_error(404, "not_found", "No such application at this station.")
        return _intake_refusal(request, exc)
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
        if exc.errors.get("application") == "No such application at this station.":
            return api_error(404, "not_found", "No such application at this station.")
        return _intake_refusal(request, exc)
    return JSONResponse(await run_in_threadpool(app_json, st, app))


def _search(st: Station, q: str) -> dict[str, Any]:
    return {"applications": search.applications(st.store, q), "items": search.items(st.items(), q) if q.strip() else [],
            "bundles": bundles.find(st, q)}


async def search_page(request: Request) -> Response:
    """One box for everything: a returning citizen's cases and the service items."""
    agent(request)
    st = station(request)
    q = request.query_params.get("q", "")
    found = await run_in_threadpool(_search, st, q)
    return render(request, "node/search.html", st=st, q=q, **found)


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


# 办不成事 reports ---------------------------------------------------------------------------------

async def report_form(request: Request) -> Response:
    agent(request)
    st = station(request)
    items = await run_in_threadpool(st.items)
    return render(request, "node/report_form.html", st=st, items=items, form={}, errors={})


async def report_submit(request: Request) -> Response:
    user = agent(request)
    form = dict(await form_of(request))
    st = station(request)
    try:
        r = await run_in_threadpool(reports.file, st, form, user["name"])
    except cases.IntakeError as exc:
        items = await run_in_threadpool(st.items)
        return render(request, "node/report_form.html", 422, st=st, items=items, form=form, errors=exc.errors)
    return RedirectResponse(f"/reports/{r['id']}", 303)


async def report_page(request: Request) -> Response:
    agent(request)
    st = station(request)
    r = await run_in_threadpool(reports.report, st.store, request.path_params["id"])
    if r is None:
        raise HTTPException(404, N_("No such report at this station."))
    items = await run_in_threadpool(lambda: {i["code"]: i for i in st.store.catalog()["items"]})
    qr = await run_in_threadpool(lambda: _printed_qr(doc_verify.report_printed(st, r)))
    return render(request, "node/report.html", official=True, st=st, r=r, items=items,
                  contact=await run_in_threadpool(st.contact), **qr)


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
    except cases.IntakeError as exc:
        _ = gettext_for(locale_of(request))
        details = {k: _(v) for k, v in exc.errors.items()}
        return api_error(422, "invalid", " ".join(details.values()), details)
    return JSONResponse({**reports.as_json(r), **await run_in_threadpool(doc_verify.report_printed, st, r)}, 201)


async def api_report(request: Request) -> Response:
    """``GET /api/v1/reports/{id}``: the report, who at the county took it (``owner``) and the ``answer``."""
    await api_user(request)
    st = station(request)
    r = await run_in_threadpool(reports.report, st.store, request.path_params["id"])
    if r is None:
        return api_error(404, "not_found", "No such report at this station.")
    return JSONResponse({**reports.as_json(r), **await run_in_threadpool(doc_verify.report_printed, st, r)})
