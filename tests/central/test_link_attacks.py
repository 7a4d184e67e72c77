"""Someone on the link with no key: a proxy in the middle, slow trickles, huge bodies, fake answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from central.county import County, Settings as CentralSettings
from crypto.keys import Identity
from node.services.enrolment import EnrolmentFailed, enroll
from node.settings import Settings as NodeSettings
from node.store import Store as NodeStore
from tests.conftest import serve

Rewrite = Callable[[str, str, Any], Any]     # (method, path, JSON) -> JSON


class MitmProxy:
    """A loopback HTTP proxy that forwards to the county and may rewrite JSON on the way."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.on_request: Rewrite = lambda method, path, body: body
        self.on_answer: Rewrite = lambda method, path, body: body
        self.seen: list[tuple[str, str, bytes]] = []

    async def forward(self, request: Request) -> Response:
        raw = await request.body()
        self.seen.append((request.method, request.url.path, raw))
        if raw and request.headers.get("content-type", "").startswith("application/json"):
            raw = json.dumps(self.on_request(request.method, request.url.path, json.loads(raw))).encode()
        async with httpx.AsyncClient(base_url=self.upstream) as http:
            resp = await http.request(request.method, request.url.path, content=raw or None,
                                      headers={"content-type": request.headers.get("content-type", "")})
        body = resp.content
        if resp.headers.get("content-type", "").startswith("application/json"):
            body = json.dumps(self.on_answer(request.method, request.url.path, resp.json())).encode()
        return Response(body, resp.status_code, media_type=resp.headers.get("content-type"))

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self.forward, methods=["GET", "POST"])])


@pytest.fixture
def mitm(system):
    proxy = MitmProxy(system.central_url)
    with serve(proxy.app()) as url:
        proxy.url = url
        yield proxy


def new_station(system, code: str) -> tuple[str, str]:
    county = County(CentralSettings(data=system.data / "central"))
    try:
        return county.add_station(code, f"{code}站", "village"), county.me.public.fingerprint()
    finally:
        county.store.close()


def county_station(system, code: str) -> dict[str, Any]:
    county = County(CentralSettings(data=system.data / "central"))
    try:
        return county.store.station(code)
    finally:
        county.store.close()


def node_enrolled(data: Path) -> str | None:
    store = NodeStore(NodeSettings(data=data).db_path)
    try:
        return store.meta("station_code")
    finally:
        store.close()


ATTACKER = Identity.generate().public.to_dict()


def test_a_proxy_that_swaps_the_station_keys_is_caught_and_nothing_is_enrolled(system, mitm, tmp_path):
    otp, fingerprint = new_station(system, "V5")
    mitm.on_request = lambda method, path, body: {**body, "keys": ATTACKER} if path == "/enroll/v2" else body
    with pytest.raises(EnrolmentFailed, match="403"):
        enroll(NodeSettings(data=tmp_path / "V5"), central_url=mitm.url, station="V5", code=otp, fingerprint=fingerprint)
    st = county_station(system, "V5")
    assert st["status"] == "pending" and st["sign_key"] is None                     # not the attacker's keys
    assert node_enrolled(tmp_path / "V5") is None
    assert all(otp.replace("-", "").encode() not in raw and otp.encode() not in raw for _, _, raw in mitm.seen)


def test_a_proxy_that_swaps_the_county_keys_is_caught_before_the_code_is_used(system, mitm, tmp_path):
    otp, fingerprint = new_station(system, "V6")
    fake = {"county_name": "county", "county_keys": ATTACKER}
    mitm.on_answer = lambda method, path, body: {**body, **fake} if path == "/enroll/v2/county" else body
    with pytest.raises(EnrolmentFailed, match="fingerprint does not match"):
        enroll(NodeSettings(data=tmp_path / "V6"), central_url=mitm.url, station="V6", code=otp, fingerprint=fingerprint)
    assert [path for method, path, _ in mitm.seen] == ["/enroll/v2/county"]       # no MAC ever left the station
    # A mistyped fingerprint does not burn the code either: over the honest link it still works.
    with pytest.raises(EnrolmentFailed, match="fingerprint does not match"):
        enroll(NodeSettings(data=tmp_path / "V6"), central_url=system.central_url, station="V6", code=otp,
               fingerprint="0000-0000-0000-0000-0000")
    info = enroll(NodeSettings(data=tmp_path / "V6"), central_url=system.central_url, station="V6", code=otp,
                  fingerprint=fingerprint.lower().replace("-", ""))
    assert info["county_fingerprint"] == fingerprint and county_station(system, "V6")["status"] == "active"


def test_without_the_fingerprint_check_the_code_still_binds_both_key_sets(system, mitm, tmp_path):
    otp, _ = new_station(system, "V7")
    mitm.on_answer = lambda method, path, body: {**body, "county_keys": ATTACKER} if path == "/enroll/v2/county" else body
    with pytest.raises(EnrolmentFailed, match="403"):
        enroll(NodeSettings(data=tmp_path / "V7"), central_url=mitm.url, station="V7", code=otp, fingerprint=None,
               check_fingerprint=False)
    assert county_station(system, "V7")["sign_key"] is None and node_enrolled(tmp_path / "V7") is None


def test_a_forged_county_answer_is_not_stored(system, mitm, tmp_path):
    otp, fingerprint = new_station(system, "V8")
    mitm.on_answer = lambda method, path, body: {**body, "county_keys": ATTACKER} if path == "/enroll/v2" else body
    with pytest.raises(EnrolmentFailed, match="does not prove"):
        enroll(NodeSettings(data=tmp_path / "V8"), central_url=mitm.url, station="V8", code=otp, fingerprint=fingerprint)
    assert node_enrolled(tmp_path / "V8") is None


def test_node_init_requires_the_fingerprint(tmp_path, capsys):
    from deploy.cli import main
    with pytest.raises(SystemExit):
        main(["node", "init", "--data", str(tmp_path), "--central", "http://127.0.0.1:9", "--station", "V1",
              "--enroll", "1A2B-3C4D-5E6F-7A8B"])
    assert "--fingerprint" in capsys.readouterr().err


def test_station_add_prints_the_fingerprint_and_a_qr_code(tmp_path, capsys):
    from deploy.cli import main
    assert main(["central", "init", "--data", str(tmp_path)]) == 0
    assert main(["central", "station", "add", "--data", str(tmp_path), "--code", "V1", "--name", "一号"]) == 0
    out = capsys.readouterr().out
    county = County(CentralSettings(data=tmp_path))
    try:
        assert f"--fingerprint {county.me.public.fingerprint()}" in out
    finally:
        county.store.close()
    assert "█" in out or "▀" in out or "\x1b[" in out                          # the QR code, drawn in the terminal


# slow trickles and huge bodies -------------------------------------------------------------
import os
import select
import socket
import threading
import time


def address(url: str) -> tuple[str, int]:
    host, port = url.replace("http://", "").split(":")
    return host, int(port)


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def send_huge(url: str, path: str, *, chunked: bool, total: int = 300 * 1024 * 1024,
              content_type: str = "application/octet-stream") -> tuple[int, int, float]:
    """POST ``total`` bytes (declared by Content-Length, or chunked); stop as soon as the server
    answers. Returns (status, bytes sent, seconds)."""
    started = time.monotonic()
    sock = socket.create_connection(address(url), timeout=30)
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n{length}\r\n\r\n".encode())
    piece, sent = b"0" * (1024 * 1024), 0
    if content_type.startswith("multipart/"):           # a well-formed file upload, so a parser would spool it
        piece = b'--x\r\nContent-Disposition: form-data; name="f"; filename="a.bin"\r\n\r\n' + piece[:-64]
    try:
        while sent < total and not select.select([sock], [], [], 0)[0]:
            frame = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
            sock.sendall(frame)
            sent += len(piece)
            piece = piece if not content_type.startswith("multipart/") else b"0" * (1024 * 1024)
            if not chunked and sent >= 4 * 1024 * 1024:
                break                           # the answer to a declared length must not wait for the body
    except (BrokenPipeError, ConnectionResetError):
        pass                                    # the server closed after answering: read what it said
    try:
        answer = sock.recv(4096)
    except ConnectionResetError:
        answer = b""
    finally:
        sock.close()
    status = int(answer.split(b" ")[1]) if answer.startswith(b"HTTP/1.1") else 0
    return status, sent, time.monotonic() - started


@pytest.mark.parametrize("path, content_type", [
    ("/enroll/v2", "application/json"),
    ("/login", "multipart/form-data; boundary=x"),
    ("/sync/v1/exchange", "application/octet-stream"),
])
@pytest.mark.parametrize("chunked", [False, True])
def test_huge_bodies_get_413_at_once_and_nothing_is_held_in_memory(system, http, path, content_type, chunked):
    before = rss_mib()
    status, sent, seconds = send_huge(system.central_url, path, chunked=chunked, content_type=content_type)
    # a chunked "push" of zeros is refused at its first bytes, as no envelope (400 malformed_envelope)
    assert status == (400 if chunked and path == "/sync/v1/exchange" else 413) and seconds < 10
    assert sent <= 32 * 1024 * 1024                                    # cut off near the limit, not at 300 MB
    assert rss_mib() - before < 100
    c = http(system.central_url)
    r = c.post(path, content=b"x" * (17 * 1024 * 1024), headers={"content-type": content_type})
    assert r.status_code == 413
    if path.startswith(("/enroll/", "/sync/", "/api/")):
        assert r.json()["error"] in ("too_large", "envelope_too_large") and r.json()["message"]
    else:
        assert "text/html" in r.headers["content-type"] and "过大" in r.text       # a plain sentence, in Chinese
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


def test_the_station_refuses_huge_bodies_too(system, http):
    url = system.stations["V1"]["url"]
    status, sent, seconds = send_huge(url, "/login", chunked=True, content_type="multipart/form-data; boundary=x")
    assert status == 413 and seconds < 10 and sent <= 32 * 1024 * 1024
    status, _, _ = send_huge(url, "/api/v1/applications", chunked=False, content_type="application/json")
    assert status == 413
    node = http(url, system.stations["V1"]["token"])
    r = node.post("/api/v1/applications", content=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                  headers={"content-type": "application/json"})
    assert r.status_code != 413                                        # an intake with scans may be large


def trickle(url: str, stop: threading.Event, opened: list[socket.socket]) -> None:
    """A connection that declares a push and sends one byte of it every second."""
    sock = socket.create_connection(address(url), timeout=30)
    opened.append(sock)
    sock.sendall(b"POST /sync/v1/exchange HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nLMSE")
    while not stop.wait(1.0):
        try:
            sock.sendall(b"\0")
        except OSError:
            return


def test_slow_trickles_do_not_take_the_sync_slots(system, http):
    from node.station import Station
    stop, opened = threading.Event(), []
    threads = [threading.Thread(target=trickle, args=(system.central_url, stop, opened), daemon=True) for _ in range(10)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)                                    # all ten are in, trickling
        assert len(opened) == 10
        st = Station(system.stations["V1"]["settings"])
        st.store.user_by_token(system.stations["V1"]["token"])   # unlocks (node/vault.py)
        try:
            started = time.monotonic()
            result = st.sync()                             # the catalogue comes down, in seconds
            assert result.received >= 1 and time.monotonic() - started < 5
        finally:
            st.store.close()
    finally:
        stop.set()
        for sock in opened:
            sock.close()


def test_junk_pushes_are_refused_before_they_take_a_slot(system, http):
    c = http(system.central_url)
    forged = b"LMSE\x01" + os.urandom(500)
    codes = {c.post("/sync/v1/exchange", content=forged).json()["error"] for _ in range(3)}
    assert codes == {"malformed_envelope"}


def test_every_page_of_both_apps_forbids_framing_and_foreign_form_targets(system, http):
    for url in (system.central_url, system.stations["V1"]["url"]):
        c = http(url)
        for path in ("/login", "/no-such-page"):
            r = c.get(path)
            assert "text/html" in r.headers["content-type"]
            csp = r.headers["content-security-policy"]
            assert "form-action 'self'" in csp and "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
