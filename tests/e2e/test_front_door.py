"""The station's start page and its file buttons in Debian's Chromium, at a cheap desktop's 1366x768
and a phone's 390x844: 受理新申请 is on the first screen, the language link and the agent's name do
not run together, nothing scrolls sideways, and our 选择文件 button takes a file and names it.

Screenshots go to $LASTMILE_SCREENSHOTS when it is set."""

from __future__ import annotations

from PIL import Image
from playwright.sync_api import expect

from tests.conftest import PASSWORD
from tests.e2e.test_browser import browser, login, shot  # noqa: F401 - the module's browser fixture
from tests.e2e.test_browser_bundle import DESK, PHONE, no_sideways_scroll
from tests.life.test_case_life import APPLICANT, ITEM, sync


def test_the_start_page_leads_with_the_work_on_a_desktop_and_a_phone(system, browser, http, tmp_path):  # noqa: F811
    v1 = system.stations["V1"]
    api = http(v1["url"], v1["token"])
    sync(api)
    r = api.post("/api/v1/applications", json={            # one case waiting for the citizen: one list shows
        "item": ITEM["code"], "decision": "correction", "reason": "缺少户口簿",
        "applicant": {**APPLICANT}, "fields": {}, "materials": []})
    assert r.status_code == 201, r.text
    page = browser.new_page(locale="zh-CN", viewport=DESK)
    login(page, v1["url"], "agent", PASSWORD)
    for name, size in (("desktop", DESK), ("phone", PHONE)):
        page.set_viewport_size(size)
        page.goto(v1["url"] + "/")
        shot(page, f"home-{name}")
        new = page.locator("#new-application")
        expect(new.locator("h2")).to_have_text("受理新申请")
        top = new.bounding_box()
        assert top and top["y"] < size["height"] * 0.6, (name, top)          # on the first screen
        expect(page.locator("#waiting")).to_contain_text("王秀英")
        expect(page.locator("#results")).to_have_count(0)
        expect(page.locator("#nothing-waiting")).to_contain_text("暂无待发放结果")
        english, who = page.locator("header.top a", has_text="English").bounding_box(), page.locator(".who").bounding_box()
        assert english and who
        if abs(english["y"] - who["y"]) < 5:                                   # on one line: a clear gap
            assert who["x"] - (english["x"] + english["width"]) >= 16, (name, english, who)
        expect(page.locator("header.top .sep")).to_be_visible()
        expect(page.locator("#link-speed")).to_be_hidden()                     # folded in the details
        no_sideways_scroll(page)

    page.goto(v1["url"] + f"/apply/{ITEM['code']}")
    first = page.locator(".files").first
    expect(first.locator(".pick .button").first).to_have_text("选择文件")
    expect(first.locator(".pick .button").nth(1)).to_have_text("拍照")
    expect(first.locator(".chosen")).to_have_text("未选择文件")
    box = first.locator("input[type=file]").first.bounding_box()
    assert box and box["width"] <= 2 and box["height"] <= 2                      # the browser's own, hidden
    scan = tmp_path / "户口簿.jpg"
    Image.new("RGB", (200, 100), "white").save(scan, "JPEG")
    first.locator("input[type=file]:not([capture])").set_input_files(str(scan))
    expect(first.locator(".chosen")).to_have_text("户口簿.jpg")
    no_sideways_scroll(page)
    shot(page, "apply-phone")
    page.close()
