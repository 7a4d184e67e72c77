"""The station's Starlette app: routes, lifespan (store + background sync), error handlers."""

from __future__ import annotations

import contextlib
import logging
import secrets
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from node import views
from node.station import Settings, Station
from templates import gettext_for, locale_of, render, static_dir

logger = logging.getLogger("lastmile.node")

ROUTES = [
    Route("/login", views.login_page), Route("/login", views.login, methods=["POST"]),
    Route("/logout", views.logout, methods=["POST"]), Route("/lang/{locale}", views.set_language),
    Route("/", views.home), Route("/apply/{code}", views.apply_form),
    Route("/apply/{code}", views.apply_submit, methods=["POST"]),
    Route("/applications/{id}", views.application_page), Route("/applications/{id}/document", views.document),
    Route("/applications/{id}/handout", views.hand_out, methods=["POST"]),
    Route("/sync", views.sync_now, methods=["POST"]),
    Route("/api/v1/catalog", views.api_catalog), Route("/api/v1/status", views.api_status),
    Route("/api/v1/applications", views.api_create, methods=["POST"]),
    Route("/api/v1/applications/{id}", views.api_application),
    Route("/api/v1/sync", views.api_sync, methods=["POST"]),
    Mount("/static", StaticFiles(directory=static_dir()), name="static"),
]


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 303:
        return RedirectResponse(exc.headers["location"], 303)   # type: ignore[index]
    if request.url.path.startswith("/api/"):
        return views.api_error(exc.status_code, "http_%d" % exc.status_code, str(exc.detail))
    _ = gettext_for(locale_of(request))
    return render(request, "error.html", exc.status_code, message=_(str(exc.detail)))


def secret_key(settings: Settings) -> str:
    path = settings.data / "session.key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def create_app(settings: Settings, *, background_sync: bool = True) -> Starlette:
    station = Station(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loop = station.sync_loop() if background_sync else None
        if loop:
            loop.start()
        app.state.sync_loop = loop
        try:
            yield
        finally:
            if loop:
                loop.stop()
            station.store.close()

    app = Starlette(routes=ROUTES, lifespan=lifespan, exception_handlers={HTTPException: http_error},
                    middleware=[Middleware(SessionMiddleware, secret_key=secret_key(settings),
                                           session_cookie="lastmile_node", same_site="strict")])
    app.state.station = station
    return app
