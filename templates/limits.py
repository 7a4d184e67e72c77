"""ASGI middleware both apps use: one request-body limit for every route, read timeouts on every
body, and the security headers of every HTML page; the byte budget of unauthenticated bodies; and
the server configuration both ``serve`` commands (and the tests' servers) run with, which adds the
timeout on request headers that uvicorn lacks.

``BodyLimit`` refuses a body over its route's limit with 413 before the app reads it when
``Content-Length`` says so, and while streaming when it does not (a chunked body is counted as it
arrives and cut off at the limit, so nothing past it is ever read into memory or spooled to disk).
API, sync and enrolment paths get the JSON error shape; pages a plain translated sentence.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Sequence

import uvicorn
from starlette.requests import Request
from uvicorn.protocols.http.h11_impl import H11Protocol

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


class Answering:
    """An ASGI ``send`` that notes whether the app has started its answer: until then a middleware
    may still answer in its place (413, 408); after, it can only cut the connection."""

    def __init__(self, send: Send) -> None:
        self.send, self.started = send, False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


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
        finished = False

        async def counted() -> Message:
            nonlocal seen, finished
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                finished = not message.get("more_body")
                if seen > limit:
                    raise BodyTooLarge(f"body exceeds {limit} bytes")
            return message

        watched = Answering(send)
        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if watched.started:
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


# Read timeouts (issue 15, finding 5) ------------------------------------------------------------
# The numbers, for a 2G village link of 64 kbit/s (8 KB/s, 300-1000 ms round trips, drops): a
# request head is < 2 KB, well under a second on that link; 20 s leaves room for TCP retransmits
# (RTO up to several seconds). A body chunk of the project is 8 KiB to 1 MiB (scans, sized to
# about 4 s of the measured link) or a push sized to about 4 s of the link: a body that sends
# nothing for 30 s is not on a working link. After 20 s of waiting, a body must average 512 B/s
# (4 kbit/s): one sixteenth of the slowest link we serve, so a 64 kbit/s link passes even when it
# carries 16 transfers at once or loses most of its time to drops and retransmits.
HEAD_TIMEOUT_S = 20.0
BODY_IDLE_S = 30.0
BODY_GRACE_S = 20.0
BODY_FLOOR_BPS = 512
KEEP_ALIVE_S = 5
TOO_SLOW = N_("What you sent arrived too slowly and was cut off. Please try again.")


class TooSlow(Exception):
    pass


class ReadTimeout:
    """Every request body: 408 (``too_slow``) when no byte of it arrives for ``idle`` seconds, or
    when, after ``grace`` seconds spent waiting for it, it has averaged less than ``floor`` bytes a
    second. Only the time the app spends waiting for the client counts (a handler that writes a
    chunk to disk between reads is not the client's delay). A connection that trickles a body
    therefore holds its worker, its memory and any budget it took for at most ``idle`` seconds, or
    ``grace`` seconds at below the floor."""

    def __init__(self, app: Any, idle: float = BODY_IDLE_S, grace: float = BODY_GRACE_S,
                 floor: float = BODY_FLOOR_BPS, json_prefixes: tuple[str, ...] = JSON_PREFIXES) -> None:
        self.app, self.idle, self.grace, self.floor, self.json_prefixes = app, idle, grace, floor, json_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        waited, seen = 0.0, 0
        finished = False

        async def timed() -> Message:
            nonlocal waited, seen, finished
            if finished:
                return await receive()
            began = loop.time()
            try:
                message = await asyncio.wait_for(receive(), self.idle)
            except asyncio.TimeoutError:
                raise TooSlow(f"no byte of the body for {self.idle:.0f} s, {seen} bytes in") from None
            waited += loop.time() - began
            if message["type"] != "http.request":
                finished = True
                return message
            seen += len(message.get("body", b""))
            finished = not message.get("more_body")
            if not finished and waited > self.grace and seen < self.floor * waited:
                raise TooSlow(f"{seen} bytes in {waited:.0f} s, below {self.floor} bytes/s")
            return message

        watched = Answering(send)
        try:
            await self.app(scope, timed, watched)
        except TooSlow as exc:
            client = scope.get("client") or ("?", 0)
            logger.warning("body too slow from %s: %s %s: %s; cut", client[0], scope["method"], scope["path"], exc)
            if watched.started:
                return
            if scope["path"].startswith(self.json_prefixes):
                body = json.dumps({"error": "too_slow", "message": f"the request body arrived too slowly ({exc}); "
                                   "nothing of it was used", "details": None}).encode()
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            else:
                request = Request(scope, receive)
                page = render(request, "error.html", 408, message=gettext_for(locale_of(request))(TOO_SLOW))
                body, headers = bytes(page.body), list(page.raw_headers)
            await send({"type": "http.response.start", "status": 408,
                        "headers": [*headers, (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a timeout on the request head. uvicorn has none: h11 waits
    for the end of the headers forever, and ``timeout_keep_alive`` is armed only after a response
    and cancelled by any byte received, so a connection that sends half a request line (or nothing
    at all) is held open for good. Here the head of every request (the first on a connection and
    each one after a response) must be complete within ``head_timeout`` seconds; if it is not, a
    client that sent part of one gets ``408`` and the connection is closed."""

    head_timeout = HEAD_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_of: Any = None
        self._head_bytes = 0
        super().connection_made(transport)
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_of, self._head_bytes = self.cycle, 0
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def data_received(self, data: bytes) -> None:
        self._head_bytes += len(data)
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        if self._head_timer is not None and self.cycle is not self._head_of:
            self._disarm_head_timer()               # a new request's head is complete

    def on_response_complete(self) -> None:
        self._arm_head_timer()                      # before: a pipelined request may be handled at once
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.cycle is not self._head_of:
            return
        if self._head_bytes:
            prefix = "%s:%d - " % self.client if self.client else ""
            logger.warning("%srequest head not complete after %.0f s (%d bytes); closed", prefix, self.head_timeout,
                           self._head_bytes)
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                                 b"content-length: 0\r\nconnection: close\r\n\r\n")
        self.transport.close()


def server_config(app: Any, *, head_timeout: float = HEAD_TIMEOUT_S, **options: Any) -> uvicorn.Config:
    """The uvicorn configuration of both ``serve`` commands and of the tests' servers: h11 with the
    head timeout above, keep-alive connections closed after ``KEEP_ALIVE_S`` idle seconds."""
    protocol = GuardedH11Protocol if head_timeout == HEAD_TIMEOUT_S else \
        type("GuardedH11Protocol", (GuardedH11Protocol,), {"head_timeout": head_timeout})
    options.setdefault("timeout_keep_alive", KEEP_ALIVE_S)
    return uvicorn.Config(app, http=protocol, **options)


# Bytes before authentication (issue 15, finding 5) ----------------------------------------------
UNVERIFIED_LIMIT = 64 * MiB


class ByteBudget:
    """Bytes of request bodies held in memory before their sender is authenticated, across every
    connection of this process: a push before its signature is checked, an enrolment request
    before its MAC is. ``take`` reserves bytes as they arrive and says False, reserving nothing,
    when that would pass ``limit``; the caller answers 503 ``busy_unverified`` with Retry-After.
    Only the event loop touches it (no lock needed)."""

    def __init__(self, limit: int = UNVERIFIED_LIMIT) -> None:
        self.limit, self.held, self.peak = limit, 0, 0

    def take(self, n: int) -> bool:
        if self.held + n > self.limit:
            return False
        self.held += n
        self.peak = max(self.peak, self.held)
        return True

    def give(self, n: int) -> None:
        self.held -= n


class OverBudget(Exception):
    pass


def over_budget(what: str) -> Any:
    """The 503 ``busy_unverified`` answer, with a Retry-After spread at random over 5-30 s."""
    from starlette.responses import JSONResponse
    wait = random.randint(5, 30)
    logger.warning("%s deferred %d s: the county holds its limit of unauthenticated bytes", what, wait)
    return JSONResponse({"error": "busy_unverified", "message": "too many unauthenticated bytes are held; retry later",
                         "details": {"retry_after": wait}}, 503, headers={"retry-after": str(wait)})


# Pictures: memory of a decode (issue 15, finding 13) ---------------------------------------------
MAX_DECODE = 64 * MiB
_ONE_BYTE = {"1", "L", "P"}                 # Pillow keeps these in one byte per pixel …
_TWO_BYTES = {"I;16", "I;16L", "I;16B", "I;16N"}    # … these in two, every other mode in four


def decoded_bytes(size: tuple[int, int], mode: str) -> int:
    """What Pillow holds to decode a picture of ``size`` in ``mode``: pixels × its bytes per pixel
    (RGB, RGBA, CMYK, I and F take four). Read from the header, before any pixel is decoded."""
    per_pixel = 1 if mode in _ONE_BYTE else 2 if mode in _TWO_BYTES else 4
    return size[0] * size[1] * per_pixel


class PerAddress:
    """A public route's limit per client address, in memory (the verify page and API,
    templates/verify_web.py): ``per_window`` requests within ``window`` seconds are served, then the
    address is refused for ``window`` seconds. Logins are slowed differently, in the database
    (templates/throttle.py): a restart must not forget a password guesser, while a rate of
    look-ups needs no write per request."""

    def __init__(self, per_window: int, window: float, what: str, clock: Callable[[], float] = time.time) -> None:
        self.per_window, self.window, self.what, self.clock = per_window, window, what, clock
        self._seen: dict[str, collections.deque[float]] = {}
        self._refused: dict[str, float] = {}
        self._lock = threading.Lock()

    def allow(self, address: str) -> float | None:
        """Count one request from ``address``: None if it may be served, else when the refusal ends."""
        now = self.clock()
        with self._lock:
            if len(self._seen) > 50_000:            # many addresses: forget the stale ones
                for key in [k for k, d in self._seen.items() if not d or d[-1] < now - self.window]:
                    del self._seen[key]
                for key in [k for k, until in self._refused.items() if until <= now]:
                    del self._refused[key]
            until = self._refused.get(address, 0.0)
            if until > now:
                return until
            times = self._seen.setdefault(address, collections.deque())
            times.append(now)
            while times and times[0] < now - self.window:
                times.popleft()
            if len(times) > self.per_window:
                self._refused[address] = now + self.window
                times.clear()
                logger.warning("%s: %r refused for %d s after %d requests", self.what, address, self.window,
                               self.per_window)
                return now + self.window
        return None
