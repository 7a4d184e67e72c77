"""Web plumbing node/ and central/ share: logins, CSRF-checked forms, language, error pages.

Both apps build their pages the same way and must not import each other, so it lives here,
beside the templates it renders.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any, Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from templates import LOCALES, N_, check_csrf, gettext_for, locale_of, render

logger = logging.getLogger("lastmile.web")

Authenticate = Callable[[Request, str, str], "dict[str, Any] | None"]


def api_error(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    """The one JSON error shape: {"error", "message", "details"}."""
    return JSONResponse({"error": code, "message": message, "details": details}, status)


async def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400/422 the error handler turns into JSON."""
    try:
        payload = await request.json()
    except ValueError as exc:
        raise HTTPException(400, N_("The request body is not valid JSON.")) from exc
    if not isinstance(payload, dict):
        raise HTTPException(422, N_("The request body must be a JSON object."))
    return payload


def bearer_user(request: Request, lookup: Callable[[str], "dict[str, Any] | None"]) -> dict[str, Any]:
    """The API user named by ``Authorization: Bearer <token>``, or 401."""
    auth = request.headers.get("authorization", "")
    user = lookup(auth[7:]) if auth.lower().startswith("bearer ") else None
    if not user:
        raise HTTPException(401, N_("A valid bearer token is required."))
    return user


def session_user(request: Request) -> dict[str, Any]:
    """The logged-in user, or a redirect to the login page."""
    user = request.session.get("user")
    if not user:
        raise HTTPException(303, headers={"location": "/login"})
    return user  # type: ignore[no-any-return]


async def checked_form(request: Request) -> Any:
    """The posted form, if it carries this session's CSRF token."""
    form = await request.form()
    if not check_csrf(request, form):
        raise HTTPException(400, N_("The page expired; please go back, reload and try again."))
    return form


def session_routes(template: str, authenticate: Authenticate,
                   context: Callable[[Request], dict[str, Any]] = lambda request: {}) -> list[Route]:
    """/login (GET, POST), /logout and /lang/{locale}."""

    async def login_page(request: Request) -> Response:
        return render(request, template, error=None, **context(request))

    async def login(request: Request) -> Response:
        form = await checked_form(request)
        username, password = str(form.get("username", "")), str(form.get("password", ""))
        user = await run_in_threadpool(authenticate, request, username, password)
        if not user:
            logger.info("failed login for %r", username)
            return render(request, template, 401, error=gettext_for(locale_of(request))(
                N_("Wrong user name or password.")), **context(request))
        request.session["user"] = user
        return RedirectResponse("/", 303)

    async def logout(request: Request) -> Response:
        await checked_form(request)
        request.session.pop("user", None)
        return RedirectResponse("/login", 303)

    async def set_language(request: Request) -> Response:
        if request.path_params["locale"] in LOCALES:
            request.session["lang"] = request.path_params["locale"]
        return RedirectResponse(request.headers.get("referer") or "/", 303)

    return [Route("/login", login_page), Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]), Route("/lang/{locale}", set_language)]


def error_handler(json_prefixes: tuple[str, ...]) -> Callable[[Request, Exception], Awaitable[Response]]:
    """HTTPException → a redirect (303), JSON under ``json_prefixes``, else the error page."""

    async def handle(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 303:
            return RedirectResponse((exc.headers or {})["location"], 303)
        if request.url.path.startswith(json_prefixes):
            return api_error(exc.status_code, "http_%d" % exc.status_code, str(exc.detail))
        _ = gettext_for(locale_of(request))
        return render(request, "error.html", exc.status_code, message=_(str(exc.detail)))
    return handle


def session_secret(path: Path) -> str:
    """The key that signs session cookies, made on first use: mode 0600 from its first byte,
    whatever the umask (an existing one is tightened to 0600)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        path.chmod(0o600)
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path.read_text().strip()
