"""The county centre's Starlette app: routes, lifespan, error handlers."""

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

from central.http import api as apiviews, documents as docviews, ratings as rating_views, pages as views
from central.services import ratings, selfcheck
from central.county import County, Settings
from crypto import envelope
from sync import blobs
from templates import static_dir
from templates.limits import KiB, MiB, BodyLimit, ByteBudget, ReadTimeout, Rule, SecurityHeaders, upload_bound
from central.services import calendar
from central.http import settings as retention_views
from templates.workcal import WorkCalendarState
from templates.verify_web import verify_routes
from central.http import openapi
from templates.openapi import route as openapi_route
from central.services import verify as doc_verify
from templates.web import SecureCookies, SessionGuard, error_handler, session_routes, session_secret

ROUTES = [
    Route("/sync/v1/exchange", views.sync_exchange, methods=["POST"]),
    Route("/sync/v1/blobs/{sha}", views.scan_head, methods=["HEAD"]),
    Route("/sync/v1/blobs/{sha}", views.scan_patch, methods=["PATCH"]),
    Route("/sync/v1/docs/{sha}", docviews.doc_get),
    Route("/enroll/v2/county", views.enroll_county),
    Route("/enroll/v2", views.enroll, methods=["POST"]),
    *session_routes("login.html", views.authenticate, accounts=views.accounts,
                    throttle_store=lambda request: views.county(request).store),
    Route("/", views.queue), Route("/cases/{id}", views.case_page),
    Route("/cases/{id}/decision", views.decide_page, methods=["POST"]),
    Route("/cases/{id}/scans/{sha}", views.scan_view),
    Route("/stations", views.stations_page),
    Route("/stations/{code}/restore", apiviews.mark_restored_page, methods=["POST"]),
    Route("/api/v1/stations/{code}/restore", apiviews.api_mark_restored, methods=["POST"]),
    Route("/selfcheck", apiviews.selfcheck_page, methods=["POST"]),
    Route("/api/v1/selfcheck", apiviews.api_selfcheck, methods=["GET", "POST"]),
    Route("/reports", views.reports_page),
    Route("/reports/{id}/{action:str}", views.report_action, methods=["POST"]),
    Route("/api/v1/reports", views.api_reports),
    Route("/api/v1/reports/{id}/{action:str}", views.api_report_action, methods=["POST"]),
    Route("/api/v1/cases", views.api_cases), Route("/api/v1/cases/{id}", views.api_case),
    Route("/api/v1/cases/{id}/decision", views.api_decide, methods=["POST"]),
    Route("/api/v1/cases/{id}/scans/{sha}", apiviews.api_scan), Route("/api/v1/stations", apiviews.api_stations),
    Route("/api/v1/users/{username}/unlock", apiviews.api_user_unlock, methods=["POST"]),
    Route("/ratings", rating_views.ratings_page),
    Route("/ratings/{case_id}/answer", rating_views.answer_page, methods=["POST"]),
    Route("/api/v1/ratings", rating_views.api_ratings),
    Route("/api/v1/ratings/{case_id}/answer", rating_views.api_answer, methods=["POST"]),
    *verify_routes(lambda request, text: doc_verify.check(views.county(request), text),
                   lambda request: views.county(request).name, lambda request: views.county(request).me.sign),
    Route("/api/v1/calendar/{year}", views.api_calendar, methods=["GET", "PUT"]),
    openapi_route(openapi.DOCUMENT),
    Route("/api/v1/settings/retention", retention_views.api_retention, methods=["GET", "PUT"]),
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
                                Middleware(SessionGuard, accounts=views.accounts),
                                Middleware(ratings.OpenFollowUps, county=lambda: county),
                                Middleware(SecurityHeaders), Middleware(ReadTimeout), Middleware(BodyLimit, rules=BODY_LIMITS),
                                Middleware(WorkCalendarState, load=lambda: calendar.calendar_of(county),
                                           today=settings.calendar_today, warn_roles=("supervisor",))])
    app.state.county = county
    app.state.sync_slots = threading.BoundedSemaphore(settings.max_concurrent_syncs)
    app.state.unverified = ByteBudget(settings.max_unverified_bytes)   # pushes and enrolments before auth
    return app
