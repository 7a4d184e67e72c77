"""The county centre's Starlette app: routes, lifespan, error handlers."""

from __future__ import annotations

import contextlib
import secrets
import threading
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from central import views
from central.county import County, Settings
from templates import gettext_for, locale_of, render, static_dir

ROUTES = [
    Route("/sync/v1/exchange", views.sync_exchange, methods=["POST"]),
    Route("/sync/v1/blobs/{sha}", views.scan_head, methods=["HEAD"]),
    Route("/sync/v1/blobs/{sha}", views.scan_patch, methods=["PATCH"]),
    Route("/enroll/v1", views.enroll, methods=["POST"]),
    Route("/login", views.login_page), Route("/login", views.login, methods=["POST"]),
    Route("/logout", views.logout, methods=["POST"]), Route("/lang/{locale}", views.set_language),
    Route("/", views.queue), Route("/cases/{id}", views.case_page),
    Route("/cases/{id}/decision", views.decide_page, methods=["POST"]),
    Route("/cases/{id}/scans/{sha}", views.scan_view),
    Route("/stations", views.stations_page),
    Route("/api/v1/cases", views.api_cases), Route("/api/v1/cases/{id}", views.api_case),
    Route("/api/v1/cases/{id}/decision", views.api_decide, methods=["POST"]),
    Mount("/static", StaticFiles(directory=static_dir()), name="static"),
]


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 303:
        return RedirectResponse(exc.headers["location"], 303)   # type: ignore[index]
    if request.url.path.startswith(("/api/", "/sync/", "/enroll/")):
        return views.api_error(exc.status_code, "http_%d" % exc.status_code, str(exc.detail))
    return render(request, "error.html", exc.status_code, message=gettext_for(locale_of(request))(str(exc.detail)))


def secret_key(settings: Settings) -> str:
    path = settings.data / "session.key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def create_app(settings: Settings) -> Starlette:
    county = County(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            county.store.close()

    app = Starlette(routes=ROUTES, lifespan=lifespan, exception_handlers={HTTPException: http_error},
                    middleware=[Middleware(SessionMiddleware, secret_key=secret_key(settings),
                                           session_cookie="lastmile_central", same_site="strict")])
    app.state.county = county
    app.state.sync_slots = threading.BoundedSemaphore(settings.max_concurrent_syncs)
    return app
