"""The station's Starlette app: routes, lifespan (store + background sync), error handlers."""

from __future__ import annotations

import contextlib
import logging
import re
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from node.http import common, pages, staff
from node.http import api
from node.http import sittings
from node.http import printed
from node.services import idem
from node.http import logredact
from node.http import ratings
from node.http import locked
from node.settings import Settings
from node.station import Station
from templates import static_dir
from templates.limits import MiB, BodyLimit, ReadTimeout, Rule, SecurityHeaders
from templates.verify_web import verify_routes
from node.http import openapi
from templates.openapi import route as openapi_route
from templates.workcal import WorkCalendarState
from templates.web import SecureCookies, SessionGuard, error_handler, session_routes, session_secret

logger = logging.getLogger("lastmile.node")

ROUTES = [
    *session_routes("login.html", common.authenticate, lambda request: {"st": common.station(request)},
                    accounts=common.accounts),
    Route("/", pages.home), Route("/apply/{code}", pages.apply_form),
    Route("/apply/{code}", pages.apply_submit, methods=["POST"]),
    Route("/bundle/{code}", sittings.bundle_form),          # 一件事一次办 (node/services/sittings.py)
    Route("/bundle/{code}", sittings.bundle_submit, methods=["POST"]),
    Route("/applications/{id}/bundle-receipt", sittings.bundle_receipt),
    Route("/applications/{id}", pages.application_page), Route("/applications/{id}/document", printed.document),
    Route("/applications/{id}/handout", pages.hand_out, methods=["POST"]),
    Route("/applications/{id}/rate", ratings.rate_form),
    Route("/applications/{id}/rate", ratings.rate_submit, methods=["POST"]),
    Route("/api/v1/applications/{id}/rating", ratings.api_rate, methods=["POST"]),
    Route("/applications/{id}/complete", pages.complete_form),
    Route("/applications/{id}/complete", pages.apply_submit, methods=["POST"]),
    Route("/applications/{id}/supplement", pages.supplement, methods=["POST"]),
    Route("/applications/{id}/correction-notice", printed.correction_document),
    Route("/applications/{id}/decision-document", printed.decision_document),
    Route("/applications/{id}/attachments/{sha}", printed.attachment),
    Route("/sync", pages.sync_now, methods=["POST"]),
    Route("/api/v1/catalog", api.api_catalog), Route("/api/v1/status", api.api_status),
    Route("/api/v1/applications", api.api_create, methods=["POST"]),
    Route("/api/v1/applications", api.api_applications, methods=["GET"]),
    Route("/reports/new", pages.report_form), Route("/reports", pages.report_submit, methods=["POST"]),
    Route("/reports/{id}", pages.report_page),
    Route("/api/v1/reports", api.api_report_create, methods=["POST"]), Route("/api/v1/reports/{id}", api.api_report),
    Route("/search", pages.search_page), Route("/guide/{code}", pages.guide), Route("/today", pages.today),
    Route("/api/v1/applications/{id}", api.api_application),
    Route("/api/v1/applications/{id}/supplement", api.api_supplement, methods=["POST"]),
    Route("/api/v1/applications/{id}/handout", api.api_handout, methods=["POST"]),
    Route("/api/v1/applications/{id}/complete", api.api_complete, methods=["POST"]),
    Route("/api/v1/today", api.api_today),
    Route("/api/v1/sync", api.api_sync, methods=["POST"]),
    Route("/staff", staff.staff_page), Route("/staff", staff.staff_add, methods=["POST"]),
    Route("/staff/{username}/{action}", staff.staff_change, methods=["POST"]),
    Route("/api/v1/staff", staff.api_staff), Route("/api/v1/staff", staff.api_staff_add, methods=["POST"]),
    Route("/api/v1/staff/{username}/{action}", staff.api_staff_change, methods=["POST"]),
    *verify_routes(common.verify_check, lambda request: common.station(request).name),
    openapi_route(openapi.DOCUMENT),
    Mount("/static", StaticFiles(directory=static_dir()), name="static"),
]

# Every route reads at most 64 KiB of body, except those that take scans (templates/limits.py): each
# takes what intake takes (node/services/scans.py: up to 15 MB a file before downscaling, several files).
SCANS_BODY = 64 * MiB
BODY_LIMITS = [
    Rule("POST", "/apply/[^/]+", SCANS_BODY),
    Rule("POST", "/bundle/[^/]+", SCANS_BODY),
    Rule("POST", "/api/v1/applications", SCANS_BODY),
    Rule("POST", "/applications/[^/]+/(supplement|complete)", SCANS_BODY),               # 补正, 补齐材料
    Rule("POST", "/api/v1/applications/[^/]+/(supplement|complete)", SCANS_BODY),
]


def cookie_name(station_code: str) -> str:
    """The session cookie of this station: one per station code, since a browser keeps cookies per
    host, not per port (the demo's V001 and T001 on one 127.0.0.1 would log each other out); the
    county's is ``lastmile_central``. Only letters, digits and ``_`` (a cookie name is a token)."""
    return "lastmile_node_" + re.sub(r"[^A-Za-z0-9_]", "_", station_code)


def create_app(settings: Settings, *, background_sync: bool = True) -> Starlette:
    station = Station(settings)
    idem.create(station.store)
    logredact.install()         # no search words (names, ID numbers) in the access log

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loop = station.sync_loop() if background_sync else None
        if loop:
            loop.start()
            station.store.vault.on_unlock.append(loop.wake)      # node/vault.py: sync waits for the unlock
        app.state.sync_loop = loop
        try:
            yield
        finally:
            if loop:
                loop.stop()
            station.store.close()

    app = Starlette(routes=ROUTES, lifespan=lifespan, exception_handlers={HTTPException: error_handler(("/api/",)), **locked.HANDLERS},
                    middleware=[Middleware(SecureCookies), Middleware(SessionMiddleware, secret_key=session_secret(settings.data / "session.key"),
                                           session_cookie=cookie_name(station.code), same_site="strict"),
                                Middleware(SessionGuard, accounts=common.accounts),
                                Middleware(SecurityHeaders), Middleware(ReadTimeout), Middleware(BodyLimit, rules=BODY_LIMITS),
                                Middleware(WorkCalendarState, load=station.calendar)])
    app.state.station = station
    return app
