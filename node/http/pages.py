"""The station's pages: parse the form or the query, call one service of the station, render the page."""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from node.http.errors import status_of
from node.http.common import (FORM, agent, application_of, form_of, form_scans, form_submission, printed_qr,
                              station, today_lists)
from node.services import cases, documents, idem, ratings, reports, search, sittings
from node.services import verify as doc_verify
from node.station import Station
from sync.law.transitions import Status
from templates import N_, csrf_token, gettext_for, locale_of, reason_text, render
from templates.web import upload_form

logger = logging.getLogger("lastmile.node")



def _home_context(st: Station) -> dict[str, Any]:
    """Everything the home page shows, read from the store (in a worker thread, never on the loop)."""
    recent = st.store.applications(limit=20)
    return {"sync": st.sync_state(), **today_lists(st), "recent": recent, "lives": {a["id"]: st.life(a) for a in recent},
            "items": st.items(), "bundles": sittings.offered(st), "station_code": st.code}


async def today(request: Request) -> Response:
    """The start page's "today" lists as an HTML fragment with a stamp: the page's script asks every
    few seconds and swaps the lists in when the stamp changes, so results that sync brings down
    appear without a reload (everything is local: no internet needed)."""
    agent(request)
    st = station(request)
    context = await run_in_threadpool(today_lists, st)
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


async def apply_submit(request: Request) -> Response:
    user = agent(request)
    st = station(request)
    async with upload_form(request) as form:
        token, first = await form_submission(request, st, user, form)
        if first is not None:       # a double click, the back button: the receipt of the first submission
            return RedirectResponse(f"/applications/{first['app_id']}/document", 303)
        return await _apply(request, user, st, form, token, request.path_params.get("id"))


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
        return await application_page(request, status_of(exc), exc.errors, dict(form))
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
            return await application_page(request, status_of(exc), exc.errors,
                                          {"note": str(form.get("note", "")),
                                           "materials": [str(m) for m in form.getlist("materials")]})
    return RedirectResponse(f"/applications/{request.path_params['id']}?m=supplemented", 303)


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


def _search(st: Station, q: str) -> dict[str, Any]:
    return {"applications": search.applications(st.store, q), "items": search.items(st.items(), q) if q.strip() else [],
            "bundles": sittings.find(st, q)}


async def search_page(request: Request) -> Response:
    """One box for everything: a returning citizen's cases and the service items."""
    agent(request)
    st = station(request)
    q = request.query_params.get("q", "")
    found = await run_in_threadpool(_search, st, q)
    return render(request, "node/search.html", st=st, q=q, **found)


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
    qr = await run_in_threadpool(lambda: printed_qr(doc_verify.report_printed(st, r)))
    return render(request, "node/report.html", official=True, st=st, r=r, items=items,
                  contact=await run_in_threadpool(st.contact), **qr)
