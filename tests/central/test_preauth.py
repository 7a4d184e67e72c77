"""Someone with no key, on the link to the county: memory and connections before authentication
(issue 15, finding 5). Raw sockets against real servers on loopback."""

from __future__ import annotations

import json
import select
import socket
import struct
import threading
import time

from central.app import create_app as central_app
from central.county import County, Settings as CentralSettings
from crypto import canonical
from tests.central.test_link_attacks import address, rss_mib
from tests.conftest import serve

MiB = 1024 * 1024


def envelope_head(sender: str, from_key: str, total: int) -> bytes:
    """The first bytes of a push envelope of ``total`` bytes that names ``sender``: well formed, not signed."""
    header = canonical.dumps({"v": 1, "kind": "push", "from": sender, "to": "county", "from_key": from_key,
                              "to_key": "k", "comp": "zstd", "id": "0" * 24})
    clen = total - 13 - len(header) - 64
    return b"LMSE\x01" + struct.pack(">I", len(header)) + header + struct.pack(">I", clen)


def answer_of(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        piece = sock.recv(65536)
        if not piece:
            break
        body += piece
    status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.1") else 0
    try:
        return status, json.loads(body) if body else {}
    except ValueError:
        return status, {}


def push_until_answered(url: str, head: bytes, total: int) -> tuple[int, dict, int]:
    """POST a ``total``-byte push that starts with ``head`` and goes on with zeros, as fast as the
    county takes it, until it answers; (status, JSON, bytes sent)."""
    sock = socket.create_connection(address(url), timeout=60)
    sock.sendall(f"POST /sync/v1/exchange HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\n\r\n".encode() + head)
    sent, piece = len(head), b"\0" * 65536
    try:
        while sent < total and not select.select([sock], [], [], 0)[0]:
            sock.sendall(piece[:total - sent])
            sent += min(len(piece), total - sent)
        status, body = answer_of(sock)
    finally:
        sock.close()
    return status, body, sent


def station_key(system, code: str) -> str:
    county = County(CentralSettings(data=system.data / "central"))
    try:
        return county.station_keys(code).sign_id
    finally:
        county.store.close()


def test_24_unauthenticated_16_mib_pushes_are_refused_from_their_header(system):
    before, started = rss_mib(), time.monotonic()
    total = 16 * MiB
    results = [push_until_answered(system.central_url, envelope_head(f"X{i}", "k", total), total) for i in range(24)]
    assert {(s, b["error"]) for s, b, _ in results} == {(403, "unknown_station")}
    assert max(sent for _, _, sent in results) <= 8 * MiB    # refused after its header (and what the socket buffers held)
    assert rss_mib() - before < 64 and time.monotonic() - started < 60
    # a real station's name, a length that is not what Content-Length says: refused at the header too
    key = station_key(system, "V1")
    status, body, sent = push_until_answered(system.central_url, envelope_head("V1", key, 8 * MiB), 16 * MiB)
    assert (status, body["error"]) == (400, "malformed_envelope") and sent <= 8 * MiB
    # a header that declares more than 16 MiB, sent chunked (no Content-Length to judge by)
    sock = socket.create_connection(address(system.central_url), timeout=30)
    head = envelope_head("V1", key, 64 * MiB)
    sock.sendall(b"POST /sync/v1/exchange HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 + b"%x\r\n%s\r\n" % (len(head), head))
    status, body = answer_of(sock)
    sock.close()
    assert (status, body["error"]) == (413, "envelope_too_large")


def test_forged_pushes_in_a_real_station_s_name_share_one_budget(system):
    """A push naming V1 with its real key id passes the header check: until its signature is
    checked at the end, every byte of it counts against the county's one budget."""
    settings = CentralSettings(data=system.data / "central", max_unverified_bytes=3 * MiB)
    app = central_app(settings)
    key = station_key(system, "V1")
    with serve(app) as url:
        holders = []
        for _ in range(2):                   # two forgers, 1.4 MiB of a 2 MiB push each, then they wait
            sock = socket.create_connection(address(url), timeout=30)
            sock.sendall(b"POST /sync/v1/exchange HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (2 * MiB)
                         + envelope_head("V1", key, 2 * MiB) + b"\0" * (1400 * 1024))
            holders.append(sock)
        deadline = time.monotonic() + 10
        while app.state.unverified.held < 2700 * 1024 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.state.unverified.held >= 2700 * 1024
        status, body, sent = push_until_answered(url, envelope_head("V1", key, 2 * MiB), 2 * MiB)
        assert (status, body["error"]) == (503, "busy_unverified") and body["details"]["retry_after"] >= 5
        assert app.state.unverified.peak <= 3 * MiB                   # never more held than the budget
        for sock in holders:
            sock.close()
        deadline = time.monotonic() + 10
        while app.state.unverified.held and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.state.unverified.held == 0                         # given back when they went away


def raw(url: str, data: bytes) -> socket.socket:
    sock = socket.create_connection(address(url), timeout=60)
    if data:
        sock.sendall(data)
    return sock


def test_half_sent_heads_stalled_and_trickling_bodies_are_cut(system):
    """Old uvicorn behaviour: each of these stays open for good (heads) or until the push deadline
    of 60 s + size / 4 KiB/s (bodies). Now: heads 20 s, a stalled body 30 s, a trickle ~20 s."""
    key = station_key(system, "V1")
    county, station = system.central_url, system.stations["V1"]["url"]
    cases = {
        "half head, county": raw(county, b"POST /sync/v1/exchange HTTP/1.1\r\nHost: x\r\nContent-Le"),
        "half head, station": raw(station, b"GET /login HTTP/1.1\r\nHo"),
        "idle connection": raw(county, b""),
        "stalled enrolment": raw(county, b"POST /enroll/v2 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                         b"Content-Length: 1000\r\n\r\n{\"station\": "),
        "stalled push": raw(county, b"POST /sync/v1/exchange HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                                    % (100_000,) + envelope_head("V1", key, 100_000)),
    }
    trickler = raw(county, b"POST /sync/v1/exchange HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (100_000,)
                   + envelope_head("V1", key, 100_000))
    cases["trickled push"] = trickler
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(1.0):
            try:
                trickler.sendall(b"\0" * 16)                         # 16 B/s: far below the floor
            except OSError:
                return
    threading.Thread(target=trickle, daemon=True).start()
    started = time.monotonic()
    closed: dict[str, tuple[float, int, dict]] = {}
    try:
        while len(closed) < len(cases) and time.monotonic() - started < 45:
            ready, _, _ = select.select([s for n, s in cases.items() if n not in closed], [], [], 1.0)
            for sock in ready:
                name = next(n for n, s in cases.items() if s is sock)
                status, body = answer_of(sock)
                closed[name] = (time.monotonic() - started, status, body)
    finally:
        stop.set()
        for sock in cases.values():
            sock.close()
    assert set(closed) == set(cases), f"still open after 45 s: {set(cases) - set(closed)}"
    assert closed["half head, county"][1] == closed["half head, station"][1] == 408
    assert closed["idle connection"][1] == 0                          # closed without a word
    assert all(15 < t < 26 for n, (t, _, _) in closed.items() if "head" in n or "idle" in n)
    for name in ("stalled enrolment", "stalled push", "trickled push"):
        assert closed[name][1] == 408 and closed[name][2]["error"] == "too_slow", (name, closed[name])
    assert 28 < closed["stalled push"][0] < 36 and 28 < closed["stalled enrolment"][0] < 36
    assert 18 < closed["trickled push"][0] < 30
    assert system.stations and system.central_url                   # both servers still answer
