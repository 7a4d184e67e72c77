"""Every form and API that takes scans takes what intake takes: a 3 MB phone photo goes through the
supplement (补正) and the completion of a station notice (补齐材料), page and API, and a county
decision takes a 3 MB result document; a body over the real limit still gets the clear 413."""

from __future__ import annotations

import base64
import io
import os
import re
import socket

import pytest
from PIL import Image

from tests.conftest import log_in
from tests.life.test_case_life import APPLICANT, ITEM, accept, fields, sync

REQUIRED = [m["code"] for m in ITEM["materials"] if m.get("required")]
MATERIAL = ITEM["materials"][0]["code"]


def phone_photo() -> bytes:
    """A real phone-sized JPEG: noise does not compress, so 2000x1500 at quality 95 is ~3 MB."""
    out = io.BytesIO()
    Image.frombytes("RGB", (2000, 1500), os.urandom(2000 * 1500 * 3)).save(out, "JPEG", quality=95)
    data = out.getvalue()
    assert len(data) >= 3_000_000
    return data


@pytest.fixture(scope="module")
def photo() -> bytes:
    return phone_photo()


def csrf(page) -> str:
    return page.get("/").text.split('name="csrf" value="')[1].split('"')[0]


def correction_requested(system, http, station):
    case = accept(station)
    sync(station)
    county = http(system.central_url, system.clerk_tokens[ITEM["department"]])
    r = county.post(f"/api/v1/cases/{case['id']}/decision", json={
        "decision": "correction", "note": "请补交清晰件", "materials": [{"code": MATERIAL, "problem": "unclear"}]})
    assert r.status_code == 200, r.text
    sync(station)
    return case["id"]


def scans_of(station, case_id: str) -> list[dict]:
    return station.get(f"/api/v1/applications/{case_id}").json()["scans"]


def sealed_blob_exists(system, sha: str) -> bool:
    return any(sha in p.name for p in (system.data / "V1").rglob("*") if p.is_file())


def test_a_supplement_takes_a_3_mb_photo_on_the_page_and_over_the_api(system, http, photo):
    v1 = system.stations["V1"]
    station = http(v1["url"], v1["token"])
    sync(station)
    case_id = correction_requested(system, http, station)
    page, _ = log_in(http, v1["url"], "agent")
    r = page.post(f"/applications/{case_id}/supplement",
                  data={"csrf": csrf(page), "materials": [MATERIAL], "note": "手机拍的清晰件"},
                  files={f"scan_{MATERIAL}": ("手机照片.jpg", photo, "image/jpeg")})
    assert r.status_code == 200 and "过大" not in r.text, r.text[:500]
    assert str(r.url).endswith(f"/applications/{case_id}?m=supplemented")
    listed = [s for s in scans_of(station, case_id) if s["name"] == "手机照片.jpg"]
    assert listed and sealed_blob_exists(system, listed[0]["sha256"])

    # a second round, over the API: the same photo, base64 in JSON (~4 MB of body)
    sync(station)
    county = http(system.central_url, system.clerk_tokens[ITEM["department"]])
    assert county.post(f"/api/v1/cases/{case_id}/decision", json={
        "decision": "correction", "note": "再补一张", "materials": [{"code": MATERIAL, "problem": "unclear"}]}).status_code == 200
    sync(station)
    r = station.post(f"/api/v1/applications/{case_id}/supplement", json={
        "materials": [MATERIAL], "note": "", "scans": [{"material": MATERIAL, "name": "第二张.jpg",
                                                      "data_base64": base64.b64encode(phone_photo()).decode()}]})
    assert r.status_code == 200, r.text           # (another photo: the same bytes would be the same scan)
    assert [s["name"] for s in r.json()["scans"]].count("第二张.jpg") == 1
    sync(station)
    sync(station)           # the scans go up after the supplement that lists them
    case = county.get(f"/api/v1/cases/{case_id}").json()
    assert {"手机照片.jpg", "第二张.jpg"} <= {s["name"] for s in case["scans"]} and case["scans_complete"]


def station_notice(system, http):
    """A station correction notice taken over the API, and the agent's page open on its completion
    form: (the API client, the page, the form's applicant fields, the case id, the submit token)."""
    v1 = system.stations["V1"]
    station = http(v1["url"], v1["token"])
    sync(station)
    page, _ = log_in(http, v1["url"], "agent")
    base = {"csrf": csrf(page), **APPLICANT, **{"f_" + k: v for k, v in fields().items()}, "reason": ""}
    notice = station.post("/api/v1/applications", json={"item": ITEM["code"], "decision": "correction",
                                                        "applicant": APPLICANT, "fields": fields(), "materials": []})
    assert notice.status_code == 201, notice.text
    case_id = notice.json()["id"]
    token = page.get(f"/applications/{case_id}/complete").text.split('name="submit_token" value="')[1].split('"')[0]
    return station, page, base, case_id, token


def test_completing_a_station_notice_takes_a_3_mb_photo_on_the_page_and_over_the_api(system, http, photo):
    station, page, base, case_id, token = station_notice(system, http)
    done = page.post(f"/applications/{case_id}/complete",
                     data={**base, "submit_token": token, "decision": "accept", "materials": REQUIRED},
                     files={f"scan_{MATERIAL}": ("手机照片.jpg", photo, "image/jpeg")})
    assert done.status_code == 200 and "受理回执" in done.text, done.text[:500]
    listed = scans_of(station, case_id)
    assert [s["name"] for s in listed] == ["手机照片.jpg"] and sealed_blob_exists(system, listed[0]["sha256"])

    other = station.post("/api/v1/applications", json={"item": ITEM["code"], "decision": "correction",
                                                       "applicant": APPLICANT, "fields": fields(), "materials": []})
    r = station.post(f"/api/v1/applications/{other.json()['id']}/complete", json={
        "decision": "accept", "applicant": APPLICANT, "fields": fields(), "materials": REQUIRED,
        "scans": [{"material": MATERIAL, "name": "补齐.jpg", "data_base64": base64.b64encode(photo).decode()}]})
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    assert [s["name"] for s in r.json()["scans"]] == ["补齐.jpg"]


def test_a_county_decision_takes_a_3_mb_result_document_on_the_page_and_over_the_api(system, http, photo):
    v1 = system.stations["V1"]
    station = http(v1["url"], v1["token"])
    sync(station)
    first, second = accept(station), accept(station)
    sync(station)
    clerk, home = log_in(http, system.central_url, ITEM["department"])
    token = home.text.split('name="csrf" value="')[1].split('"')[0]
    r = clerk.post(f"/cases/{first['id']}/decision", data={"csrf": token, "decision": "approve", "note": "同意"},
                   files=[("attachments", ("结果证照.jpg", photo, "image/jpeg"))])
    assert r.status_code == 200 and "过大" not in r.text, r.text[:500]
    api = http(system.central_url, system.clerk_tokens[ITEM["department"]])
    r = api.post(f"/api/v1/cases/{second['id']}/decision", json={
        "decision": "approve", "attachments": [{"name": "结果.jpg", "data_base64": base64.b64encode(photo).decode()}]})
    assert r.status_code == 200, r.text
    sync(station)
    for case, name in ((first, "结果证照.jpg"), (second, "结果.jpg")):
        got = station.get(f"/api/v1/applications/{case['id']}").json()
        assert [a["name"] for a in got["decision"]["attachments"]] == [name]
        attachment = next(d for d in got["documents"] if d["kind"] == "attachment")
        page, _ = log_in(http, v1["url"], "agent")
        assert page.get(attachment["url"]).content == photo          # the very file, whole


def declared_too_large(url: str, path: str, content_type: str) -> tuple[int, str]:
    """Declare a body one byte over 64 MiB and send none of it: the answer must come at once."""
    host, port = re.match(r"http://([^:]+):(\d+)", url).groups()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                     f"Content-Length: {64 * 1024 * 1024 + 1}\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body.decode("utf-8", "replace")


def test_a_body_over_the_real_limit_still_gets_the_clear_413(system):
    url = system.stations["V1"]["url"]
    for path in ("/applications/x/supplement", "/applications/x/complete"):
        status, body = declared_too_large(url, path, "multipart/form-data; boundary=x")
        assert status == 413 and "提交的内容过大" in body and "分几次提交" in body
    for path in ("/api/v1/applications/x/supplement", "/api/v1/applications/x/complete"):
        status, body = declared_too_large(url, path, "application/json")
        assert status == 413 and '"too_large"' in body


def files_open_in(folder) -> set[str]:
    """What this process (the app servers run in its threads) holds open under ``folder``: a
    temporary file made with O_TMPFILE or unlinked at once shows here, never in the folder."""
    held = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)):
            held.add(target)
    return held


def test_an_uploaded_photo_is_never_spooled_in_clear_to_the_temporary_folder(system, http, photo, tmp_path,
                                                                              monkeypatch):
    import tempfile
    import threading
    spool = tmp_path / "tmpdir"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))          # TMPDIR of the server threads
    station, page, base, case_id, token = station_notice(system, http)
    seen: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.update(files_open_in(spool))
            stop.wait(0.001)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        done = page.post(f"/applications/{case_id}/complete",
                         data={**base, "submit_token": token, "decision": "accept", "materials": REQUIRED},
                         files={f"scan_{MATERIAL}": ("手机照片.jpg", photo, "image/jpeg")})
    finally:
        stop.set()
        watcher.join()
    assert done.status_code == 200 and "受理回执" in done.text, done.text[:500]
    assert [s["name"] for s in scans_of(station, case_id)] == ["手机照片.jpg"]
    assert seen == set() and list(spool.iterdir()) == []
