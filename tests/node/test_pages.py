"""The station's pages stay responsive: a dead link or a huge picture never freezes them."""

from __future__ import annotations

import base64
import contextlib
import io
import resource
import socket
import sqlite3
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Iterator

import pytest

from node.app import create_app as node_app
from node.settings import Settings as NodeSettings
from tests.conftest import add_station, log_in, make_county, serve
from central.app import create_app as central_app
from tests.sync.test_protocol_machine import form_for


@contextlib.contextmanager
def blackhole() -> Iterator[str]:
    """A URL whose port accepts connections (the kernel does the handshake) but never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@pytest.fixture
def cut_off_station(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """An enrolled station whose county has become unreachable: requests hang until they time out."""
    central, _ = make_county(tmp_path / "central")
    with serve(central_app(central)) as central_url:
        settings, token = add_station(central, central_url, tmp_path / "V1", "V1", "village")
    with blackhole() as dead_url:
        db = sqlite3.connect(settings.db_path)
        with db:
            db.execute("UPDATE meta SET value = ? WHERE name = 'county_url'", (dead_url,))
        db.close()
        yield {"settings": NodeSettings(data=settings.data, sync_interval=3600, http_timeout=4), "token": token}


def timed_get(client: Any, path: str) -> tuple[float, int, str]:
    start = time.monotonic()
    r = client.get(path)
    return time.monotonic() - start, r.status_code, r.text


@pytest.mark.parametrize("background_sync", [True, False], ids=["with-loop", "without-loop"])
def test_sync_now_on_a_dead_link_never_freezes_other_pages(cut_off_station, http, background_sync):
    with serve(node_app(cut_off_station["settings"], background_sync=background_sync)) as url:
        page, _ = log_in(http, url, "agent")
        other, _ = log_in(http, url, "agent")
        api = http(url, cut_off_station["token"])
        csrf = page.get("/").text.split('name="csrf" value="')[1].split('"')[0]

        pressed: dict[str, Any] = {}

        def press() -> None:
            start = time.monotonic()
            r = page.post("/sync", data={"csrf": csrf}, follow_redirects=False)
            pressed.update(seconds=time.monotonic() - start, status=r.status_code, location=r.headers.get("location"))

        presser = threading.Thread(target=press)
        presser.start()
        time.sleep(0.05)
        # While the sync hangs on the dead link, every page still loads at once.
        timings = [timed_get(other, "/"), timed_get(other, "/applications/nope"), timed_get(api, "/api/v1/status"),
                   timed_get(other, "/login")]
        presser.join(timeout=10)
        assert pressed["status"] == 303 and pressed["seconds"] < 1, pressed
        for seconds, _status, _text in timings:
            assert seconds < 1, timings
        assert [t[1] for t in timings] == [200, 404, 200, 200]

        # The agent sees that a sync is under way, and the page reloads by itself until it is over.
        seconds, status, text = timed_get(page, pressed["location"])
        assert seconds < 1 and status == 200
        assert 'id="syncing"' in text and "正在同步" in text
        assert page.get("/").headers.get("refresh") == "2"
        assert [timed_get(other, "/")[0] < 1 for _ in range(3)] == [True] * 3


def test_sync_now_reports_how_it_went(system, http):
    v1 = system.stations["V1"]
    page, home = log_in(http, v1["url"], "agent")
    csrf = home.text.split('name="csrf" value="')[1].split('"')[0]
    r = page.post("/sync", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/?m=syncing"
    deadline = time.monotonic() + 30
    while True:
        shown = page.get("/?m=syncing")
        if "refresh" not in shown.headers:
            break
        assert time.monotonic() < deadline, "the sync never finished"
        time.sleep(0.2)
    assert "同步完成。" in shown.text and 'id="syncing"' not in shown.text
    assert 'id="last-result"' in shown.text and "已完成" in shown.text


def bomb_png(width: int = 10_900, height: int = 10_900) -> bytes:
    """A decompression bomb: a valid grey PNG of ~119 million pixels, all black, in ~120 KB. Built
    row by row with zlib, so making it needs no memory."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    z = zlib.compressobj(6)
    row = bytes(width + 1)                       # filter byte 0, then one zero byte per pixel
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture
def catalogued(system, http) -> dict[str, Any]:
    v1 = system.stations["V1"]
    api = http(v1["url"], v1["token"])
    assert api.post("/api/v1/sync").status_code == 200                      # the catalogue
    item = next(i for i in api.get("/api/v1/catalog").json()["items"] if i["materials"])
    return {"url": v1["url"], "api": api, "item": item, "form": form_for(item, 3)}


def apply_with_picture(catalogued, http, name: str, data: bytes):
    """The agent accepts an application on the page with ``data`` as its first scan: (the answer,
    seconds it took, MB the process's peak memory grew)."""
    item, form = catalogued["item"], catalogued["form"]
    page, home = log_in(http, catalogued["url"], "agent")
    csrf = home.text.split('name="csrf" value="')[1].split('"')[0]
    token = page.get(f"/apply/{item['code']}").text.split('name="submit_token" value="')[1].split('"')[0]
    before, start = peak_rss_mb(), time.monotonic()
    r = page.post(f"/apply/{item['code']}", data={**form, "csrf": csrf, "submit_token": token, "decision": "accept"},
                  files={f"scan_{item['materials'][0]['code']}": (name, data, "image/png")})
    return r, time.monotonic() - start, peak_rss_mb() - before


def test_a_decompression_bomb_is_refused_on_the_page_fast_and_small(catalogued, http):
    bomb = bomb_png()
    assert len(bomb) < 500_000
    r, took, grew = apply_with_picture(catalogued, http, "bomb.png", bomb)
    assert r.status_code == 422
    assert "图片像素过多" in r.text                                           # the page says why
    assert took < 2 and grew < 100, (took, grew)
    assert catalogued["api"].get("/api/v1/status").json()["sync"]["up_written"] == 0   # nothing taken


def test_a_decompression_bomb_is_refused_by_the_api(catalogued):
    item, form = catalogued["item"], catalogued["form"]
    body = {"item": item["code"], "decision": "accept", "applicant": {k: form[k] for k in ("name", "id_number")},
            "fields": {k[2:]: v for k, v in form.items() if k.startswith("f_")}, "materials": form["materials"],
            "scans": [{"material": item["materials"][0]["code"], "name": "bomb.png",
                       "data_base64": base64.b64encode(bomb_png()).decode()}]}
    before, start = peak_rss_mb(), time.monotonic()         # the clock runs for the station, not for making the bomb
    r = catalogued["api"].post("/api/v1/applications", json=body)
    took, grew = time.monotonic() - start, peak_rss_mb() - before
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "invalid" and "图片像素过多" in body["message"] and "scans[0]" in body["details"]
    assert took < 2 and grew < 100, (took, grew)
    assert catalogued["api"].get("/api/v1/status").json()["sync"]["up_written"] == 0


def test_a_big_but_honest_photo_still_goes_through(catalogued):
    from PIL import Image
    item, form = catalogued["item"], catalogued["form"]
    out = io.BytesIO()
    # 16 MP: an RGB PNG that decodes to exactly 64 MB (Pillow keeps RGB in four bytes a pixel), the most
    # a picture may take to open; a 24 MP PNG (96 MB) is refused since issue 15, finding 13
    Image.new("RGB", (4000, 4000), "white").save(out, "PNG")
    r = catalogued["api"].post("/api/v1/applications", json={
        "item": item["code"], "decision": "accept", "applicant": {k: form[k] for k in ("name", "id_number")},
        "fields": {k[2:]: v for k, v in form.items() if k.startswith("f_")}, "materials": form["materials"],
        "scans": [{"material": item["materials"][0]["code"], "name": "scan.png",
                   "data_base64": base64.b64encode(out.getvalue()).decode()}]})
    assert r.status_code == 201, r.text
    assert r.json()["scans"][0]["name"] == "scan.jpg"


def colour_png(width: int = 8000, height: int = 5000) -> bytes:
    """A 40-megapixel RGB PNG (exactly the pixel limit), all black, in ~170 KB: decoded, it takes
    160 MB (Pillow keeps RGB in four bytes a pixel)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    z = zlib.compressobj(6)
    row = bytes(3 * width + 1)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_a_picture_that_would_take_over_64_mb_to_decode_is_refused_before_decoding(catalogued, http, system):
    big = colour_png()
    assert len(big) < 400_000
    r, took, grew = apply_with_picture(catalogued, http, "大图.png", big)
    assert r.status_code == 422 and "解码后占用内存过大" in r.text, r.text[-2000:]
    assert took < 1.5 and grew < 64, (took, grew)
    # the county's result documents: the same bound, the same kind of message
    from tests.sync.test_decision_documents import b64
    item, form = catalogued["item"], catalogued["form"]
    app = catalogued["api"].post("/api/v1/applications", json={
        "item": item["code"], "decision": "accept", "applicant": {k: form[k] for k in ("name", "id_number")},
        "fields": {k[2:]: v for k, v in form.items() if k.startswith("f_")}, "materials": form["materials"]}).json()
    assert catalogued["api"].post("/api/v1/sync").status_code == 200
    county = http(system.central_url, system.clerk_tokens[item["department"]])
    start = time.monotonic()
    r = county.post(f"/api/v1/cases/{app['id']}/decision", json={
        "decision": "approve", "attachments": [{"name": "证照.png", "data_base64": b64(big)}]})
    assert r.status_code == 422 and r.json()["error"] == "bad_attachment" and time.monotonic() - start < 1.5
    assert "64 MB" in r.json()["message"], r.json()
