"""Web plumbing node/ and central/ share: logins, CSRF-checked forms, language, error pages.

Both apps build their pages the same way and must not import each other, so it lives here,
beside the templates it renders.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from contextlib import aclosing
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol

from starlette.concurrency import run_in_threadpool
from starlette.formparsers import MultiPartException, MultiPartParser, parse_options_header
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from templates import LOCALES, N_, check_csrf, gettext_for, locale_of, render
from templates.throttle import LoginThrottle, Transactional

logger = logging.getLogger("lastmile.web")

Authenticate = Callable[[Request, str, str], "dict[str, Any] | None"]


class Accounts(Protocol):
    """What the session plumbing needs of an app's user store (central's County, the node's Store)."""

    def session_user(self, username: str) -> dict[str, Any] | None: ...
    def end_sessions(self, username: str) -> None: ...


AccountsOf = Callable[[Request], Accounts]


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
    """The logged-in user, or a redirect to the login page. Fails closed: only a session that
    SessionGuard checked against the account on this request counts."""
    user = request.session.get("user")
    if not user or not request.scope.get("lastmile.session_checked"):
        raise HTTPException(303, headers={"location": "/login"})
    return user  # type: ignore[no-any-return]


MAX_FILES, MAX_FIELDS = 50, 500     # of one form with files: a sitting's scans, its items' fields
MAX_FIELD_BYTES = 1024 * 1024       # one text field of such a form (Starlette's own default, said here)


class InMemoryMultiPart(MultiPartParser):
    """Starlette's multipart parser with every file part kept in memory: its SpooledTemporaryFile
    gets ``max_size`` 0, which never rolls over to disk. Starlette's own parser spools a part over
    1 MiB in clear to a temporary file in TMPDIR, outside the vault, where a scan of an identity
    card would outlive the request on a stolen disk. The route's BodyLimit (node/app.py,
    central/app.py: at most 96 MiB) bounds what is held."""

    spool_max_size = 0


@contextlib.asynccontextmanager
async def upload_form(request: Request) -> AsyncIterator[Any]:
    """The posted multipart form of every page that takes files (intake, a sitting, a supplement, a
    station notice completed, a decision's result documents), with this session's CSRF token checked;
    the uploaded files are closed when the block ends. File parts stay in memory, never in a
    temporary file (``InMemoryMultiPart``); the route's BodyLimit bounds the whole body;
    ``max_part_size`` bounds only a text field. Use this, never a bare ``request.form()``, on a form
    with files, so that every such form takes what intake takes."""
    content_type, _ = parse_options_header(request.headers.get("content-type"))
    if content_type == b"multipart/form-data":
        try:
            async with aclosing(request.stream()) as stream:
                form = await InMemoryMultiPart(request.headers, stream, max_files=MAX_FILES, max_fields=MAX_FIELDS,
                                               max_part_size=MAX_FIELD_BYTES).parse()
        except MultiPartException as exc:
            raise HTTPException(400, exc.message) from exc
    else:                                   # no files can come any other way
        form = await request.form(max_files=MAX_FILES, max_fields=MAX_FIELDS, max_part_size=MAX_FIELD_BYTES)
    try:
        if not check_csrf(request, form):
            raise HTTPException(400, N_("The page expired; please go back, reload and try again."))
        yield form
    finally:
        await form.close()


async def checked_form(request: Request) -> Any:
    """The posted form, if it carries this session's CSRF token."""
    form = await request.form()
    if not check_csrf(request, form):
        raise HTTPException(400, N_("The page expired; please go back, reload and try again."))
    return form


def client_address(request: Request) -> str:
    """The client's address; behind a proxy trusted through uvicorn's ``--forwarded-allow-ips``
    (FORWARDED_ALLOW_IPS), the address the proxy reports."""
    return request.client.host if request.client else "?"


SESSION_ENDED = N_("You have been logged out: this account was disabled or its password changed, or it logged "
                   "out on another computer. Log in again; if you cannot, ask your administrator.")


def session_routes(template: str, authenticate: Authenticate,
                   context: Callable[[Request], dict[str, Any]] = lambda request: {},
                   accounts: AccountsOf | None = None,
                   throttle_store: Callable[[Request], Transactional] | None = None) -> list[Route]:
    """/login (GET, POST), /logout and /lang/{locale}. Every password check is counted first, in
    ``throttle_store``'s database (templates/throttle.py), by ``app.state.login_throttle`` (a
    LoginThrottle with the default rules unless set before)."""

    def throttle_of(request: Request) -> LoginThrottle:
        state = request.app.state
        if not isinstance(getattr(state, "login_throttle", None), LoginThrottle):
            state.login_throttle = LoginThrottle()
        return state.login_throttle  # type: ignore[no-any-return]

    def store_of(request: Request) -> Transactional:
        if throttle_store is not None:
            return throttle_store(request)
        return accounts(request) if accounts is not None else None  # type: ignore[return-value]

    async def login_page(request: Request) -> Response:
        error = None
        if request.session.get("ended"):            # set by SessionGuard; a login or logout clears it
            error = gettext_for(locale_of(request))(SESSION_ENDED)
        return render(request, template, error=error, **context(request))

    async def login(request: Request) -> Response:
        form = await checked_form(request)
        username, password = str(form.get("username", ""))[:200], str(form.get("password", ""))[:1000]
        address = client_address(request)
        _ = gettext_for(locale_of(request))
        limiter, store = throttle_of(request), store_of(request)
        # Counted before the hash is checked, in one transaction: concurrent guesses cannot all slip
        # through between a look at the count and its update (issue 15, finding 8).
        wait = await run_in_threadpool(limiter.admit, store, username, address)
        if wait:
            kind, seconds = wait
            retry = max(1, int(seconds + 0.999))
            logger.info("login for %r from %s slowed down: %s must wait %d s", username, address, kind, retry)
            message = (_(N_("Too many wrong passwords for this user name. Wait %(seconds)s seconds, then try again. "
                            "If you have forgotten your password, ask your administrator."), seconds=retry)
                       if kind == "name" else
                       _(N_("Too many wrong passwords from this computer. Wait %(seconds)s seconds, then try "
                            "again."), seconds=retry))
            page = render(request, template, 429, error=message, **context(request))
            page.headers["retry-after"] = str(retry)
            return page
        user = await run_in_threadpool(authenticate, request, username, password)
        if not user:
            logger.info("failed login for %r from %s", username, address)
            return render(request, template, 401, error=_(N_("Wrong user name or password.")), **context(request))
        await run_in_threadpool(limiter.succeeded, store, username, address)
        logger.info("login of %r from %s", username, address)
        lang = request.session.get("lang")
        request.session.clear()                     # a fresh session: new CSRF token, nothing carried over
        if lang:
            request.session["lang"] = lang
        request.session["csrf"] = secrets.token_urlsafe(24)
        request.session["user"] = user
        return RedirectResponse("/", 303)

    async def logout(request: Request) -> Response:
        await checked_form(request)
        user = request.session.get("user")
        if user and accounts is not None:
            await run_in_threadpool(accounts(request).end_sessions, str(user["username"]))
            logger.info("%r logged out; every session of the account ended", user["username"])
        lang = request.session.get("lang")
        request.session.clear()
        if lang:
            request.session["lang"] = lang
        return RedirectResponse("/login", 303)

    async def set_language(request: Request) -> Response:
        if request.path_params["locale"] in LOCALES:
            request.session["lang"] = request.path_params["locale"]
        return RedirectResponse(request.headers.get("referer") or "/", 303)

    return [Route("/login", login_page), Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]), Route("/lang/{locale}", set_language)]


class SessionGuard:
    """On every request, a session's user is looked up afresh: if the account is gone or its
    session key changed (a logout anywhere, a password change), the session no longer counts;
    otherwise the session carries the account as it is now (role, department).

    Goes inside SessionMiddleware (after it in the middleware list)."""

    def __init__(self, app: ASGIApp, accounts: AccountsOf) -> None:
        self.app, self.accounts = app, accounts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["lastmile.session_checked"] = True
        if scope["type"] == "http" and isinstance(scope.get("session"), dict) and scope["session"].get("user"):
            session = scope["session"]
            held = session["user"]
            request = Request(scope, receive)
            fresh = await run_in_threadpool(self.accounts(request).session_user, str(held.get("username", "")))
            if (not fresh or not fresh.get("session_key") or not isinstance(held.get("session_key"), str)
                    or not secrets.compare_digest(str(fresh["session_key"]), held["session_key"])):
                logger.info("session of %r no longer valid: ended", held.get("username"))
                session.pop("user", None)
                session["ended"] = True         # the login page says why the user lands there
            else:
                session["user"] = fresh
        await self.app(scope, receive, send)


class SecureCookies:
    """Marks cookies ``Secure`` when the request came over HTTPS (directly, or through a proxy
    trusted with uvicorn's ``--forwarded-allow-ips`` that sets X-Forwarded-Proto).

    Goes outside SessionMiddleware (before it in the middleware list)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("scheme") != "https":
            await self.app(scope, receive, send)
            return

        async def send_secure(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    (k, v + b"; secure") if k.lower() == b"set-cookie" and b"; secure" not in v.lower() else (k, v)
                    for k, v in message.get("headers", [])]
            await send(message)
        await self.app(scope, receive, send_secure)


def error_handler(json_prefixes: tuple[str, ...]) -> Callable[[Request, Exception], Awaitable[Response]]:
    """HTTPException → a redirect (303), JSON under ``json_prefixes``, else the error page."""

    async def handle(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 303:
            return RedirectResponse((exc.headers or {})["location"], 303)
        if request.url.path.startswith(json_prefixes):
            return api_error(exc.status_code, getattr(exc, "code", None) or "http_%d" % exc.status_code,
                             str(exc.detail))
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
