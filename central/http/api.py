"""JSON API counterparts of county pages that had none (docs/ARCHITECTURE.md, "Page actions and
their API"): thin handlers over what the pages use."""

from __future__ import annotations

import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from central.services import permissions, selfcheck
from central.http import pages as views
from central.http.errors import refusal
from central.county import County
from central.errors import CountyError
from templates import gettext_for, locale_of, throttle
from templates.web import api_error

logger = logging.getLogger("lastmile.central")

STATION_KEYS = ("restore_until", "code", "name", "level", "status", "enrolled_at", "last_contact", "clock_skew_s", "up_waiting",
                "received", "down_waiting", "scans_missing", "down_have", "down_applied", "catalog_applied",
                "catalog_latest", "locked", "not_applying")


def _stations(c: County) -> dict[str, Any]:
    ctx = views._stations_context(c)
    return {"stations": [{k: s.get(k) for k in STATION_KEYS} for s in ctx["stations"]],
            "problems": ctx["problems"], "recoveries": ctx["recoveries"], "county_keys": ctx["county_keys"],
            "on_old_key": ctx["on_old_key"]}


async def api_stations(request: Request) -> Response:
    """``GET /api/v1/stations``: what the stations page shows: each station's state and sync counts,
    the sync problems, restores, the county's key history and who still uses an old key."""
    await views.api_user(request)
    return JSONResponse(await run_in_threadpool(_stations, views.county(request)))


async def api_scan(request: Request) -> Response:
    """``GET /api/v1/cases/{id}/scans/{sha}``: a scan of a case the caller may read, as the page
    shows it (JPEG or PDF, judged from the decrypted bytes); 404 before it arrived, 415 otherwise."""
    user = await views.api_user(request)
    c = views.county(request)
    case = await run_in_threadpool(views.readable_case, c, user, request.path_params["id"])
    found = await run_in_threadpool(c.scan_bytes, case, request.path_params["sha"])
    if found is None:
        return api_error(404, "not_found", gettext_for(locale_of(request))("This scan has not arrived yet."))
    data, mime = found
    if mime is None:
        logger.warning("scan %s of case %s is neither JPEG nor PDF; not served", request.path_params["sha"][:12],
                       case["id"])
        return api_error(415, "unsupported_scan", gettext_for(locale_of(request))(
            "This scan is neither a JPEG image nor a PDF, so it is not shown."))
    return Response(data, media_type=mime, headers={"cache-control": "private, no-store",
                                                    "x-content-type-options": "nosniff"})


def _mark(c: County, code: str, user: dict[str, Any]) -> dict[str, Any]:
    permissions.check_mark_restored(user)           # one check for the page and the API
    mark = c.mark_restored(code, user["username"])
    logger.warning("station %s marked restored by %s", code, user["username"])
    return mark


async def mark_restored_page(request: Request) -> Response:
    """``POST /stations/{code}/restore`` from the stations page (supervisors): the county gives the
    station its own records back at its next sync, once, within 24 hours."""
    user = views.clerk(request)
    await views.form_of(request)                      # the session's CSRF token, or 403
    try:
        await run_in_threadpool(_mark, views.county(request), request.path_params["code"], user)
    except CountyError as exc:
        return views.render(request, "central/stations.html", exc.status, supervisor=True, error=exc.text(
            gettext_for(locale_of(request))), **await run_in_threadpool(views._stations_context, views.county(request)))
    return RedirectResponse("/stations?m=restore_marked", 303)


def _run_selfcheck(c: County, user: dict[str, Any]) -> dict[str, Any] | None:
    permissions.check_run_selfcheck(user)           # one check for the page and the API
    logger.info("log self-check started by %s", user["username"])
    return c.self_check()


async def selfcheck_page(request: Request) -> Response:
    """``POST /selfcheck`` from the stations page (supervisors): walk every log now."""
    user = views.clerk(request)
    await views.form_of(request)                      # the session's CSRF token, or 403
    await run_in_threadpool(_run_selfcheck, views.county(request), user)
    return RedirectResponse("/stations?m=selfcheck#selfcheck", 303)


async def api_selfcheck(request: Request) -> Response:
    """``GET /api/v1/selfcheck``: the last log self-check's result (null before the first);
    ``POST`` (supervisors): run one now and answer its result."""
    user = await views.api_user(request)
    c = views.county(request)
    if request.method == "POST":
        return JSONResponse(await run_in_threadpool(_run_selfcheck, c, user))
    return JSONResponse(await run_in_threadpool(selfcheck.last, c.store))


async def api_mark_restored(request: Request) -> Response:
    """``POST /api/v1/stations/{code}/restore`` (supervisors): the same as the page's button;
    answers the mark ``{"station", "at", "until", "by", "served"}``."""
    user = await views.api_user(request)
    try:
        mark = await run_in_threadpool(_mark, views.county(request), request.path_params["code"], user)
    except CountyError as exc:
        return refusal(request, exc)
    return JSONResponse(mark)


async def api_user_unlock(request: Request) -> Response:
    """``POST /api/v1/users/{username}/unlock`` (supervisors): forget the wrong passwords counted for
    an account, so its next login is checked at once (templates/throttle.py). The county's way out
    when someone's guessing slows a clerk down; ``lastmile central user unlock`` does the same."""
    user = await views.api_user(request)
    if user.get("role") != "supervisor":
        return api_error(403, "forbidden", gettext_for(locale_of(request))(
            "Only a supervisor can clear the login count of an account."))
    c, username = views.county(request), request.path_params["username"]
    if await run_in_threadpool(c.session_user, username) is None:
        return api_error(404, "not_found", gettext_for(locale_of(request))("No such user."))
    had = await run_in_threadpool(throttle.release, c.store, username)
    logger.info("%r cleared the login count of %r", user.get("username"), username)
    return JSONResponse({"username": username, "cleared": had})
