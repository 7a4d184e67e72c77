"""Every document a citizen takes home, printed by Chromium to a PDF and read back as a scanner
and a reader would (issue 14): the page is A4, the text is the Chinese official one even when the
agent's session is in English, the typed verification code is printed, and the QR code read from
the page rendered at 150 dpi holds the exact text the API gives, which the station's /verify
accepts as genuine, as it accepts the typed code."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import zxingcpp
from PIL import Image

from tests.conftest import PASSWORD
from tests.node.test_bundles import BIRTH, FIELDS, ID
from tests.e2e.test_browser import browser, login  # noqa: F401 - the module's browser fixture
from tests.e2e.test_walking_skeleton import full_application

A4 = (595.28, 841.89)       # points
ENGLISH = re.compile(r"\b(Receipt|Notice|Decision|Applicant|Verification|Scan|Station|Agent|copies|Service)\b")


def pdf_tools() -> None:
    for tool in ("pdftoppm", "pdftotext", "pdfinfo"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is needed: apt-get install poppler-utils (make system-deps)")


def page_sizes(pdf: Path) -> list[tuple[float, float]]:
    out = subprocess.run(["pdfinfo", "-f", "1", "-l", "99", str(pdf)], capture_output=True, text=True,
                         check=True).stdout
    return [(float(w), float(h)) for w, h in re.findall(r"Page\s+\d+ size:\s+([\d.]+) x ([\d.]+) pts", out)]


def qr_texts(pdf: Path) -> list[str]:
    """Every QR code on the pages of ``pdf`` rendered at 150 dpi, as a scanner reads them."""
    prefix = pdf.with_suffix("")
    subprocess.run(["pdftoppm", "-r", "150", "-png", str(pdf), str(prefix)], check=True)
    found = []
    for png in sorted(pdf.parent.glob(prefix.name + "-*.png")):
        found += [b.text for b in zxingcpp.read_barcodes(Image.open(png).convert("L"))
                  if b.format == zxingcpp.BarcodeFormat.QRCode]
    return found


def test_every_printed_document_is_chinese_a4_and_its_qr_scans(system, browser, tmp_path):  # noqa: F811
    pdf_tools()
    v1 = system.stations["V1"]
    node = httpx.Client(base_url=v1["url"], headers={"authorization": f"Bearer {v1['token']}"}, timeout=30)
    county = lambda token: httpx.Client(base_url=system.central_url,  # noqa: E731
                                        headers={"authorization": f"Bearer {token}"}, timeout=30)
    with node:
        assert node.post("/api/v1/sync").status_code == 200
        item = next(i for i in node.get("/api/v1/catalog").json()["items"] if i["code"].startswith("MZ"))

        def take(decision: str = "accept", **extra) -> dict:
            r = node.post("/api/v1/applications", json={**full_application(item, decision), **extra})
            assert r.status_code == 201, r.text
            return r.json()

        approved, rejected, corrected = take(), take(), take()
        notice = take("correction", materials=[m["code"] for m in item["materials"] if m["required"]][1:])
        refused = take("refuse", reason="不属于本事项受理范围")
        r = node.post("/api/v1/applications", json={
            "bundle": "YJS-001", "decision": "accept", "materials": BIRTH,
            "applicant": {"name": "王芳", "id_number": ID, "phone": "13800138000", "address": "张村三组12号"},
            "items": [{"item": code, "fields": dict(fields)} for code, fields in FIELDS.items()]})
        assert r.status_code == 201, r.text
        sitting = r.json()["applications"][0]
        r = node.post("/api/v1/reports", json={"name": "赵大爷", "phone": "13900139000", "id_number": "",
                                               "tried": "办理高龄津贴", "where": "县政务服务中心", "item_code": "",
                                               "contact": "13900139000"})
        assert r.status_code == 201, r.text
        report = r.json()

        assert node.post("/api/v1/sync").status_code == 200
        with county(system.clerk_tokens[item["department"]]) as clerk:
            for case, body in ((approved, {"decision": "approve", "note": "符合条件，予以批准"}),
                               (rejected, {"decision": "reject", "reason": "家庭收入超过标准",
                                           "basis": "《临时救助办法》第五条"}),
                               (corrected, {"decision": "correction", "note": "", "materials": [
                                   {"code": item["materials"][0]["code"], "problem": "unclear"}]})):
                r = clerk.post(f"/api/v1/cases/{case['id']}/decision", json=body)
                assert r.status_code == 200, r.text
        assert node.post("/api/v1/sync").status_code == 200

        def document(case: dict, kind: str) -> dict:
            docs = node.get(f"/api/v1/applications/{case['id']}").json()["documents"]
            return next(d for d in docs if d["kind"] == kind)

        expected = {   # what prints: the page's url, qr_text and verify_code as the API gives them
            "receipt": document(approved, "receipt"),
            "station correction notice": document(notice, "correction_notice"),
            "refusal": document(refused, "refusal"),
            "approval": document(approved, "approval_notice"),
            "rejection": document(rejected, "rejection_decision"),
            "county correction request": document(corrected, "correction_request"),
            "bundle receipt": document(sitting, "bundle_receipt"),
            "report receipt": {"url": f"/reports/{report['id']}", "qr_text": report["qr_text"],
                               "verify_code": report["verify_code"]},
            "guide": {"url": f"/guide/{item['code']}"},
        }
        titles = {"receipt": "受理回执", "station correction notice": "材料补正通知书", "refusal": "不予受理决定书",
                  "approval": "办结通知书", "rejection": "不予批准决定书", "county correction request": "材料补正通知书",
                  "bundle receipt": "一件事一次办", "report receipt": "办不成事诉求受理回执", "guide": "办事指南"}
        for name, doc in expected.items():
            assert name == "guide" or doc["qr_text"] and doc["verify_code"], name

        page = browser.new_page(locale="en-US")
        try:
            login(page, v1["url"], "agent", PASSWORD)
            page.wait_for_url(lambda url: "/login" not in url)  # logged in before the language is set
            for _ in range(3):      # the start page's live refresh may answer with the session of just before
                page.goto(v1["url"] + "/lang/en")             # the agent reads the interface in English
                if page.locator("html").get_attribute("lang") == "en":
                    break
                page.wait_for_timeout(500)
            assert page.locator("html").get_attribute("lang") == "en"
            page.emulate_media(media="print")
            printed = {}
            for n, (title, doc) in enumerate(expected.items()):
                page.goto(v1["url"] + doc["url"])
                pdf = tmp_path / f"doc{n}.pdf"
                page.pdf(path=str(pdf), format="Letter", prefer_css_page_size=True, print_background=True)
                printed[title] = pdf
        finally:
            page.close()

        for title, pdf in printed.items():
            sizes = page_sizes(pdf)
            assert sizes and all(abs(w - A4[0]) <= 1 and abs(h - A4[1]) <= 1 for w, h in sizes), (title, sizes)
            text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
            assert titles[title] in text, (title, text[:300])
            assert not ENGLISH.search(text), (title, ENGLISH.search(text), text[:300])
            if title == "guide":
                continue
            doc = expected[title]
            assert doc["verify_code"] in text, title                   # the typed code, printed
            assert qr_texts(pdf) == [doc["qr_text"]], title            # the QR code, read off the paper
            got = node.post("/api/v1/verify", json={"code": doc["qr_text"]}).json()
            assert got["valid"] is True and got["verify_code"] == doc["verify_code"], (title, got)
            assert got["reason"].startswith("真实有效"), (title, got["reason"])
            typed = node.post("/api/v1/verify", json={"code": doc["verify_code"].lower()}).json()
            assert typed["valid"] is True and typed["kind"] == got["kind"], (title, typed)
