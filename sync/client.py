"""The station's HTTP client: post an envelope, retry what can succeed later, run one sync.

``sync_once`` is the one step (tests, the CLI and the API call it); ``SyncLoop`` is the thin
loop around it that the node runs in the background.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, ContextManager

import httpx
import tenacity

from crypto.errors import CryptoError
from crypto.keys import Identity, PublicKeys
from sync import exchange, log, recovery
from sync.errors import Rejected, Retryable, SyncError
from sync.inbox import Apply
from sync.log import Conn

logger = logging.getLogger("lastmile.sync")
SYNC_PATH = "/sync/v1/exchange"
RETRY_STATUS = (408, 429, 502, 503, 504)     # 408: the county cut a body that came too slowly


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
    """The county could not be reached or did not answer. ``sent``: the request may have reached
    it (so the next round asks before resending); ``cut``: it broke mid-transfer or timed out after
    sending, the one failure that says something about the link's capacity."""

    code = "link_down"

    def __init__(self, message: str, retry_after: float | None = None, *, sent: bool = True,
                 cut: bool = False) -> None:
        super().__init__(message, retry_after)
        self.sent, self.cut = sent, cut


# Failures before a byte of the request left: connection refused or timed out, no route, DNS.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


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


def post_envelope(http: httpx.Client, url: str, blob: bytes) -> bytes:
    """POST one envelope, once. Raises LinkDown (retry later) or Rejected (show a human)."""
    try:
        resp = http.post(url.rstrip("/") + SYNC_PATH, content=blob,
                         headers={"content-type": "application/octet-stream"})
    except NOT_SENT as exc:
        raise LinkDown(f"{type(exc).__name__}: {exc}", sent=False) from exc
    except httpx.TransportError as exc:
        raise LinkDown(f"{type(exc).__name__}: {exc}", cut=True) from exc
    if resp.status_code in RETRY_STATUS:
        raise LinkDown(f"county answered {resp.status_code}", _retry_after(resp))
    if resp.status_code != 200:
        raise _refusal(resp)
    return resp.content


@dataclass(slots=True)
class SyncResult:
    sent: int = 0
    acked: int = 0
    received: int = 0
    rounds: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    scans: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"sent": self.sent, "acked": self.acked, "received": self.received, "rounds": self.rounds,
                "bytes_up": self.bytes_up, "bytes_down": self.bytes_down, "scans": self.scans}


@dataclass(frozen=True, slots=True)
class Peer:
    """What a station knows of its county after enrolment."""

    url: str
    name: str
    keys: PublicKeys


MIN_BATCH, START_BATCH, MAX_BATCH = 5, 100, 2000
REQUEST_SECONDS = 4.0      # aim for requests this long: short enough to slip between cuts
RAW_PER_WIRE = 3.0         # JSON bodies compress about this much
SMALL_EXCHANGE = 4096      # bytes both ways: smaller measures the round trip, larger the throughput


def link_fit(db: Conn) -> int | None:
    """Events that fill about REQUEST_SECONDS of the link, from the measured throughput
    (``link_bps``) and wire bytes per event of recent pushes (``wire_per_event``); None if unknown."""
    bps, per_event = log.get_status(db, "link_bps"), log.get_status(db, "wire_per_event")
    if not bps or not per_event:
        return None
    return max(MIN_BATCH, min(MAX_BATCH, int(int(bps) / 8 * REQUEST_SECONDS / max(float(per_event), 1.0))))


def link_budget(db: Conn, *, per_wire_byte: float = 1.0, floor: int = 8 * 1024, ceiling: int = 4 * 1024 * 1024) -> int:
    """Bytes worth sending in one request on the link as last measured (``ceiling`` if unknown)."""
    bps = log.get_status(db, "link_bps")
    if not bps:
        return ceiling
    return int(min(ceiling, max(floor, int(bps) / 8 * REQUEST_SECONDS * per_wire_byte)))


def sync_once(transaction: Callable[[], ContextManager[Conn]], http: httpx.Client, *, me: Identity,
              station: str, county: Peer, apply: Apply, on_ack: Callable[[Conn, int], None] | None = None,
              max_rounds: int = 50, attempts: int = 4, cap: float = 60.0,
              sleep: Callable[[float], None] = time.sleep, send: bool = True,
              qr_texts: exchange.QrTexts | None = None, applied: exchange.Applied | None = None,
              **answer_options: Any) -> SyncResult:
    """Push everything waiting and pull everything new, a batch per round, until both are empty.

    The batch size follows the link: each push carries about REQUEST_SECONDS of the measured
    throughput (``link_fit``), capped by ``batch_limit``, which halves (from what the cut push
    carried) only when a request is cut mid-transfer or times out after sending, and doubles after a
    full batch went through; both are remembered between runs. A request that never left (refused,
    no route, DNS) or a 429/5xx answer says nothing about the link and changes neither, so after an
    outage the first push is already full size. Failed rounds are retried with
    full-jitter backoff (never sooner than Retry-After). The database is held only while building a
    push and applying an answer, never during I/O. ``on_ack(db, ack)`` runs in the transaction that
    takes each answer: the county's ack is its receipt. Records attempt, contact, error, link speed,
    clock skew and what the county set aside in the ``_sync_*`` tables.

    After a failed round the next one first asks where the county is (a push with no events): if the
    county stored the lost push, its ack moves the cursor and nothing is sent twice.

    ``send=False``: a receiving sync (a locked station, node/vault.py): every push carries no events,
    only the cursors, and the rounds go on while the county has more to send.

    ``qr_texts``, ``applied``: what each push carries beside its events (``exchange.build_push``),
    for the push sealed ahead as for the one sealed now."""
    result = SyncResult()
    with transaction() as db:
        log.set_status(db, "last_attempt", log.utcnow())
        # No limit recorded (no cut yet): the measured link alone sizes the push, or 100 at first.
        limit = int(log.get_status(db, "batch_limit") or (MAX_BATCH if link_fit(db) else START_BATCH))
        log_in_flight = log.get_status(db, "push_in_flight")
        if log_in_flight and log_in_flight.isdigit() and int(log_in_flight) > 0:
            # The last run died with a push of that many events in flight (power cut, kill): treat it
            # as a cut, or a link that always drops before the answer would get the same batch forever.
            limit = max(MIN_BATCH, min(limit, int(log_in_flight)) // 2)
            log.set_status(db, "batch_limit", str(limit))

    unsure = bool(log_in_flight)
    carried = 0            # events in the push of the current round
    # The next push is sealed (zstd-19 takes ~0.3 s per 200 events) while the current one is on the
    # link, so the link does not wait for the CPU between rounds. It is used only if the answer acked
    # exactly the current push and changed nothing else the push depends on.
    builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lastmile-push")
    ahead: Future[tuple[exchange.Push, Any] | None] | None = None

    def push_state(db: Conn) -> Any:
        """What a push carries besides the events; a push sealed ahead is sent only if it is unchanged."""
        try:
            return (log.head(db, log.down(station))[0], recovery.heal_from(db), recovery.to_confirm(db),
                    [e.seq for e in recovery.to_return(db, log.down(station), max_bytes=1 << 20)],
                    dict(applied(db)) if applied is not None else None)
        except Exception:  # noqa: BLE001 - unknown state: never equal, so never sent ahead
            return object()

    def build_ahead(after: int, n: int, max_bytes: int) -> tuple[exchange.Push, Any] | None:
        with transaction() as db:
            if log.head(db, log.up(station))[0] <= after:
                return None
            push = exchange.build_push(db, me=me, station=station, county=county.keys, county_name=county.name,
                                       limit=n, max_bytes=max_bytes, after=after, qr_texts=qr_texts,
                                       applied=applied)
            return push, push_state(db)

    def wait_ahead() -> tuple[exchange.Push, Any] | None:
        """The push sealed ahead, once its builder is done (call outside a transaction: it takes one)."""
        nonlocal ahead
        future, ahead = ahead, None
        try:
            return future.result() if future is not None else None
        except Exception:  # noqa: BLE001 - a failed look-ahead only means building the push now
            logger.exception("sealing the next push ahead failed; sealing it now")
            return None

    def take_ahead(db: Conn, built: tuple[exchange.Push, Any] | None, n: int) -> exchange.Push | None:
        if built is None or unsure:
            return None
        push, state = built
        if (push.first != log.acked(db, log.up(station)) + 1 or push.last - push.first + 1 > n
                or push_state(db) != state):
            return None
        log.set_status(db, "last_push", push.id)
        return push

    def shrink(state: tenacity.RetryCallState) -> None:
        nonlocal limit
        exc = state.outcome.exception() if state.outcome else None
        with transaction() as db:
            if getattr(exc, "cut", False) and carried:
                limit = max(MIN_BATCH, min(limit, carried) // 2)
                log.set_status(db, "batch_limit", str(limit))
            log.set_status(db, "last_error", str(exc)[:500])
            log.set_status(db, "last_error_code", getattr(exc, "code", "error"))

    def one_round() -> tuple[exchange.Push, bytes, exchange.StationResult]:
        nonlocal unsure, carried
        nonlocal ahead
        built = wait_ahead()
        with transaction() as db:
            fit = link_fit(db)
            n = 0 if unsure or not send else min(limit, fit or limit)
            max_bytes = link_budget(db, per_wire_byte=RAW_PER_WIRE if fit is None else RAW_PER_WIRE * 2,
                                    floor=64 * 1024)
            push = take_ahead(db, built, n) or exchange.build_push(
                db, me=me, station=station, county=county.keys, county_name=county.name, limit=n,
                max_bytes=max_bytes, qr_texts=qr_texts, applied=applied)
            carried = (push.last - push.first + 1) if push.last else 0
            log.set_status(db, "push_in_flight", str(carried))
            acked_before = log.acked(db, log.up(station))
        if push.last and n:
            ahead = builder.submit(build_ahead, push.last, n, max_bytes)
        elif unsure and not push.last and send:  # asking after a cut: seal the likely next push meanwhile
            ahead = builder.submit(build_ahead, acked_before, min(limit, fit or limit), max_bytes)
        was_unsure, unsure = unsure, True
        started = time.monotonic()
        try:
            answer = post_envelope(http, county.url, push.blob)
        except LinkDown as exc:
            if not exc.sent or not exc.cut:
                with transaction() as db:        # nothing was cut: not a reason to shrink next run
                    log.set_status(db, "push_in_flight", "")
            if not exc.sent:
                unsure = was_unsure              # it never left: no need to ask before resending
            raise
        elapsed = max(time.monotonic() - started, 1e-3)
        with transaction() as db:
            got = exchange.apply_answer(db, answer, me=me, station=station, county=county.keys,
                                        county_name=county.name, apply=apply, fresh=True,
                                        **{"expect": push.id,   # the next push may be sealed already
                                           **answer_options})   # hooks, own_keys (self-heal)
            _record_contact(db, got, len(push.blob) + len(answer), elapsed)
            if carried >= MIN_BATCH:
                _average(db, "wire_per_event", len(push.blob) / carried)
            log.set_status(db, "push_in_flight", "")
            if on_ack:
                on_ack(db, log.acked(db, log.up(station)))
            stale = got.received or got.more or got.repairs or got.forks   # (take_ahead checks the ack)
        if stale:
            wait_ahead()                         # sealed on a state this answer changed: build anew
        unsure = False
        return push, answer, got

    retrying = tenacity.Retrying(retry=tenacity.retry_if_exception_type(Retryable), reraise=True,
                                 stop=tenacity.stop_after_attempt(attempts), wait=_Wait(cap), sleep=sleep,
                                 before_sleep=shrink)
    try:
        for _ in range(max_rounds):
            push, answer, got = retrying(one_round)
            sent = (push.last - push.first + 1) if push.last else 0
            result.rounds += 1
            result.sent += sent
            result.acked += got.acked
            result.received += got.received
            result.bytes_up += len(push.blob)
            result.bytes_down += len(answer)
            if sent >= limit and got.acked:
                limit = min(MAX_BATCH, limit * 2)
                with transaction() as db:
                    log.set_status(db, "batch_limit", str(limit))
            if not send and not got.more and not got.received:
                break     # receiving only: nothing more down, and the county knows we hold what came
            if not push.last and not got.more and not got.received and not got.acked:
                with transaction() as db:
                    if log.acked(db, log.up(station)) >= log.head(db, log.up(station))[0]:
                        break
            if push.last and got.acked == 0 and not got.received:
                break     # the county took nothing new: do not spin; the next run retries
            if push.last and not got.more and not got.repairs and not got.forks:
                with transaction() as db:      # all taken, nothing more down: no closing pull needed
                    if log.acked(db, log.up(station)) >= log.head(db, log.up(station))[0]:
                        break
    except (SyncError, CryptoError) as exc:
        with transaction() as db:
            log.set_status(db, "last_error", str(exc)[:500])
            log.set_status(db, "last_error_code", getattr(exc, "code", "error"))
        raise
    finally:
        builder.shutdown(wait=True, cancel_futures=True)
    return result


SKEW_LIMIT_S = 300


def _average(db: Conn, name: str, value: float, weight: float = 0.5) -> None:
    """Keep a moving average of ``value`` in status ``name``."""
    old = log.get_status(db, name)
    log.set_status(db, name, f"{value if not old else (1 - weight) * float(old) + weight * value:.6g}")


def _record_contact(db: Conn, got: exchange.StationResult, size: int, elapsed: float) -> None:
    now = log.utcnow()
    log.set_status(db, "last_contact", now)
    log.set_status(db, "last_error", "")
    log.set_status(db, "last_error_code", "")
    if size < SMALL_EXCHANGE:
        _average(db, "rtt_s", elapsed)
        big = log.get_status(db, "link_sample")      # the round trip changed: re-derive the throughput
        if big:
            size, elapsed = int(big.split()[0]), float(big.split()[1])
    else:
        log.set_status(db, "link_sample", f"{size} {elapsed:.4f}")
    if size >= SMALL_EXCHANGE:
        # Throughput: the bytes over the time they took, less the round trip a small exchange takes.
        rtt = float(log.get_status(db, "rtt_s") or 0.0)
        log.set_status(db, "link_bps", str(int(size * 8 / max(elapsed - rtt, elapsed / 2))))
    if got.acked or got.received:
        log.set_status(db, "last_progress", now)
    if got.server_time:
        county_time = datetime.fromisoformat(got.server_time.replace("Z", "+00:00"))
        # The county stamped its answer about half the round trip ago.
        mine = datetime.now(timezone.utc) - timedelta(seconds=elapsed / 2)
        log.set_status(db, "clock_skew_s", str(int((mine - county_time).total_seconds())))


class SyncLoop:
    """The background loop around ``step`` and a watchdog that restarts it.

    The loop calls ``step`` every ``interval`` seconds and survives any error (logged at most once
    a minute). The watchdog checks every ``check_every`` seconds that the loop is alive and has
    started an iteration within ``stall_after`` seconds; if not, it starts a fresh loop (a hung
    one, if it ever returns, sees it is outdated and ends)."""

    def __init__(self, step: Callable[[], Any], interval: float, *, stall_after: float | None = None,
                 check_every: float = 30.0) -> None:
        self.step, self.interval = step, interval
        self.stall_after = stall_after if stall_after is not None else max(10 * interval, 900.0)
        self.check_every = check_every
        self.stop_event = threading.Event()
        self.generation = 0
        self.beat = time.monotonic()
        self.restarts = 0
        self.worker: threading.Thread | None = None
        self.watchdog: threading.Thread | None = None
        self.woken = threading.Event()     # set by wake(): run now, whatever the wait
        self.stepping = False

    def wake(self) -> None:
        """Run ``step`` as soon as the current run (if any) is over: cuts the wait short, be it
        the interval or a backoff. Returns at once (the station's "Sync now" button)."""
        self.woken.set()

    @property
    def busy(self) -> bool:
        """A run is going on, or was asked for by ``wake`` and is about to start."""
        return self.stepping or self.woken.is_set()

    def start(self) -> None:
        self._spawn()
        self.watchdog = threading.Thread(target=self._watch, name="lastmile-sync-watchdog", daemon=True)
        self.watchdog.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        self.woken.set()
        for t in (self.worker, self.watchdog):
            if t is not None:
                t.join(timeout=timeout)

    def _spawn(self) -> None:
        self.generation += 1
        self.beat = time.monotonic()
        self.worker = threading.Thread(target=self._run, args=(self.generation,), name="lastmile-sync", daemon=True)
        self.worker.start()

    def next_wait(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds until the next run: the interval, spread by ±50% so stations that started
        together drift apart; after failures, full-jitter exponential backoff up to 10 minutes,
        and never sooner than the county's Retry-After."""
        if failures == 0:
            return self.interval * random.uniform(0.5, 1.5)
        wait = random.uniform(self.interval / 2, min(600.0, self.interval * 2 ** failures))
        return max(wait, retry_after or 0.0)

    def _run(self, generation: int) -> None:
        last_log, failures = 0.0, 0
        while not self.stop_event.is_set() and generation == self.generation:
            self.beat = time.monotonic()
            retry_after = None
            self.woken.clear()
            self.stepping = True
            try:
                self.step()
                failures = 0
            except Exception as exc:  # noqa: BLE001 - the loop must survive anything and try again
                failures += 1
                retry_after = getattr(exc, "retry_after", None)
                now = time.monotonic()
                if now - last_log > 60:
                    logger.warning("sync deferred: %s", exc)
                    last_log = now
            self.stepping = False
            self.woken.wait(self.next_wait(failures, retry_after))

    def _watch(self) -> None:
        while not self.stop_event.wait(self.check_every):
            worker = self.worker
            stalled = time.monotonic() - self.beat > self.stall_after
            if worker is None or not worker.is_alive() or stalled:
                self.restarts += 1
                logger.error("sync loop %s; restarting it (restart %d)",
                             "stalled" if stalled else "died", self.restarts)
                self._spawn()
