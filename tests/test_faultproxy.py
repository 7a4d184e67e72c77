"""The link simulator itself: it must really throttle, delay, cut, duplicate and go down."""

from __future__ import annotations

import gc
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import httpx
import pytest

from tests.faultproxy import FaultProxy

BLOB = bytes(range(256)) * 800          # 200 KB


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"       # keep-alive, like uvicorn
    disable_nagle_algorithm = True      # no 40 ms delayed-ACK stalls between headers and body
    posts: list[bytes] = []

    def do_GET(self) -> None:  # noqa: N802
        self._answer(BLOB if self.path == "/blob" else b"ok")

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["content-length"]))
        Upstream.posts.append(body)
        self._answer(str(len(body)).encode() if self.path == "/sink" else body)

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass                            # resets from cuts are the point here


@pytest.fixture
def upstream() -> Iterator[tuple[str, int]]:
    server = QuietServer(("127.0.0.1", 0), Upstream)
    t = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    t.start()
    Upstream.posts = []
    yield ("127.0.0.1", server.server_address[1])
    server.shutdown()
    server.server_close()
    t.join(5)
    gc.collect()                        # surface any unclosed-socket ResourceWarning in this test


def timed(fn, *args, **kwargs) -> tuple[httpx.Response, float]:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    r = fn(*args, **kwargs)
    return r, time.monotonic() - start


def test_download_throughput_follows_the_rate(upstream):
    with FaultProxy(upstream, rate_bps=800_000) as proxy, httpx.Client(base_url=proxy.url) as c:
        r, took = timed(c.get, "/blob")
        assert r.content == BLOB
        stats = proxy.stats
    rate = len(BLOB) * 8 / took
    assert 0.8 * 800_000 <= rate <= 1.2 * 800_000, rate
    assert stats.bytes_down > len(BLOB) and stats.connections == 1 and stats.cuts == 0


def test_upload_is_throttled_too(upstream):
    with FaultProxy(upstream, rate_bps=1_600_000) as proxy, httpx.Client(base_url=proxy.url) as c:
        r, took = timed(c.post, "/sink", content=BLOB)
        assert r.text == str(len(BLOB))
        assert proxy.stats.bytes_up > len(BLOB)
    rate = len(BLOB) * 8 / took
    assert 0.8 * 1_600_000 <= rate <= 1.2 * 1_600_000, rate
    assert Upstream.posts == [BLOB]


def test_latency_is_added_each_way(upstream):
    with FaultProxy(upstream, latency=0.2) as proxy, httpx.Client(base_url=proxy.url) as c:
        r, took = timed(c.get, "/small")
        assert r.status_code == 200
    assert 0.4 <= took < 1.0, took


def test_cut_after_bytes_breaks_the_transfer_exactly_there(upstream):
    with FaultProxy(upstream, cut_after_bytes=50_000) as proxy, httpx.Client(base_url=proxy.url) as c:
        with pytest.raises(httpx.TransportError):
            c.get("/blob")
        stats = proxy.stats
        assert stats.cuts >= 1
        assert stats.bytes_up + stats.bytes_down == 50_000
        assert c.get("/small").text == "ok"       # a fresh connection works until its own limit


def test_cuts_on_a_timer_hit_long_transfers(upstream):
    with FaultProxy(upstream, rate_bps=200_000, cut_every=(0.3, 0.5), seed=3) as proxy, \
            httpx.Client(base_url=proxy.url) as c:
        r, took = timed(pytest.raises, httpx.TransportError, c.get, "/blob")   # 8 s at this rate
        assert 0.25 <= took < 1.0, took
        assert proxy.stats.cuts >= 1
        assert c.get("/small").text == "ok"       # accepted again at once


def test_duplicated_requests_reach_the_server_twice(upstream):
    with FaultProxy(upstream, duplicate_p=1.0) as proxy, httpx.Client(base_url=proxy.url) as c:
        for body in (b"one", b"two", b"three"):
            r = c.post("/echo", content=body)
            assert r.status_code == 200 and r.content == body
        assert proxy.stats.duplicated == 3 and proxy.stats.requests == 3
    assert Upstream.posts == [b"one", b"one", b"two", b"two", b"three", b"three"]


def test_delayed_requests_are_held(upstream):
    with FaultProxy(upstream, delay_p=1.0, delay=(0.3, 0.3)) as proxy, httpx.Client(base_url=proxy.url) as c:
        r, took = timed(c.post, "/echo", content=b"x")
        assert r.content == b"x" and proxy.stats.delayed == 1
    assert 0.3 <= took < 1.0, took


def test_same_seed_same_faults(upstream):
    def run() -> list[int]:
        Upstream.posts = []
        with FaultProxy(upstream, duplicate_p=0.5, seed=42) as proxy, httpx.Client(base_url=proxy.url) as c:
            for i in range(12):
                assert c.post("/echo", content=b"%d" % i).status_code == 200
        seen = Counter(Upstream.posts)
        return [seen[b"%d" % i] for i in range(12)]

    first = run()
    assert first == run()
    assert set(first) == {1, 2}


def test_down_fails_fast_and_up_restores(upstream):
    with FaultProxy(upstream, rate_bps=200_000) as proxy, httpx.Client(base_url=proxy.url, timeout=5) as c:
        errors: list[Exception] = []

        def slow() -> None:
            try:
                c.get("/blob")
            except httpx.TransportError as e:
                errors.append(e)

        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.3)
        proxy.set(down=True)
        t.join(2)
        assert not t.is_alive() and len(errors) == 1        # the transfer in flight died
        assert proxy.stats.cuts == 1
        start = time.monotonic()
        with pytest.raises(httpx.ConnectError):
            c.get("/small")
        assert time.monotonic() - start < 2
        proxy.set(down=False)
        assert c.get("/small").text == "ok"
