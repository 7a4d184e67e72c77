"""A bad village link between two loopback endpoints: a test tool, not a mock.

``FaultProxy`` listens on 127.0.0.1 and forwards TCP to ``upstream`` (an HTTP server), degrading the
link on the way; an asyncio loop in a background thread does the work. From sync test code::

    with FaultProxy(upstream=("127.0.0.1", port), rate_bps=256_000, latency=0.15,
                    cut_every=(15, 25), seed=1) as proxy:
        httpx.get(proxy.url + "/health")        # proxy.url == "http://127.0.0.1:<port>"
        proxy.set(down=True); proxy.set(down=False)
        proxy.stats.cuts                        # a Stats snapshot

- ``rate_bps``: bits/s for each direction independently, shared by all connections like one real
  link; ``None`` = unlimited. Paced in ~10 ms chunks (>= 1 KB); past 0.25 s of data waiting on the
  link the proxy stops reading (TCP backpressure).
- ``latency``: one-way delay (s) added to every byte in each direction, order preserved
  (RTT = 2 * latency + transfer time). The kernel's TCP handshake is not delayed.
- ``cut_every=(a, b)``: every uniform(a, b) s of wall time all open connections are aborted with a
  reset (SO_LINGER 0) on both sides, mid-request or mid-response; new ones are accepted at once.
- ``cut_after_bytes=N``: reset each connection once exactly N bytes went through it (both
  directions counted together); deterministic.
- ``duplicate_p``: probability that an HTTP/1.1 request first also reaches the upstream on a fresh
  connection of its own (``Connection: close``, answer dropped); then the original goes through and
  the client gets that second answer: a retransmission seen twice.
- ``delay_p``, ``delay=(a, b)``: probability that a request is held uniform(a, b) s first.
- ``seed``: seeds the cut timer and the per-request draws (separate streams): repeatable faults.

Client-to-upstream bytes are parsed as HTTP/1.1 requests with Content-Length bodies (after a chunked
request or a head over 64 KB the rest of that connection is forwarded raw).

``set(**params)`` changes any of the first seven while running. ``set(down=True)`` resets every
open connection and closes the listener (connecting is refused) until ``set(down=False)`` listens on
the same port again. On exit all tasks are cancelled, sockets closed and the thread joined.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import random
import re
import socket
import struct
import threading
from typing import Any

_CHUNK_TIME, _MIN_CHUNK = 0.01, 1024      # pace in chunks of ~10 ms of wire time, at least 1 KB
_AHEAD = 0.25                             # seconds of data a direction may queue ahead of the wire
_QUEUE_LIMIT = 1 << 20                    # bytes queued per pipe before reading stops
_RST = struct.pack("ii", 1, 0)
_SETTABLE = {"rate_bps", "latency", "cut_every", "cut_after_bytes", "duplicate_p", "delay_p", "delay"}


@dataclasses.dataclass
class Stats:
    bytes_up: int = 0       # bytes written to the upstream over the link (duplicate copies excluded)
    bytes_down: int = 0     # bytes written to the client
    connections: int = 0    # client connections accepted
    cuts: int = 0           # connections aborted by the proxy (cut_every, cut_after_bytes, down)
    duplicated: int = 0     # requests sent to the upstream twice
    delayed: int = 0        # requests held back
    requests: int = 0       # HTTP requests seen


def _kill(writer: asyncio.StreamWriter | None, reset: bool) -> None:
    """Close gracefully, or abort with SO_LINGER 0 so that the peer sees a reset."""
    if writer is not None and reset:
        with contextlib.suppress(OSError, AttributeError):
            writer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
        writer.transport.abort()
    elif writer is not None:
        writer.transport.close()


class _Pipe:
    """One direction of one connection: book wire time on the shared link, deliver after latency."""

    def __init__(self, conn: _Conn, down: bool, writer: asyncio.StreamWriter) -> None:
        self.conn, self.down, self.writer = conn, down, writer
        self.queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()
        self.queued, self.space = 0, asyncio.Event()

    async def feed(self, data: bytes | None) -> None:
        proxy, loop = self.conn.proxy, asyncio.get_running_loop()
        if data is None:
            return self.queue.put_nowait((loop.time() + proxy.latency, None))
        rate = proxy.rate_bps
        size = max(_MIN_CHUNK, int(rate * _CHUNK_TIME / 8)) if rate else max(len(data), 1)
        for i in range(0, len(data), size):
            chunk = data[i:i + size]
            while self.queued > _QUEUE_LIMIT:
                self.space.clear()
                await self.space.wait()
            done = now = loop.time()
            if rate:
                while (ahead := proxy._free[self.down] - now) > _AHEAD:
                    await asyncio.sleep(ahead - _AHEAD)
                    now = loop.time()
                done = proxy._free[self.down] = max(now, proxy._free[self.down]) + len(chunk) * 8 / rate
            self.queued += len(chunk)
            self.queue.put_nowait((done + proxy.latency, chunk))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            at, chunk = await self.queue.get()
            if at > loop.time():
                await asyncio.sleep(at - loop.time())
            if chunk is None:
                return self.writer.write_eof() if self.writer.can_write_eof() else None
            self.queued -= len(chunk)
            self.space.set()
            await self.conn.send(self.down, self.writer, chunk)


class _Conn:
    def __init__(self, proxy: FaultProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.proxy, self.reader, self.writer = proxy, reader, writer
        self.upstream: asyncio.StreamWriter | None = None
        self.forwarded, self.dead = 0, False
        self.tasks: list[asyncio.Task[None]] = []
        self.task: asyncio.Task[Any] = asyncio.current_task()  # type: ignore[assignment]

    def cut(self, count: bool = True) -> None:
        if not self.dead:
            self.dead = True
            self.proxy._stats.cuts += count
            _kill(self.writer, True)
            _kill(self.upstream, True)
            for task in self.tasks:
                task.cancel()

    async def run(self) -> None:
        proxy = self.proxy
        proxy._conns.add(self)
        proxy._stats.connections += 1
        try:
            if proxy._down:
                return self.cut()
            with contextlib.suppress(OSError):
                reader, self.upstream = await asyncio.open_connection(*proxy.upstream)
            if self.upstream is None or self.dead:     # upstream unreachable, or cut while connecting
                return
            up, down = _Pipe(self, False, self.upstream), _Pipe(self, True, self.writer)
            self.tasks = [asyncio.create_task(c) for c in
                          (self._pump_http(self.reader, up), up.run(), self._pump(reader, down), down.run())]
            await asyncio.wait(self.tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            proxy._conns.discard(self)
            clean = not self.dead and bool(self.tasks) and all(
                t.done() and not t.cancelled() and t.exception() is None for t in self.tasks)
            _kill(self.writer, not clean)       # an error on one side is a reset on the other
            _kill(self.upstream, not clean)
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def send(self, down: bool, writer: asyncio.StreamWriter, chunk: bytes) -> None:
        limit = self.proxy.cut_after_bytes
        cut = limit is not None and self.forwarded + len(chunk) >= limit
        if limit is not None and cut:
            chunk = chunk[:max(0, limit - self.forwarded)]
        self.forwarded += len(chunk)
        name = "bytes_down" if down else "bytes_up"     # counted first: the peer may read at once
        setattr(self.proxy._stats, name, getattr(self.proxy._stats, name) + len(chunk))
        writer.write(chunk)
        if not cut:
            return await writer.drain()
        for _ in range(1000):                   # let exactly those bytes reach the socket, then cut
            if not writer.transport.get_write_buffer_size():
                break
            await asyncio.sleep(0.001)
        self.cut()

    async def _pump(self, reader: asyncio.StreamReader, pipe: _Pipe) -> None:
        while data := await reader.read(65536):
            await pipe.feed(data)
        await pipe.feed(None)

    async def _pump_http(self, reader: asyncio.StreamReader, pipe: _Pipe) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as e:
                await pipe.feed(e.partial)
                break
            except asyncio.LimitOverrunError:
                return await self._pump(reader, pipe)
            if re.search(rb"(?im)^transfer-encoding:", head):
                await pipe.feed(head)
                return await self._pump(reader, pipe)
            length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
            try:
                body = await reader.readexactly(int(length.group(1)) if length else 0)
            except asyncio.IncompleteReadError as e:
                await pipe.feed(head + e.partial)
                break
            await self._request(head, body, pipe)
        await pipe.feed(None)

    async def _request(self, head: bytes, body: bytes, pipe: _Pipe) -> None:
        proxy, rng = self.proxy, self.proxy._rng
        proxy._stats.requests += 1
        duplicate = rng.random() < proxy.duplicate_p
        hold = rng.uniform(*proxy.delay) if rng.random() < proxy.delay_p else 0.0
        if hold > 0:
            proxy._stats.delayed += 1
            await asyncio.sleep(hold)
        if duplicate:
            proxy._stats.duplicated += 1
            await self._duplicate(head, body)
        await pipe.feed(head + body)

    async def _duplicate(self, head: bytes, body: bytes) -> None:
        """The first copy goes on a connection of its own; its answer is read to the end and dropped."""
        head = re.sub(rb"(?im)^connection:.*\r\n", b"", head)[:-2] + b"Connection: close\r\n\r\n"
        writer = None
        with contextlib.suppress(OSError, TimeoutError):
            try:
                reader, writer = await asyncio.open_connection(*self.proxy.upstream)
                writer.write(head + body)
                async with asyncio.timeout(30):
                    while await reader.read(65536):
                        pass
            finally:
                _kill(writer, False)


class FaultProxy:
    def __init__(self, upstream: tuple[str, int], *, rate_bps: float | None = None, latency: float = 0.0,
                 cut_every: tuple[float, float] | None = None, cut_after_bytes: int | None = None,
                 duplicate_p: float = 0.0, delay_p: float = 0.0, delay: tuple[float, float] = (0.5, 2.0),
                 seed: int | None = None) -> None:
        self.upstream, self.port = upstream, 0
        self.rate_bps, self.latency = rate_bps, latency
        self.cut_every, self.cut_after_bytes = cut_every, cut_after_bytes
        self.duplicate_p, self.delay_p, self.delay = duplicate_p, delay_p, delay
        base = random.Random(seed)
        self._rng, self._cut_rng = random.Random(base.random()), random.Random(base.random())
        self._free = [0.0, 0.0]                 # when each direction's wire is free: [up, down]
        self._stats, self._conns, self._down = Stats(), set[_Conn](), False
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stats(self) -> Stats:
        return dataclasses.replace(self._stats)

    def __enter__(self) -> FaultProxy:
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main(ready)), name="faultproxy", daemon=True)
        self._thread.start()
        try:
            ready.result(timeout=10)
        except BaseException:
            self._thread.join(timeout=1)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None and self._thread and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=10)

    def set(self, down: bool | None = None, **params: Any) -> None:
        """Take the link down or up, or change parameters; in effect when this returns."""
        if unknown := set(params) - _SETTABLE:
            raise TypeError(f"unknown FaultProxy parameters: {sorted(unknown)}")
        assert self._loop is not None, "FaultProxy is not running"
        asyncio.run_coroutine_threadsafe(self._set(down, params), self._loop).result(timeout=10)

    async def _set(self, down: bool | None, params: dict[str, Any]) -> None:
        for name, value in params.items():
            setattr(self, name, value)
        if down and not self._down:
            self._down = True
            self._server.close()                # type: ignore[union-attr]
            for conn in list(self._conns):
                conn.cut()
        elif down is False and self._down:
            await self._listen()
            self._down = False

    async def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            self.port = sock.getsockname()[1]
            self._server = await asyncio.start_server(self._accept, sock=sock)
        except BaseException:
            sock.close()
            raise

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _Conn(self, reader, writer).run()
        except asyncio.CancelledError:          # 3.11's start_server logs an error for a cancelled handler
            pass

    async def _main(self, ready: concurrent.futures.Future[None]) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        try:
            await self._listen()
        except BaseException as e:
            return ready.set_exception(e)
        ready.set_result(None)
        cutter = asyncio.create_task(self._cutter())
        await self._stop.wait()
        cutter.cancel()
        if not self._down:
            self._server.close()                # type: ignore[union-attr]
        await asyncio.sleep(0)                  # let connections accepted just now register
        for conn in (conns := list(self._conns)):
            conn.cut(count=False)
            conn.task.cancel()
        await asyncio.gather(cutter, *(c.task for c in conns), return_exceptions=True)
        await asyncio.sleep(0.01)               # let the aborted transports finish closing

    async def _cutter(self) -> None:
        while True:
            every = self.cut_every
            await asyncio.sleep(self._cut_rng.uniform(*every) if every else 0.05)
            for conn in list(self._conns) if every and self.cut_every else []:
                conn.cut()
