"""A county (or someone on the link pretending to be it) that answers scan and document requests
wrongly: unsigned, badly signed, truncated, at the wrong offset, 4xx, 5xx. Each must leave a clear
error at the station (``last_error`` or the scan's / document's own error) and never a 500 from the
station's ``POST /api/v1/sync``.

``HostileCounty`` is a test tool like tests/faultproxy.py: a real HTTP server on loopback that
forwards everything to the real county, except the answers of the one kind it is told to spoil."""

from __future__ import annotations

import base64
import os
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from crypto.keys import Identity, b64
from node.services import documents
from sync import blobs
from tests.conftest import serve
from tests.sync.test_decision_documents import PDF, county_api, events_only, taken
from tests.sync.test_scans import application_with_scans

HOP = {"host", "content-length", "transfer-encoding", "connection"}


class HostileCounty:
    def __init__(self, upstream: str, kind: str, mode: str) -> None:
        self.upstream, self.kind, self.mode = upstream, kind, mode
        self.spoiled = 0
        self.stranger = Identity.generate()

    async def forward(self, request: Request) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.upstream, timeout=30) as http:
            return await http.request(request.method, request.url.path, content=await request.body(),
                                      headers={k: v for k, v in request.headers.items() if k not in HOP})

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        real = await self.forward(request)
        mine = (self.kind == "scan" and path.startswith(blobs.BLOB_PATH)
                and (request.method == "PATCH" or self.mode not in ("truncated",))) \
            or (self.kind == "doc" and path.startswith("/sync/v1/docs/"))
        if not mine:
            return Response(real.content, real.status_code, {k: v for k, v in real.headers.items() if k not in HOP})
        self.spoiled += 1
        if self.mode == "4xx":
            return Response(b'{"error": "revoked_station", "message": "no", "details": null}', 403,
                            media_type="application/json", headers={"lastmile-error": "revoked_station"})
        if self.mode == "5xx":
            return Response(b"Internal Server Error", 500, media_type="text/plain")
        headers = {k: v for k, v in real.headers.items() if k not in HOP}
        if self.kind == "scan":
            total = int(request.headers["upload-length"])
            if self.mode == "unsigned":
                headers.pop("lastmile-answer-signature", None)
            elif self.mode == "badly_signed":
                sha = path.rsplit("/", 1)[1]
                headers["lastmile-answer-signature"] = b64(self.stranger.sign(blobs.answer_bytes(
                    request.headers["lastmile-station"], sha, total, total, blobs.VERIFIED,
                    request.headers["lastmile-nonce"])))
                headers.update({"upload-offset": str(total), "lastmile-scan-state": blobs.VERIFIED})
            elif self.mode == "wrong_offset":          # the county's signature, another offset
                headers["upload-offset"] = str(total)
                headers["lastmile-scan-state"] = blobs.VERIFIED
            elif self.mode == "truncated":             # a PATCH answer cut after a few of its bytes
                return Response(b"{}", 200, {"content-length": "4000"})
            return Response(b"", real.status_code, headers)
        # documents
        if self.mode == "unsigned":                    # a 200 with the whole body, no Content-Range
            return Response(real.content, 200, media_type="application/octet-stream")
        if self.mode == "badly_signed":                # the right length, bytes that are not the document
            return Response(os.urandom(len(real.content)), real.status_code, headers)
        if self.mode == "wrong_offset":
            headers["content-range"] = "bytes 7-%d/%d" % (len(real.content) + 6, len(real.content) + 7)
            return Response(real.content, real.status_code, headers)
        if self.mode == "truncated":
            headers["content-length"] = str(len(real.content))
            return Response(real.content[: len(real.content) // 2], real.status_code, headers)
        raise AssertionError(self.mode)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self.handle, methods=["GET", "POST", "HEAD", "PATCH"])])


MODES = ["unsigned", "badly_signed", "truncated", "wrong_offset", "4xx", "5xx"]


def sync_through(system, station, http, hostile: HostileCounty) -> tuple[httpx.Response, dict[str, Any]]:
    with serve(hostile.app()) as url:
        station.set_central(url)
        try:
            node = http(system.stations["V1"]["url"], system.stations["V1"]["token"])
            r = node.post("/api/v1/sync", timeout=120)
        finally:
            station.set_central(system.central_url)
    assert hostile.spoiled >= 1
    assert r.status_code != 500 and r.headers["content-type"] == "application/json", r.text
    return r, node.get("/api/v1/status").json()["sync"]


@pytest.mark.parametrize("mode", MODES)
def test_a_wrong_scan_answer_leaves_a_clear_error_and_never_a_500(system, station, http, mode):
    application_with_scans(station, http, system)
    r, state = sync_through(system, station, http, HostileCounty(system.central_url, "scan", mode))
    assert state["scans_waiting"] == 2                                  # nothing counted as arrived
    if mode in ("4xx", "5xx"):                                           # refused: on the scan, the pass goes on
        assert r.status_code == 200
        codes = {f["error"].split(":")[0] for f in state["scans_failed"]}
        assert codes == {"revoked_station" if mode == "4xx" else "county_error"}
    else:                                                                # like a cut link: the pass stops
        assert r.status_code == 503 and r.json()["error"] in ("retry", "link_down")
        assert state["last_error"].startswith("scans:") and state["last_error_code"] in ("retry", "link_down")
    station.sync()                                                       # the honest county finishes the job
    assert station.sync_state()["scans_waiting"] == 0 and station.sync_state()["scans_failed"] == []


@pytest.mark.parametrize("mode", MODES)
def test_a_wrong_document_answer_leaves_a_clear_error_and_never_a_500(system, station, http, mode):
    app = taken(station)
    assert county_api(system, http, app).post(f"/api/v1/cases/{app['id']}/decision", json={
        "decision": "approve", "attachments": [{"name": "结果.pdf", "data_base64": base64.b64encode(PDF).decode()}]}
    ).status_code == 200
    events_only(station)
    [doc] = documents.pending(station)
    r, state = sync_through(system, station, http, HostileCounty(system.central_url, "doc", mode))
    assert not documents.received(station, doc["sha256"])
    errors = documents.errors(station)
    if mode == "truncated":                                              # a cut: kept, retried, then link_down
        assert r.status_code == 503 and state["last_error_code"] in ("retry", "link_down") and state["last_error"]
    else:
        assert r.status_code == 200
        expected = {"4xx": "revoked_station", "5xx": "rejected", "unsigned": "rejected"}.get(mode, "bad_document")
        assert errors[doc["sha256"]].startswith(expected + ":"), errors
    station.sync()
    assert documents.received(station, doc["sha256"]) and documents.errors(station) == {}
