"""ASGI middleware both apps use: one request-body limit for every route, and the security
headers of every HTML page.

``BodyLimit`` refuses a body over its route's limit with 413 before the app reads it when
``Content-Length`` says so, and while streaming when it does not (a chunked body is counted as it
arrives and cut off at the limit, so nothing past it is ever read into memory or spooled to disk).
API, sync and enrolment paths get the JSON error shape; pages a plain translated sentence.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Sequence

from starlette.requests import Request

from templates import N_, gettext_for, locale_of, render

logger = logging.getLogger("lastmile.web")

KiB, MiB = 1024, 1024 * 1024
DEFAULT_LIMIT = 64 * KiB
JSON_PREFIXES = ("/api/", "/sync/", "/enroll/")
TOO_LARGE = N_("What you sent is too large. Send smaller files, or fewer at once.")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Limit = int | Callable[[Mapping[str, str]], int]


@dataclass(frozen=True, slots=True)
class Rule:
    """Bodies of ``method`` requests whose path fully matches ``path`` (a regex) may be ``limit``
    bytes; ``limit`` may be a function of the request headers (lower-cased names)."""

    method: str
    path: str
    limit: Limit
    code: str = "too_large"        # the JSON error code of a refusal

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and re.fullmatch(self.path, path) is not None


def upload_bound(cap: int) -> Callable[[Mapping[str, str]], int]:
    """A tus PATCH may carry at most Upload-Length − Upload-Offset bytes, and never more than ``cap``."""

    def limit(headers: Mapping[str, str]) -> int:
        total, offset = headers.get("upload-length", ""), headers.get("upload-offset", "")
        if not total.isdigit() or not offset.isdigit():
            return DEFAULT_LIMIT
        return max(0, min(cap, int(total) - int(offset)))
    return limit


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    def __init__(self, app: Any, rules: Sequence[Rule] = (), default: int = DEFAULT_LIMIT,
                 json_prefixes: tuple[str, ...] = JSON_PREFIXES) -> None:
        self.app, self.rules, self.default, self.json_prefixes = app, tuple(rules), default, json_prefixes

    def limit_for(self, scope: Scope, headers: Mapping[str, str]) -> tuple[int, str]:
        for rule in self.rules:
            if rule.matches(scope["method"], scope["path"]):
                return (rule.limit(headers) if callable(rule.limit) else rule.limit), rule.code
        return self.default, "too_large"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        limit, code = self.limit_for(scope, headers)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await self.refuse(scope, receive, send, limit, code, f"declared {declared}")
            return
        seen = 0
        started = finished = False

        async def counted() -> Message:
            nonlocal seen, finished
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                finished = not message.get("more_body")
                if seen > limit:
                    raise BodyTooLarge(f"body exceeds {limit} bytes")
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if started:
                raise
            await self.refuse(scope, receive, send, limit, code, f"more than {limit} streamed", drain=not finished)

    async def refuse(self, scope: Scope, receive: Receive, send: Send, limit: int, code: str, why: str,
                     drain: bool = True) -> None:
        """Answer 413, then read and drop what the client is still sending (at most DRAIN_BYTES or
        DRAIN_S) before closing, so that its kernel does not reset the connection and throw away
        the answer before the client has read it."""
        client = scope.get("client") or ("?", 0)
        logger.warning("body too large from %s: %s %s (%s, limit %d)", client[0], scope["method"], scope["path"],
                       why, limit)
        if scope["path"].startswith(self.json_prefixes):
            body = json.dumps({"error": code, "message": f"the request body exceeds {limit} bytes",
                               "details": {"limit": limit}}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        else:
            request = Request(scope, receive)
            page = render(request, "error.html", 413, message=gettext_for(locale_of(request))(TOO_LARGE))
            body, headers = bytes(page.body), list(page.raw_headers)
        await send({"type": "http.response.start", "status": 413, "headers": [*headers, (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body, "more_body": True})
        if drain:
            await _drain(receive)
        await send({"type": "http.response.body", "body": b""})


DRAIN_BYTES, DRAIN_S = 16 * MiB, 1.0


async def _drain(receive: Receive) -> None:
    loop = asyncio.get_running_loop()
    deadline, dropped = loop.time() + DRAIN_S, 0
    while dropped < DRAIN_BYTES:
        try:
            message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            return
        if message["type"] != "http.request" or not message.get("more_body"):
            return
        dropped += len(message.get("body", b""))


CSP = "default-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"


class SecurityHeaders:
    """Every HTML page: a Content-Security-Policy (no framing, forms post only to this site, nothing
    loaded from elsewhere), no MIME sniffing, no referrer leaving the site."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                ctype = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if ctype.startswith(b"text/html") and b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", CSP.encode()))
                if b"x-content-type-options" not in names:
                    headers.append((b"x-content-type-options", b"nosniff"))
                if b"referrer-policy" not in names:
                    headers.append((b"referrer-policy", b"same-origin"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
