"""A case's whole life in Debian's Chromium, twice over: the county asks for corrections, the agent
records the supplement, the clerk approves, the result is handed out to a proxy. Every document
is printed to an A4 PDF by Chromium and must fit its page width.

Screenshots of each page go to $LASTMILE_SCREENSHOTS when it is set."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import expect

from node.http import pages
from sync.law.intake import valid_id_for_demo
from tests.conftest import PASSWORD
from tests.e2e.test_browser import browser, login, shot  # noqa: F401 - the module's browser fixture

A4_WIDTH_PX = 794           # 210 mm at 96 CSS px per inch


def fits_a4(page, name: str) -> None:
    """Print the page to PDF as Chromium does for the agent, and check nothing runs off the sheet:
    under print CSS at A4 width no element is wider than the page, and the PDF has pages."""
    page.emulate_media(media="print")
    page.set_viewport_size({"width": A4_WIDTH_PX - 2 * 38, "height": 1123})    # A4 minus ~1 cm margins
    overflow = page.evaluate("""() => [...document.querySelectorAll('article *')]
        .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
        .map(e => e.tagName + ':' + (e.id || e.className || e.textContent.slice(0, 20)))""")
    assert overflow == [], f"{name}: cut off on A4: {overflow}"
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth + 1")
    pdf = page.pdf(format="A4", print_background=True, margin={"top": "10mm", "bottom": "10mm", "left": "10mm",
                                                                "right": "10mm"})
    pages = len(re.findall(rb"/Type\s*/Page[^s]", pdf))
    assert pdf.startswith(b"%PDF") and 1 <= pages <= 2, (name, pages)
    page.emulate_media(media="screen")
    page.set_viewport_size({"width": 1280, "height": 900})


@pytest.fixture(autouse=True)
def quick_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """While a sync runs, the start page reloads itself every second instead of every 2 s
    (node/http/pages.py SYNC_REFRESH_S; the stations here run in this process): each life below waits
    for nine syncs to end, and on a quick machine the wait was mostly for the next reload."""
    monkeypatch.setattr(pages, "SYNC_REFRESH_S", 1)


def sync_now(station) -> None:
    """Press 立即同步 and wait until that sync is over (the start page drops its "正在同步" line):
    what the next step looks for may come with it, and on a loaded machine a sync takes seconds."""
    with station.expect_navigation():
        station.click("text=立即同步")
    expect(station).to_have_url(re.compile(r"m=syncing"))
    expect(station.locator("#syncing")).to_have_count(0, timeout=30000)


def one_life(system, browser, n: int, result_doc) -> None:  # noqa: F811
    v1 = system.stations["V1"]
    station = browser.new_page(locale="zh-CN")
    login(station, v1["url"], "agent", PASSWORD)
    sync_now(station)
    expect(station.locator("#up-waiting")).to_have_text("0")
    station.click("text=临时救助申请")
    name = ["赵春梅", "钱志强"][n]
    station.fill("input[name=name]", name)
    station.fill("input[name=id_number]", valid_id_for_demo(f"4115261960031000{n}"))
    station.fill("input[name=address]", "王庄村")
    for field in station.locator("#apply-form textarea[name^=f_], #apply-form input[name^=f_]").all():
        kind = field.get_attribute("type") or field.get_attribute("inputmode") or ""
        field.fill({"date": "2026-11-20", "numeric": "2000"}.get(kind, "房屋失火，急需救助"))
    for sel in station.locator("#apply-form select").all():
        sel.select_option(index=1)
    for box in station.locator("input[name=materials]").all():
        box.check()
    station.click("button[value=accept]")
    alert = station.locator("[role=alert]")
    if alert.count():
        raise AssertionError(alert.inner_text())
    station.wait_for_selector("text=受理回执")
    receipt_no = re.search(r"V1-\d{8}-\d{5}", station.content())[0]
    shot(station, f"life{n}-1-receipt")
    fits_a4(station, "receipt")
    station.goto(v1["url"] + "/")
    sync_now(station)
    expect(station.locator("#up-waiting")).to_have_text("0")

    # the clerk asks for corrections, picking the materials and the problem
    county = browser.new_page(locale="zh-CN")
    login(county, system.central_url, "minzheng", PASSWORD)
    county.click(f"text={receipt_no}")
    county.select_option("select[name=fix_hardship_proof]", "unclear")
    county.select_option("select[name=fix_household_register]", "other")
    county.fill("input[name=fix_text_household_register]", "户主页缺失")
    county.fill("textarea[name=note]", "请补交清晰的困难证明")
    shot(county, f"life{n}-2-county-correction")
    county.click("button[value=correction]")
    expect(county.locator(".ok")).to_contain_text("审批结果已保存")

    # the station sees exactly that list, prints the notice, records the supplement
    sync_now(station)
    waiting = station.locator("#waiting")
    expect(waiting).to_contain_text(name)
    waiting.locator(f"text={receipt_no}").click()
    expect(station.locator("#correction")).to_contain_text("不清晰")
    expect(station.locator("#correction")).to_contain_text("户主页缺失")
    expect(station.locator("#clock")).to_contain_text("中止计时")
    shot(station, f"life{n}-3-station-waiting")
    station.click("text=打印材料补正通知书")
    expect(station.locator("#correction-notice")).to_contain_text("户主页缺失")
    shot(station, f"life{n}-4-correction-notice")
    fits_a4(station, "correction notice")
    station.go_back()
    station.check("#supplement-form input[value=hardship_proof]")
    station.check("#supplement-form input[value=household_register]")
    station.fill("#supplement-form textarea[name=note]", "已补交清晰件")
    station.click("text=登记补正并报送县级部门")
    expect(station.locator(".ok")).to_contain_text("补正已登记")
    station.goto(v1["url"] + "/")
    sync_now(station)
    expect(station.locator("#up-waiting")).to_have_text("0")

    # back in review at the county, with what changed; approved
    county.reload()
    county.goto(system.central_url + "/")
    county.click(f"text={receipt_no}")
    expect(county.locator("#supplement")).to_contain_text("已补交清晰件")
    shot(county, f"life{n}-5-county-review")
    station.goto(v1["url"] + "/")                    # the agent leaves the start page open
    county.fill("textarea[name=note]", "同意救助")
    county.set_input_files("input[name=attachments]:not([capture])", str(result_doc))
    county.click("button[value=approve]")
    expect(county.locator(".ok")).to_contain_text("审批结果已保存")

    # the background sync brings the result down; the open start page shows it without a reload
    assert httpx.post(v1["url"] + "/api/v1/sync", headers={"authorization": f"Bearer {v1['token']}"},
                      timeout=30).status_code == 200
    expect(station.locator("#today #results")).to_contain_text(receipt_no, timeout=20000)
    assert station.locator("#today").get_attribute("data-updated")
    shot(station, f"life{n}-5b-today-updated")

    # the written decision and its result document, printed at the station
    station.locator("#results").locator(f"text={receipt_no}").click()
    expect(station.locator("#documents")).to_contain_text("救助金核定通知.jpg")
    expect(station.locator("#documents .still-coming")).to_have_count(0)
    station.click("#documents a >> nth=0")
    expect(station.locator("article")).to_contain_text("同意救助")
    shot(station, f"life{n}-5c-approval-notice")
    fits_a4(station, "approval notice")
    station.go_back()

    # hand-out to a proxy
    station.check("input[value=proxy]")
    station.fill("input[name=proxy_name]", "孙建国")
    station.fill("input[name=proxy_id_number]", valid_id_for_demo("41152619850705001"))
    station.fill("input[name=proxy_relation]", "子女")
    station.click("#handout-form button")
    expect(station.locator("[role=alert]")).to_contain_text("核验")          # the identity check is required
    station.check("input[value=proxy]")
    station.fill("input[name=proxy_name]", "孙建国")
    station.fill("input[name=proxy_id_number]", valid_id_for_demo("41152619850705001"))
    station.fill("input[name=proxy_relation]", "子女")
    station.check("input[name=identity_checked]")
    station.click("#handout-form button")
    expect(station.locator(".ok")).to_have_text("已登记出件。")
    station.goto(v1["url"] + "/")
    station.locator("#recent").locator(f"text={receipt_no}").click()
    expect(station.locator("#handed-out")).to_contain_text("孙建国")
    shot(station, f"life{n}-6-handed-out")

    # the citizen rates the service 2 on the agent's screen; the county answers; the answer comes back
    station.click("#ask-rating")
    station.fill("textarea[name=comment]", "跑了两趟才办成")
    shot(station, f"life{n}-7-rating-screen")
    station.click("button.score-2")
    expect(station.locator("#thanks")).to_be_visible()
    station.goto(v1["url"] + "/")
    sync_now(station)
    expect(station.locator("#up-waiting")).to_have_text("0")
    county.goto(system.central_url + "/ratings")
    row = county.locator(f"#ratings tr.open:has-text('{receipt_no}')")
    expect(row).to_contain_text("跑了两趟才办成")
    row.locator("textarea[name=answer]").fill("已约谈窗口人员，今后一次告知到位")
    row.locator("button").click()
    expect(county.locator(".ok")).to_be_visible()
    shot(county, f"life{n}-8-county-answer")
    sync_now(station)
    station.locator("#recent").locator(f"text={receipt_no}").click()
    expect(station.locator("#rating-answer")).to_contain_text("已约谈窗口人员")
    # one history: every fact of the case, each signature verified
    history = station.locator("#history")
    for label in ("受理", "补正"):
        expect(history).to_contain_text(label)
    shot(station, f"life{n}-9-history")
    station.close()
    county.close()


def test_a_case_lives_its_whole_life_in_the_browser_twice(system, browser, tmp_path):  # noqa: F811
    from PIL import Image
    result_doc = tmp_path / "救助金核定通知.jpg"
    Image.new("RGB", (800, 600), "white").save(result_doc, "JPEG")
    for n in range(2):
        one_life(system, browser, n, result_doc)


def test_a_refusal_and_a_rejection_print_their_rights_of_appeal_on_a4(system, browser):  # noqa: F811
    """The station's 不予受理决定书 and the county's 不予批准决定书 name the review body and the court,
    and fit an A4 sheet."""
    t1 = system.stations["T1"]
    station = browser.new_page(locale="zh-CN")
    login(station, t1["url"], "agent", PASSWORD)
    sync_now(station)                                                       # the catalogue comes with it
    expect(station.locator("#up-waiting")).to_have_text("0")
    for decision in ("refuse", "accept"):
        station.goto(t1["url"] + "/apply/RS-001")
        station.fill("input[name=name]", "郑淑芬")
        station.fill("input[name=id_number]", valid_id_for_demo("41152619700505002"))
        for sel in station.locator("#apply-form select").all():
            sel.select_option(index=1)
        for box in station.locator("input[name=materials]").all():
            box.check()
        if decision == "refuse":
            station.fill("textarea[name=reason]", "申请人已在外省参加职工养老保险，不属于本事项受理范围")
        station.click(f"button[value={decision}]")
        station.wait_for_selector("article")
        if decision == "refuse":
            expect(station.locator("article")).to_contain_text("行政复议")
            shot(station, "refusal-document")
            fits_a4(station, "refusal")
        else:
            receipt_no = re.search(r"T1-\d{8}-\d{5}", station.content())[0]
    station.goto(t1["url"] + "/")
    sync_now(station)
    expect(station.locator("#up-waiting")).to_have_text("0", timeout=30000)

    county = browser.new_page(locale="zh-CN")
    login(county, system.central_url, "renshe", PASSWORD)
    county.click(f"text={receipt_no}")
    county.fill("textarea[name=reason]", "申请人未达到参保年龄")
    county.fill("input[name=basis]", "《城乡居民基本养老保险办法》第六条")
    county.click("button[value=reject]")
    expect(county.locator(".ok")).to_contain_text("审批结果已保存")
    sync_now(station)
    station.locator("#results").locator(f"text={receipt_no}").click()
    station.click("text=不予批准决定书")
    article = station.locator("article")
    expect(article).to_contain_text("申请人未达到参保年龄")
    expect(article).to_contain_text("第六条")
    expect(article).to_contain_text("人民法院")
    assert station.locator("[data-print]").count() == 1
    shot(station, "rejection-decision")
    fits_a4(station, "rejection decision")
