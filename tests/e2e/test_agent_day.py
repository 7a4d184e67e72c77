"""An agent's whole day at village station V1 in Debian's Chromium (issue 8), once with the county up
and once with it down (its server stopped before the day starts: the station works offline):

log in; search (an earlier citizen by the last 6 of her ID number, a service by pinyin `dbsq`); an
intake with a scan; the receipt printed to an A4 PDF; that receipt verified at the OTHER station
(T1) from the QR code read off the screen; a correction notice; a hand-out of a case decided (and
synced) the day before; a 办不成事 report; with the county up, the day ends with a sync and the county
has the cases; then the admin disables the agent, whose next click lands on the login page with a
sentence saying why.

One function per step; the 一件事一次办 intake (出生一件事, two items, one scan) is one of them.
Every station page is shot at 1366×768 and at phone width 390×844 (under $LASTMILE_SCREENSHOTS when
set) and must not scroll sideways at 390 px."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.sync_api import expect

from sync.law.intake import valid_id_for_demo
from tests.conftest import PASSWORD, System
from tests.e2e.stoppable import stoppable_system
from tests.e2e.test_browser import SHOTS, browser, login  # noqa: F401 - the module's browser fixture
from tests.e2e.test_browser_life import fits_a4
from tests.e2e.test_qr_pixels import decode
from tests.e2e.test_walking_skeleton import full_application

DESK = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}
EARLIER_ID = valid_id_for_demo("41152619580312004")       # the citizen who applied the day before


@dataclass
class Day:
    system: System
    county: str                     # "up" or "down"
    page: Any                       # the agent's browser tab at V1
    tmp: Path
    earlier: dict[str, Any] = field(default_factory=dict)    # yesterday's case, decided by the county
    taken: list[str] = field(default_factory=list)           # receipt numbers of today's cases
    receipt_qr: str = ""

    @property
    def v1(self) -> str:
        return str(self.system.stations["V1"]["url"])


def look(day: Day, name: str, page: Any = None) -> None:
    """Shoot the page at desk and phone width; at phone width nothing may scroll sideways."""
    page = page or day.page
    for size in (PHONE, DESK):
        page.set_viewport_size(size)
        if SHOTS:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=f"{SHOTS}/day-{day.county}-{name}-{size['width']}.png", full_page=True)
        if size is PHONE:
            wide = page.evaluate("""() => [document.documentElement.scrollWidth, window.innerWidth,
                [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
                  .slice(0, 5).map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className)]""")
            assert wide[0] <= wide[1], f"{name} scrolls sideways at {PHONE['width']} px: {wide}"
            squeezed = page.evaluate("""() => [...document.querySelectorAll('main th')]
                .filter(th => th.getClientRects().length
                        && th.getBoundingClientRect().height > 3 * parseFloat(getComputedStyle(th).fontSize))
                .map(th => th.textContent.trim())""")
            assert squeezed == [], f"{name}: table headings squeezed onto several lines at phone width: {squeezed}"


# the day before (through the API: not what this test is about) --------------------------------------
def yesterday(system: System) -> dict[str, Any]:
    """V1 took an application of 李桂香 the day before; the county approved it and V1 has the result.
    T1 holds the county's key directory (to check V1's documents offline)."""
    v1, t1 = system.stations["V1"], system.stations["T1"]
    with httpx.Client(base_url=v1["url"], headers={"authorization": f"Bearer {v1['token']}"}, timeout=30) as node:
        node.post("/api/v1/sync").raise_for_status()
        item = next(i for i in node.get("/api/v1/catalog").json()["items"] if i["code"].startswith("MZ"))
        body = full_application(item)
        body["applicant"] = {**body["applicant"], "name": "李桂香", "id_number": EARLIER_ID}
        r = node.post("/api/v1/applications", json=body)
        assert r.status_code == 201, r.text
        app = r.json()
        node.post("/api/v1/sync").raise_for_status()
        with httpx.Client(base_url=system.central_url, timeout=30,
                          headers={"authorization": f"Bearer {system.central_token}"}) as county:
            county.post(f"/api/v1/cases/{app['id']}/decision",
                        json={"decision": "approve", "note": "符合条件，予以批准"}).raise_for_status()
        node.post("/api/v1/sync").raise_for_status()
        assert node.get(f"/api/v1/applications/{app['id']}").json()["status"] == "approved"
    with httpx.Client(base_url=t1["url"], headers={"authorization": f"Bearer {t1['token']}"}, timeout=30) as other:
        other.post("/api/v1/sync").raise_for_status()
    return app


# the day, one step each --------------------------------------------------------------------------------
def step_log_in(day: Day) -> None:
    day.page.goto(day.v1 + "/login")
    look(day, "01-login")
    login(day.page, day.v1, "agent", PASSWORD)
    expect(day.page.locator("#up-waiting")).to_be_visible()
    look(day, "02-home")


def step_search(day: Day) -> None:
    page = day.page
    page.fill("form.search input[name=q]", EARLIER_ID[-6:])
    page.click("form.search button")
    expect(page.locator("#found")).to_contain_text(day.earlier["receipt_no"])
    expect(page.locator("#found")).to_contain_text("李桂香")
    look(day, "03-search-id")
    page.fill("form.search input[name=q]", "dbsq")
    page.click("form.search button")
    expect(page.locator("#found-items")).to_contain_text("最低生活保障")
    look(day, "04-search-dbsq")


def fill_application(page: Any, name: str, id_number: str) -> None:
    page.fill("input[name=name]", name)
    page.fill("input[name=id_number]", id_number)
    page.fill("input[name=phone]", "13912345678")
    page.fill("input[name=address]", "张村二组8号")
    for f in page.locator("#apply-form textarea[name^=f_], #apply-form input[name^=f_]").all():
        kind = f.get_attribute("type") or f.get_attribute("inputmode") or ""
        f.fill({"date": "2026-11-20", "numeric": "3"}.get(kind, "因病致贫，家庭收入低于当地低保标准"))
    for sel in page.locator("#apply-form select").all():
        sel.select_option(index=1)


def step_intake_with_scan(day: Day) -> None:
    page = day.page
    page.locator("#found-items a").first.click()                    # from the search: 最低生活保障申请
    expect(page.locator("#apply-form h1")).to_contain_text("最低生活保障")
    fill_application(page, "王桂兰", valid_id_for_demo("41152619491231002"))
    for box in page.locator("input[name=materials]").all():
        box.check()
    scan = day.tmp / "身份证.jpg"
    Image.merge("RGB", [Image.effect_noise((1200, 800), 30)] * 3).save(scan, "JPEG")
    page.locator("input[type=file]").first.set_input_files(str(scan))
    look(day, "05-intake-form")
    page.click("button[value=accept]")
    expect(page.locator("article")).to_contain_text("受理回执")
    receipt_no = re.search(r"V1-\d{8}-\d{5}", page.locator("article").inner_text())[0]
    day.taken.append(receipt_no)
    day.receipt_qr = decode(page.locator(".qr svg").screenshot())       # what a phone reads off the paper
    assert receipt_no in day.receipt_qr
    look(day, "06-receipt")


def step_bundle_intake(day: Day) -> None:
    """一件事一次办: a mother registers a birth and insures the baby at one sitting, one form, one scan."""
    page = day.page
    page.goto(day.v1 + "/")
    page.click("#bundles >> text=出生一件事")
    expect(page.locator("#bundle-items")).to_contain_text("县医疗保障局")
    page.fill("input[name=name]", "刘晓燕")
    page.fill("input[name=id_number]", valid_id_for_demo("41152619950612002"))
    page.fill("input[name=phone]", "13812345678")
    page.fill("input[name=address]", "张村三组2号")
    for f in page.locator("#bundle-form input[name^=f_], #bundle-form textarea[name^=f_]").all():
        kind = f.get_attribute("type") or f.get_attribute("inputmode") or ""
        f.fill({"date": "2026-11-20", "numeric": "1"}.get(kind, "刘小宝"))
    for sel in page.locator("#bundle-form select").all():
        sel.select_option(index=1)
    for box in page.locator("input[name=materials]").all():
        box.check()
    scan = day.tmp / "出生医学证明.jpg"
    Image.merge("RGB", [Image.effect_noise((1000, 700), 30)] * 3).save(scan, "JPEG")
    page.set_input_files("input[name=scan_id_card]:not([capture])", str(scan))     # a material both items need: once
    look(day, "05b-bundle-form")
    page.click("button[value=accept]")
    items = page.locator("#sitting-items tr.sitting-item")
    expect(items).to_have_count(2)
    numbers = re.findall(r"V1-\d{8}-\d{5}", page.locator("#sitting-items").inner_text())
    assert len(set(numbers)) == 2, numbers                          # one case, one number, per item
    day.taken.extend(numbers)
    look(day, "05c-bundle-receipt")
    fits_a4(page, "bundle receipt")
    page.set_viewport_size(DESK)


def step_print_receipt(day: Day) -> None:
    fits_a4(day.page, "receipt")                                     # A4, 1-2 pages, nothing off the sheet
    if SHOTS:                                                        # the PDF itself, to look at
        day.page.emulate_media(media="print")
        day.page.pdf(path=f"{SHOTS}/day-{day.county}-06-receipt.pdf", format="A4", print_background=True,
                     margin={"top": "10mm", "bottom": "10mm", "left": "10mm", "right": "10mm"})
        day.page.emulate_media(media="screen")
    day.page.set_viewport_size(DESK)


def step_verify_at_the_other_station(day: Day, browser: Any) -> None:  # noqa: F811
    """A citizen (no login) checks the receipt at T1, which has never seen the case."""
    other = browser.new_page(locale="zh-CN")
    try:
        other.goto(str(day.system.stations["T1"]["url"]) + "/verify")
        other.fill("textarea[name=code]", day.receipt_qr)
        other.click("form.verify button")
        expect(other.locator("#verdict")).to_have_class(re.compile(r"\bvalid\b"))
        expect(other.locator("#receipt")).to_have_text(day.taken[0])
        look(day, "07-verify-at-T1", other)
    finally:
        other.close()


def step_correction_notice(day: Day) -> None:
    page = day.page
    page.goto(day.v1 + "/apply/MZ-001")
    fill_application(page, "赵春梅", valid_id_for_demo("41152619600310001"))
    boxes = page.locator("input[name=materials]").all()
    for box in boxes[1:]:
        box.check()                                                  # the first material is missing
    page.fill("textarea[name=reason]", "身份证原件未带")
    page.click("button[value=correction]")
    article = page.locator("article")
    expect(article).to_contain_text("材料补正通知书")
    expect(article.locator("#missing")).to_have_text("申请人居民身份证")       # the one missing material
    day.taken.append(re.search(r"V1-\d{8}-\d{5}", article.inner_text())[0])
    look(day, "08-correction-notice")
    fits_a4(page, "correction notice")
    page.set_viewport_size(DESK)


def step_hand_out(day: Day) -> None:
    page = day.page
    page.goto(day.v1 + "/")
    page.fill("form.search input[name=q]", EARLIER_ID[-6:])
    page.click("form.search button")
    page.locator("#found").locator(f"text={day.earlier['receipt_no']}").click()
    expect(page.locator("#handout-form")).to_be_visible()
    look(day, "09-case-to-hand-out")
    page.check("#handout-form input[name=identity_checked]")
    page.click("#handout-form button")
    expect(page.locator(".ok")).to_have_text("已登记出件。")
    look(day, "10-handed-out")


def step_report(day: Day) -> None:
    page = day.page
    page.goto(day.v1 + "/reports/new")
    page.fill("input[name=name]", "孙大爷")
    page.fill("input[name=phone]", "13700001111")
    page.fill("textarea[name=tried]", "在县医保窗口办理异地就医备案，跑了三次都说系统不通")
    page.fill("input[name=where]", "县政务服务中心医保窗口")
    look(day, "11-report-form")
    page.click("#report-form button")
    expect(page.locator("#report")).to_contain_text("孙大爷")
    look(day, "12-report-receipt")


def step_end_of_day_sync(day: Day) -> None:
    page = day.page
    page.goto(day.v1 + "/")
    if day.county == "down":
        expect(page.locator("#up-waiting")).not_to_have_text("0")   # kept, to go up when the link is back
        look(day, "13-home-offline")
        return
    page.click("text=立即同步")
    expect(page.locator("#up-waiting")).to_have_text("0", timeout=20000)
    look(day, "13-home-synced")
    with httpx.Client(base_url=day.system.central_url, timeout=30,
                      headers={"authorization": f"Bearer {day.system.central_token}"}) as county:
        got = {c["receipt_no"] for c in county.get("/api/v1/cases", params={"station": "V1"}).json()["cases"]}
    assert set(day.taken) <= got, (day.taken, got)


def step_admin_disables_the_agent(day: Day, browser: Any) -> None:  # noqa: F811
    admin = browser.new_page(locale="zh-CN")
    try:
        login(admin, day.v1, "admin", PASSWORD)
        admin.goto(day.v1 + "/staff")
        look(day, "14-staff", admin)
        admin.locator("#account-agent button", has_text="停用").click()
        expect(admin.locator("#account-agent")).to_contain_text("已停用")
        look(day, "15-staff-disabled", admin)
    finally:
        admin.close()
    page = day.page
    page.locator("form.search button").click()                      # the agent's next click
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.locator("[role=alert]")).to_contain_text("该账号已被停用")
    look(day, "16-thrown-out")


@pytest.mark.parametrize("county", ["up", "down"])
def test_an_agents_whole_day(county, browser, tmp_path):  # noqa: F811
    with stoppable_system(tmp_path) as (system, stop_county):
        earlier = yesterday(system)
        if county == "down":
            stop_county()
        page = browser.new_page(locale="zh-CN", viewport=DESK)
        day = Day(system, county, page, tmp_path, earlier)
        try:
            step_log_in(day)
            step_search(day)
            step_intake_with_scan(day)
            step_print_receipt(day)
            step_verify_at_the_other_station(day, browser)
            step_bundle_intake(day)
            step_correction_notice(day)
            step_hand_out(day)
            step_report(day)
            step_end_of_day_sync(day)
            step_admin_disables_the_agent(day, browser)
        finally:
            page.close()
