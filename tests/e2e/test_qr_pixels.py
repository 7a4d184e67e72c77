"""The QR code as printed, read back from the pixels Chromium draws (zxing-cpp), not from the string
that built it (issue 8): a genuine receipt verifies at ANOTHER station with the county stopped;
the same code altered, signed by the wrong station's key or with a forged signature is refused with
its reason."""

from __future__ import annotations

import base64
import io
import os

import httpx
import pytest
import segno
import zxingcpp
from PIL import Image

from crypto.keys import Identity
from sync import verify
from tests.conftest import PASSWORD
from tests.e2e.stoppable import stoppable_system
from tests.e2e.test_browser import browser, login, shot  # noqa: F401 - the module's browser fixture
from tests.e2e.test_walking_skeleton import full_application


def decode(png: bytes) -> str:
    """The text of the one QR code in a picture, as a phone's scanner reads it."""
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)).convert("L"))
    qrs = [b for b in found if b.format == zxingcpp.BarcodeFormat.QRCode]
    assert len(qrs) == 1, f"{len(qrs)} QR codes in the picture"
    return qrs[0].text


def printed(text: str) -> str:
    """``text`` printed as a QR code (as a forger would print it) and scanned back."""
    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="png", scale=4)
    return decode(out.getvalue())


@pytest.fixture
def offline(tmp_path):
    with stoppable_system(tmp_path) as pair:
        yield pair


def test_the_printed_qr_read_from_the_screen_verifies_at_another_station_offline(offline, browser):  # noqa: F811
    system, stop_county = offline
    v1, t1 = system.stations["V1"], system.stations["T1"]
    with httpx.Client(base_url=v1["url"], headers={"authorization": f"Bearer {v1['token']}"}, timeout=30) as node:
        assert node.post("/api/v1/sync").status_code == 200
        item = next(i for i in node.get("/api/v1/catalog").json()["items"] if i["code"].startswith("MZ"))
        created = node.post("/api/v1/applications", json=full_application(item))
        assert created.status_code == 201, created.text
        app = created.json()
    with httpx.Client(base_url=t1["url"], headers={"authorization": f"Bearer {t1['token']}"}, timeout=30) as other:
        assert other.post("/api/v1/sync").status_code == 200         # T1 holds the county's key directory
    stop_county()

    page = browser.new_page(locale="zh-CN")
    try:
        login(page, v1["url"], "agent", PASSWORD)
        page.goto(f"{v1['url']}/applications/{app['id']}/document")
        qr = page.locator(".qr svg")
        shot(page, "qr-receipt")
        scanned = decode(qr.screenshot())
        printed_code = page.locator("#verify-code strong").inner_text()
    finally:
        page.close()
    assert scanned == app["qr_text"]
    assert printed_code == app["verify_code"] and f"核验码 {printed_code}" in scanned

    public = httpx.Client(base_url=t1["url"], timeout=30)            # no login: anyone may check

    def check(text: str) -> dict:
        r = public.post("/api/v1/verify", json={"code": text})
        assert r.status_code == 200, r.text
        return r.json()

    with public:
        got = check(scanned)
        assert got["valid"] is True, got["reason"]
        assert (got["station"], got["receipt_no"], got["item"]) == ("V1", app["receipt_no"], item["name"])
        assert got["kind"] == "application.accepted" and got["verify_code"] == app["verify_code"]

        head, token = scanned.rsplit(verify.PREFIX, 1)
        # One character of the token changed (inside the event's hash the signature covers).
        i = 30
        altered = head + verify.PREFIX + token[:i] + ("B" if token[i] != "B" else "C") + token[i + 1:]
        got = check(printed(altered))
        assert got["valid"] is False
        assert got["reason"] == "签名不符：文书已被篡改或系伪造。"

        # One character of the printed text changed: the receipt number's last digit.
        no = app["receipt_no"]
        retyped = scanned.replace(no, no[:-1] + ("7" if no[-1] != "7" else "8"), 1)
        got = check(printed(retyped))
        assert got["valid"] is False and got["reason"] == "印制的文字与签名的核验码不符：文书已被篡改。"

        # The same document signed with T1's key while claiming to be V1's.
        _, parsed = verify.parse(scanned)
        t1_key = Identity.load(t1["settings"].key_dir)
        foreign = verify.make(sign=t1_key.sign, key_id=t1_key.public.sign_id, station="V1", station_name="V1站",
                              kind=parsed.kind, at=parsed.issued_at, event_hash=parsed.hash16 + "0" * 32,
                              receipt_no=parsed.receipt_no, item_code=parsed.item_code, item_name=item["name"])
        got = check(printed(foreign))
        assert got["valid"] is False
        assert got["reason"] == "签署本文书的密钥不属于服务站 V1：文书系伪造。"

        # A forged signature: V1's key id and the signed bytes kept, 64 bytes of someone's making.
        forged_sig = base64.urlsafe_b64encode(parsed.signed + os.urandom(64)).rstrip(b"=").decode()
        got = check(printed(head + verify.PREFIX + forged_sig))
        assert got["valid"] is False
        assert got["reason"] == "签名不符：文书已被篡改或系伪造。"
