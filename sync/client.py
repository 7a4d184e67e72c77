"""The station's HTTP client: post an envelope, retry what can succeed later, run one sync.

``sync_once`` is the one step (tests, the CLI and the API call it); ``run_forever`` is the thin
loop around it that the node runs in the background.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import httpx
import tenacity

from crypto.errors import CryptoError
from crypto.keys import Identity, PublicKeys
from sync import exchange, log
from sync.errors import Rejected, Retryable, SyncError
from sync.inbox import Apply
from sync.log import Conn

logger = logging.getLogger("lastmile.sync")
SYNC_PATH = "/sync/v1/exchange"
RETRY_STATUS = (429, 502, 503, 504)


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if value and value.isdigit():
        return min(float(value), 3600.0)
    return None


class _Wait(tenacity.wait.wait_base):
    """Full-jitter exponential backoff, but never shorter than the server's Retry-After."""

    def __init__(self, cap: float) -> None:
        self.jitter = tenacity.wait_random_exponential(multiplier=0.5, max=cap)

    def __call__(self, state: tenacity.RetryCallState) -> float:
        wait = self.jitter(state)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, Retryable) and exc.retry_after is not None:
            wait = max(wait, exc.retry_after)
        return wait


class LinkDown(Retryable):
    code = "link_down"


def _refusal(resp: httpx.Response) -> Rejected:
    """Turn the county's 4xx JSON answer into a Rejected that keeps its stable code."""
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    err = Rejected(f"county refused the push ({resp.status_code}): {body.get('message') or resp.text[:200]}")
    err.code = str(body.get("error") or "rejected")
    return err


def post_envelope(http: httpx.Client, url: str, blob: bytes, *, attempts: int = 4, cap: float = 30.0,
                  sleep: Callable[[float], None] = time.sleep) -> bytes:
    """POST one envelope; retry transport errors and 429/502/503/504 with jittered backoff."""

    def once() -> bytes:
        try:
            resp = http.post(url.rstrip("/") + SYNC_PATH, content=blob,
                             headers={"content-type": "application/octet-stream"})
        except httpx.TransportError as exc:
            raise LinkDown(f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code in RETRY_STATUS:
            raise LinkDown(f"county answered {resp.status_code}", _retry_after(resp))
        if resp.status_code != 200:
            raise _refusal(resp)
        return resp.content

    retrying = tenacity.Retrying(retry=tenacity.retry_if_exception_type(Retryable), reraise=True,
                                 stop=tenacity.stop_after_attempt(attempts), wait=_Wait(cap), sleep=sleep)
    return retrying(once)


@dataclass(slots=True)
class SyncResult:
    sent: int = 0
    acked: int = 0
    received: int = 0
    rounds: int = 0
    bytes_up: int = 0
    bytes_down: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"sent": self.sent, "acked": self.acked, "received": self.received, "rounds": self.rounds,
                "bytes_up": self.bytes_up, "bytes_down": self.bytes_down}


@dataclass(frozen=True, slots=True)
class Peer:
    """What a station knows of its county after enrolment."""

    url: str
    name: str
    keys: PublicKeys


def sync_once(transaction: Callable[[], ContextManager[Conn]], http: httpx.Client, *, me: Identity,
              station: str, county: Peer, apply: Apply, max_rounds: int = 50,
              sleep: Callable[[float], None] = time.sleep) -> SyncResult:
    """Push everything waiting and pull everything new, a batch per round, until both are empty.

    The database is only held while building a push and applying an answer, never during I/O.
    Records last attempt, last contact and last error in ``_sync_status``."""
    result = SyncResult()
    with transaction() as db:
        log.set_status(db, "last_attempt", log.utcnow())
    try:
        for _ in range(max_rounds):
            with transaction() as db:
                push = exchange.build_push(db, me=me, station=station, county=county.keys,
                                           county_name=county.name)
            answer = post_envelope(http, county.url, push.blob, sleep=sleep)
            with transaction() as db:
                got = exchange.apply_answer(db, answer, me=me, station=station, county=county.keys,
                                            county_name=county.name, apply=apply)
                log.set_status(db, "last_contact", log.utcnow())
                log.set_status(db, "last_error", "")
                log.set_status(db, "last_error_code", "")
            result.rounds += 1
            result.sent += (push.last - push.first + 1) if push.last else 0
            result.acked += got.acked
            result.received += got.received
            result.bytes_up += len(push.blob)
            result.bytes_down += len(answer)
            if not push.last and not got.more and not got.received:
                break
            if push.last and got.acked == 0 and not got.received:
                break     # the county took nothing new: do not spin; the next run retries
    except (SyncError, CryptoError) as exc:
        with transaction() as db:
            log.set_status(db, "last_error", str(exc)[:500])
            log.set_status(db, "last_error_code", getattr(exc, "code", "error"))
        raise
    return result


def run_forever(step: Callable[[], Any], stop: threading.Event, interval: float) -> None:
    """Call ``step`` every ``interval`` seconds until ``stop`` is set; log failures at a limited rate."""
    last_log = 0.0
    while not stop.is_set():
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - the loop must survive anything and try again
            now = time.monotonic()
            if now - last_log > 60:
                logger.warning("sync deferred: %s", exc)
                last_log = now
        with contextlib.suppress(Exception):
            stop.wait(interval)
