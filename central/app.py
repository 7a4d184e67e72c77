"""The county centre's Starlette app, the composition root: routes (central/http/), lifespan, middleware,
error handlers, and the ``County`` they all serve (central/county.py)."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from central.county import County, Settings
from central.http import api, documents, openapi, pages, ratings, settings as settings_pages
from central.services import calendar, selfcheck
from central.services import verify as doc_verify
from crypto import envelope
from sync import blobs
from templates import static_dir
from templates.limits import KiB, MiB, BodyLimit, ByteBudget, ReadTimeout, Rule, SecurityHeaders, upload_bound
from templates.openapi import route as openapi_route
from templates.verify_web import verify_routes
from templates.web import SecureCookies, SessionGuard, error_handler, session_routes, session_secret
from templates.workcal import WorkCalendarState

ROUTES = [
    Route("/sync/v1/exchange", pages.sync_exchange, methods=["POST"]),
    Route("/sync/v1/blobs/{sha}", pages.scan_head, methods=["HEAD"]),
    Route("/sync/v1/blobs/{sha}", pages.scan_patch, methods=["PATCH"]),
    Route("/sync/v1/docs/{sha}", documents.doc_get),
    Route("/enroll/v2/county", pages.enroll_county),
    Route("/enroll/v2", pages.enroll, methods=["POST"]),
    *session_routes("login.html", pages.authenticate, accounts=pages.accounts,
                    throttle_store=lambda request: pages.county(request).store),
    Route("/", pages.queue), Route("/cases/{id}", pages.case_page),
    Route("/cases/{id}/decision", pages.decide_page, methods=["POST"]),
    Route("/cases/{id}/scans/{sha}", pages.scan_view),
    Route("/stations", pages.stations_page),
    Route("/stations/{code}/restore", api.mark_restored_page, methods=["POST"]),
    Route("/api/v1/stations/{code}/restore", api.api_mark_restored, methods=["POST"]),
    Route("/selfcheck", api.selfcheck_page, methods=["POST"]),
    Route("/api/v1/selfcheck", api.api_selfcheck, methods=["GET", "POST"]),
    Route("/reports", pages.reports_page),
    Route("/reports/{id}/{action:str}", pages.report_action, methods=["POST"]),
    Route("/api/v1/reports", pages.api_reports),
    Route("/api/v1/reports/{id}/{action:str}", pages.api_report_action, methods=["POST"]),
    Route("/api/v1/cases", pages.api_cases), Route("/api/v1/cases/{id}", pages.api_case),
    Route("/api/v1/cases/{id}/decision", pages.api_decide, methods=["POST"]),
    Route("/api/v1/cases/{id}/scans/{sha}", api.api_scan), Route("/api/v1/stations", api.api_stations),
    Route("/api/v1/users/{username}/unlock", api.api_user_unlock, methods=["POST"]),
    Route("/ratings", ratings.ratings_page),
    Route("/ratings/{case_id}/answer", ratings.answer_page, methods=["POST"]),
    Route("/api/v1/ratings", ratings.api_ratings),
    Route("/api/v1/ratings/{case_id}/answer", ratings.api_answer, methods=["POST"]),
    *verify_routes(lambda request, text: doc_verify.check(pages.county(request), text),
                   lambda request: pages.county(request).name, lambda request: pages.county(request).me.sign),
    Route("/api/v1/calendar/{year}", pages.api_calendar, methods=["GET", "PUT"]),
    openapi_route(openapi.DOCUMENT),
    Route("/api/v1/settings/retention", settings_pages.api_retention, methods=["GET", "PUT"]),
    Mount("/static", StaticFiles(directory=static_dir()), name="static"),
]

# Every route reads at most 64 KiB of body, except these (templates/limits.py).
BODY_LIMITS = [
    Rule("POST", "/sync/v1/exchange", envelope.MAX_ENVELOPE, code="envelope_too_large"),
    Rule("PATCH", "/sync/v1/blobs/[0-9a-f]{64}", upload_bound(blobs.MAX_SEALED)),
    Rule("POST", "/enroll/v2", 16 * KiB),
    Rule("POST", "/cases/[^/]+/decision", 96 * MiB),              # result documents: 10 × 8 MiB
    Rule("POST", "/api/v1/cases/[^/]+/decision", 112 * MiB),       # … as base64
]


class QuietSyncAccess(logging.Filter):
    """Drops uvicorn's access line of a station's answered sync (``POST /sync/v1/exchange`` 200),
    unless the access log is at DEBUG: each station syncs every few seconds, and the county's own
    ``sync`` line (central/county.py) already says, at INFO, each one that moved something. A
    refused or failed sync keeps its access line."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (isinstance(args, tuple) and len(args) >= 5 and args[1] == "POST" and args[2] == "/sync/v1/exchange"
                and args[4] == 200):
            return logging.getLogger("uvicorn.access").isEnabledFor(logging.DEBUG)
        return True


def create_app(settings: Settings) -> Starlette:
    county = County(settings)
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, QuietSyncAccess) for f in access.filters):
        access.addFilter(QuietSyncAccess())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        checker = None
        if settings.selfcheck_every_s > 0:      # the log self-check, in the background (central/services/selfcheck.py)
            checker = selfcheck.Every(county.self_check, settings.selfcheck_first_s, settings.selfcheck_every_s)
            checker.start()
        try:
            yield
        finally:
            if checker is not None:
                checker.stop.set()
                checker.join(timeout=30)
            county.store.close()

    app = Starlette(routes=ROUTES, lifespan=lifespan, exception_handlers={HTTPException: error_handler(("/api/", "/sync/", "/enroll/"))},
                    middleware=[Middleware(SecureCookies), Middleware(SessionMiddleware, secret_key=session_secret(settings.data / "session.key"),
                                           session_cookie="lastmile_central", same_site="strict"),
                                Middleware(SessionGuard, accounts=pages.accounts),
                                Middleware(ratings.OpenFollowUps, county=lambda: county),
                                Middleware(SecurityHeaders), Middleware(ReadTimeout), Middleware(BodyLimit, rules=BODY_LIMITS),
                                Middleware(WorkCalendarState, load=lambda: calendar.calendar_of(county),
                                           today=settings.calendar_today, warn_roles=("supervisor",))])
    app.state.county = county
    app.state.sync_slots = threading.BoundedSemaphore(settings.max_concurrent_syncs)
    app.state.unverified = ByteBudget(settings.max_unverified_bytes)   # pushes and enrolments before auth
    return app
