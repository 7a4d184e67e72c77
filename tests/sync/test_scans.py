"""Scans: sealed at the station, sent after the case record, resumable, verified at the county."""

from __future__ import annotations

import base64
import hashlib
import io
import os

import httpx
from PIL import Image

from central.county import County, Settings as CentralSettings
from crypto.keys import Identity
from node.station import Station
from sync import blobs, client
from tests.sync.test_protocol_machine import form_for


def photo(w: int = 3000, h: int = 2000) -> bytes:
    """A phone photo: 6 megapixels, noisy, a few MB of JPEG."""
    img = Image.merge("RGB", [Image.effect_noise((w, h), 40)] * 3)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


PDF = b"%PDF-1.4\n" + os.urandom(150_000) + b"\n%%EOF\n"


def county(system) -> County:
    return County(CentralSettings(data=system.data / "central"))


def application_with_scans(st: Station, http, system) -> dict:
    item = next(i for i in st.items() if len(i["materials"]) >= 2)
    form = form_for(item, 1)
    payload = {"item": item["code"], "decision": "accept",
               "applicant": {k: form[k] for k in ("name", "id_number")},
               "fields": {k[2:]: v for k, v in form.items() if k.startswith("f_")},
               "materials": form["materials"],
               "scans": [{"material": item["materials"][0]["code"], "name": "身份证.jpg",
                          "data_base64": base64.b64encode(photo()).decode()},
                         {"material": item["materials"][1]["code"], "name": "户口簿.pdf",
                          "data_base64": base64.b64encode(PDF).decode()}]}
    node = http(system.stations["V1"]["url"], system.stations["V1"]["token"])
    r = node.post("/api/v1/applications", json=payload)
    assert r.status_code == 201, r.text
    return r.json()


def test_case_arrives_first_then_its_scans_complete_it(system, station, http):
    app = application_with_scans(station, http, system)
    big = next(s for s in app["scans"] if s["name"].endswith(".jpg"))
    assert big["size"] < 1_500_000                                   # downscaled from ~20 MB of pixels
    with httpx.Client(timeout=30) as h:                              # events only
        client.sync_once(station.store.transaction, h, me=station.me, station="V1", county=station.county,
                         apply=station.apply_down)
    boss = http(system.central_url, system.central_token)
    case = boss.get(f"/api/v1/cases/{app['id']}").json()
    assert case["status"] == "received" and not case["scans_complete"] and len(case["scans_missing"]) == 2
    assert station.sync_state()["scans_waiting"] == 2
    station.sync()                                                   # now the scans
    case = boss.get(f"/api/v1/cases/{app['id']}").json()
    assert case["scans_complete"] and case["scans_missing"] == []
    assert station.sync_state()["scans_waiting"] == 0
    c = county(system)
    try:
        data, mime = c.scan_bytes(c.store.case(app["id"]), big["sha256"])
    finally:
        c.store.close()
    assert mime == "image/jpeg" and hashlib.sha256(data).hexdigest() == big["sha256"]
    sealed = (station.blob_dir / f"{big['sha256']}.sealed").read_bytes()
    assert b"JFIF" not in sealed and data[:64] not in sealed         # the station holds no readable scan


class LoseEveryOtherAnswer(httpx.BaseTransport):
    """The county stores each chunk, but every other answer is lost on the way back."""

    def __init__(self) -> None:
        self.inner, self.n, self.patched = httpx.HTTPTransport(), 0, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        resp = self.inner.handle_request(request)
        if request.method == "PATCH":
            self.patched += len(request.content)
            self.n += 1
            if self.n % 2:
                resp.read()
                resp.close()
                raise httpx.ReadError("connection reset by peer")
        return resp

    def close(self) -> None:
        self.inner.close()


def test_a_scan_resumes_after_cuts_and_never_restarts_from_zero(system, station, http):
    app = application_with_scans(station, http, system)
    with httpx.Client(timeout=30) as h:
        client.sync_once(station.store.transaction, h, me=station.me, station="V1", county=station.county,
                         apply=station.apply_down)
    link = LoseEveryOtherAnswer()
    sealed_total = sum(s["size"] + 48 for s in app["scans"])
    with httpx.Client(transport=link, timeout=30) as h:
        for _ in range(20):
            try:
                station.upload_scans(h)
                break
            except Exception:  # noqa: BLE001 - a cut; the next pass resumes
                continue
    assert station.sync_state()["scans_waiting"] == 0
    assert link.patched < 1.2 * sealed_total                        # resent chunks only, no restart
    assert http(system.central_url, system.central_token).get(f"/api/v1/cases/{app['id']}").json()["scans_complete"]


def test_bad_scan_requests_are_refused_and_harm_nothing(system, station, http):
    app = application_with_scans(station, http, system)
    with httpx.Client(timeout=30) as h:
        client.sync_once(station.store.transaction, h, me=station.me, station="V1", county=station.county,
                         apply=station.apply_down)
    scan = app["scans"][1]
    sha, total = scan["sha256"], scan["size"] + 48
    url = system.central_url + blobs.BLOB_PATH + sha
    c = http(system.central_url)

    def patch(body: bytes, *, offset=0, length=total, signer=station.me, digest=sha, sign=True):
        headers = {"lastmile-station": "V1", "upload-offset": str(offset), "upload-length": str(length)}
        if sign:
            headers["lastmile-signature"] = blobs.sign_request(signer, "V1", digest, offset, length)
        return c.patch(system.central_url + blobs.BLOB_PATH + digest, content=body, headers=headers)

    assert patch(b"x" * 10, sign=False).status_code == 400
    assert patch(b"x" * 10, signer=Identity.generate()).status_code == 401
    assert patch(b"x" * 10, digest="ab" * 32).status_code == 404
    assert patch(b"x" * 10, length=total + 1).status_code == 400
    junk = patch(os.urandom(total))                                  # right size, wrong content
    assert junk.status_code == 422 and junk.json()["error"] == "bad_scan"
    head = c.head(url, headers={"lastmile-station": "V1", "upload-length": str(total),
                                "lastmile-signature": blobs.sign_request(station.me, "V1", sha, "head", total)})
    assert head.status_code == 200 and head.headers["upload-offset"] == "0"      # junk was discarded
    station.sync()
    assert http(system.central_url, system.central_token).get(f"/api/v1/cases/{app['id']}").json()["scans_complete"]


def test_a_file_that_is_not_a_scan_gets_a_plain_refusal(system, station, http):
    item = station.items()[0]
    form = form_for(item, 2)
    node = http(system.stations["V1"]["url"], system.stations["V1"]["token"])
    r = node.post("/api/v1/applications", json={
        "item": item["code"], "decision": "accept", "applicant": {k: form[k] for k in ("name", "id_number")},
        "fields": {k[2:]: v for k, v in form.items() if k.startswith("f_")}, "materials": form["materials"],
        "scans": [{"material": item["materials"][0]["code"], "name": "x.exe",
                   "data_base64": base64.b64encode(b"MZ\x90\x00" * 100).decode()}]})
    assert r.status_code == 422 and "JPEG" in r.json()["message"] or "照片" in r.json()["message"]
    assert station.sync_state()["up_written"] == 0


def test_the_county_keeps_the_part_of_a_chunk_that_came_before_a_cut(system, station, http):
    from tests.faultproxy import FaultProxy
    app = application_with_scans(station, http, system)
    with httpx.Client(timeout=30) as h:
        client.sync_once(station.store.transaction, h, me=station.me, station="V1", county=station.county,
                         apply=station.apply_down)
    scan = max(app["scans"], key=lambda s: s["size"])
    sealed = (station.blob_dir / f"{scan['sha256']}.sealed").read_bytes()
    host, port = system.central_url.replace("http://", "").split(":")
    # Rate-limited as on a real link, so the county reads bytes as they come instead of letting
    # them pile up in socket buffers that a reset throws away.
    with FaultProxy((host, int(port)), rate_bps=4_000_000, cut_after_bytes=len(sealed) // 3) as proxy, \
            httpx.Client(timeout=30) as h:
        offset = blobs.upload(h, proxy.url, me=station.me, station="V1", sha=scan["sha256"], sealed=sealed,
                              chunk=len(sealed), sleep=lambda s: None)
        assert offset == len(sealed) and proxy.stats.cuts >= 2
        assert proxy.stats.bytes_up < 1.15 * len(sealed)          # each cut cost only what was in flight
    c = county(system)
    try:
        assert c.store.scans_of(app["id"])[[s["sha256"] for s in c.store.scans_of(app["id"])].index(scan["sha256"])]["received_at"]
    finally:
        c.store.close()
