"""一件事一次办 in Debian's Chromium: the agent takes 出生一件事 (two items, two departments) on ONE
form with a scan, and prints the sitting's receipt to an A4 PDF (1-2 pages, nothing wider than the
page). The form and the receipt are also checked at a 390 px phone width.

Screenshots go to $LASTMILE_SCREENSHOTS when it is set."""

from __future__ import annotations

import io
import re

from PIL import Image
from playwright.sync_api import expect

from sync.law.intake import valid_id_for_demo
from tests.conftest import PASSWORD
from tests.e2e.test_browser import browser, login, shot  # noqa: F401 - the module's browser fixture
from tests.e2e.test_browser_life import fits_a4

PHONE = {"width": 390, "height": 844}
DESK = {"width": 1366, "height": 768}


def no_sideways_scroll(page) -> None:
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth + 1"), \
        page.evaluate("""() => [...document.querySelectorAll('main *')]
            .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
            .map(e => e.tagName + ':' + (e.id || e.className)).slice(0, 10)""")


def test_a_bundle_intake_with_a_scan_and_its_receipt_on_a4(system, browser, tmp_path):  # noqa: F811
    v1 = system.stations["V1"]
    scan = tmp_path / "身份证.jpg"
    out = io.BytesIO()
    Image.new("RGB", (1200, 800), "white").save(out, "JPEG")
    scan.write_bytes(out.getvalue())
    station = browser.new_page(locale="zh-CN", viewport=DESK)
    login(station, v1["url"], "agent", PASSWORD)
    station.click("text=立即同步")
    expect(station.locator("#up-waiting")).to_have_text("0")
    expect(station.locator("#bundles")).to_contain_text("残疾人一件事")
    station.click("#bundles >> text=出生一件事")
    expect(station.locator("#bundle-items")).to_contain_text("县医疗保障局")
    station.fill("input[name=name]", "王芳")
    station.fill("input[name=id_number]", valid_id_for_demo("41152619900310002"))
    station.fill("input[name=address]", "王庄村")
    for field in station.locator("#bundle-form input[name^=f_]").all():
        kind = field.get_attribute("type") or field.get_attribute("inputmode") or ""
        field.fill({"date": "2026-12-20", "numeric": "1"}.get(kind, "文本"))
    for sel in station.locator("#bundle-form select").all():
        sel.select_option(index=1)
    assert station.locator(".files:has(input[name=scan_id_card])").count() == 1     # a shared material, scanned once
    for box in station.locator("input[name=materials]").all():
        box.check()
    station.set_input_files("input[name=scan_id_card]:not([capture])", str(scan))
    shot(station, "bundle-1-form")
    station.set_viewport_size(PHONE)
    no_sideways_scroll(station)
    shot(station, "bundle-2-form-phone")
    station.set_viewport_size(DESK)
    station.click("button[value=accept]")
    alert = station.locator("[role=alert]")
    if alert.count():
        raise AssertionError(alert.inner_text())
    expect(station.locator("#bundle-receipt")).to_contain_text("受理回执")
    rows = station.locator("#sitting-items tr.sitting-item")
    expect(rows).to_have_count(2)
    numbers = re.findall(r"V1-\d{8}-\d{5}", station.locator("#sitting-items").inner_text())
    assert len(set(numbers)) == 2
    dates = station.locator("#sitting-items .promised").all_inner_texts()
    assert len(dates) == 2 and dates[0] < dates[1]          # 3 and 5 working days
    expect(station.locator("#sitting-items")).to_contain_text("县卫生健康委员会")
    shot(station, "bundle-3-receipt")
    station.set_viewport_size(PHONE)
    no_sideways_scroll(station)
    shot(station, "bundle-4-receipt-phone")
    fits_a4(station, "bundle receipt")

    # At the county each item is its own case in its own department's queue, linked to the other.
    station.set_viewport_size(DESK)
    station.goto(v1["url"] + "/")
    station.click("text=立即同步")
    expect(station.locator("#up-waiting")).to_have_text("0")
    county = browser.new_page(locale="zh-CN", viewport=DESK)
    login(county, system.central_url, "weijian", PASSWORD)
    county.click(f"text={numbers[0]}")
    expect(county.locator("#bundle-cases")).to_contain_text("城乡居民基本医疗保险参保登记")
    assert county.locator("#bundle-cases a").count() == 0       # another department's case: no link
    shot(county, "bundle-5-county-case")
