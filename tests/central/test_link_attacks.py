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
from node.enroll import EnrolmentFailed, enroll
from node.station import Settings as NodeSettings
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
