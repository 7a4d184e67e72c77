"""Every county page a clerk or supervisor uses, in Debian's Chromium at 1366×768 and at phone width
390×844, against a real county server on loopback holding real cases synced from real stations.

The pages (central/app.py serves no others as HTML): /login, the case queue (/), a case waiting for a
decision (its scans, the decision form and its error, the history), a decided case (the written
decision, the citizen's rating, a 一件事一次办 sitting), /ratings (answering a follow-up), /reports
(办不成事: taking and answering one), /stations, /verify, and the error page. The clerk decides,
answers and takes at phone width, so every button is pressed where a phone shows it.

At 390 px: the page never scrolls sideways (a wide table may scroll inside its card, as the
station's do), no table heading is squeezed onto several lines, no Chinese text stands one or two
characters a line, and every button and form field of a page lies on the screen, not off to the
right inside a scrolling table. Shots go to $LASTMILE_SCREENSHOTS when it is set."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Any

from PIL import Image
from playwright.sync_api import expect

from tests.conftest import PASSWORD, System
from tests.e2e.test_agent_day import DESK, PHONE
from tests.e2e.test_browser import SHOTS, browser, login  # noqa: F401 - the module's browser fixture
from tests.e2e.test_walking_skeleton import full_application
from tests.node.test_bundles import sitting

LONG_SCAN = "申请人居民身份证正反面及户口簿首页扫描件（2026年11月补交）.jpg"
POOR_COMMENT = "等了整整三个星期才通知领取，中间打电话问了两次都说还在审核，希望以后能快一点"
TRIED = "去乡里办困难残疾人生活补贴，窗口说要去县里，县里又说回乡里，来回跑了三趟还是没办成"

# At phone width: [document scroll width, window width, the widest offenders]
SIDEWAYS = """() => [document.documentElement.scrollWidth, window.innerWidth,
    [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
      .slice(0, 5).map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className)]"""
# A table heading whose words take more than one line (the lines its text sits on, not the height of
# its row, which a long cell beside it may make tall).
SQUEEZED_HEADINGS = """() => [...document.querySelectorAll('main th')].filter(th => {
    const range = document.createRange(); range.selectNodeContents(th);
    return new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.bottom))).size > 1;
  }).map(th => th.textContent.trim())"""
# A run of Chinese text laid out on 3 or more lines with fewer than 4 characters a line: a column
# squeezed to a character's width. Counted per text node, on the lines its characters sit on.
ONE_CHAR_A_LINE = r"""() => {
  const out = [], walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    const text = n.textContent.trim(), cjk = (text.match(/[\u3400-\u9fff]/g) || []).length;
    if (cjk < 3) continue;
    const range = document.createRange(); range.selectNodeContents(n);
    const tops = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
    if (tops.size >= 3 && text.length / tops.size < 4) out.push(text.slice(0, 20) + ' (' + tops.size + ' lines)');
  }
  return out.slice(0, 5);
}"""
# Buttons and form fields that are not wholly on the screen (off to the right in a scrolling table,
# or cut off), scrolled to the top of the page, as a person sees them.
OFF_SCREEN = """() => [...document.querySelectorAll('main button, main input:not([type=hidden]), main select, main textarea')]
    .filter(e => e.getClientRects().length)
    .filter(e => { const r = e.getBoundingClientRect(); return r.left < -1 || r.right > window.innerWidth + 1; })
    .map(e => e.tagName + '[' + (e.name || '') + '] ' + (e.textContent || '').trim().slice(0, 12))"""


def look(page: Any, name: str) -> None:
    """Shoot the page at desk and phone width; at phone width it must read well (see the module)."""
    for size in (DESK, PHONE):
        page.set_viewport_size(size)
        if SHOTS:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=f"{SHOTS}/county-{name}-{size['width']}.png", full_page=True)
    wide = page.evaluate(SIDEWAYS)
    assert wide[0] <= wide[1], f"{name} scrolls sideways at {PHONE['width']} px: {wide}"
    squeezed = page.evaluate(SQUEEZED_HEADINGS)
    assert squeezed == [], f"{name}: table headings squeezed onto several lines at phone width: {squeezed}"
    broken = page.evaluate(ONE_CHAR_A_LINE)
    assert broken == [], f"{name}: Chinese text broken a character or two a line at phone width: {broken}"
    off = page.evaluate(OFF_SCREEN)
    assert off == [], f"{name}: buttons or fields off the screen at phone width: {off}"


# the cases, through the stations' and the county's APIs (not what this test is about) ------------------
def jpeg_base64() -> str:
    out = io.BytesIO()
    Image.new("RGB", (300, 200), "white").save(out, "JPEG")
    return base64.b64encode(out.getvalue()).decode()


def county_with_cases(system: System, http: Any) -> dict[str, Any]:
    """V1 and T1 took cases and synced them; the county decided some; V1 handed one out and its
    citizen rated it 1 (an open follow-up); V1 filed two 办不成事 reports, one taken at the county."""
    v1, t1 = system.stations["V1"], system.stations["T1"]
    node, other = http(v1["url"], v1["token"]), http(t1["url"], t1["token"])
    for n in (node, other):
        assert n.post("/api/v1/sync").status_code == 200
    items = {i["code"]: i for i in node.get("/api/v1/catalog").json()["items"]}

    def take(station: Any, code: str, **extra: Any) -> dict[str, Any]:
        r = station.post("/api/v1/applications", json={**full_application(items[code]), **extra})
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    waiting = take(node, "MZ-005", scans=[{"material": items["MZ-005"]["materials"][0]["code"], "name": LONG_SCAN,
                                           "data_base64": jpeg_base64()}])
    rejected, rated = take(node, "MZ-001"), take(node, "MZ-004")
    for code in ("MZ-002", "MZ-003", "RS-001"):
        take(other, code)
    r = node.post("/api/v1/applications", json=sitting())
    assert r.status_code == 201, r.text
    bundle = r.json()["applications"]
    reports = [node.post("/api/v1/reports", json={"name": name, "phone": "13700001111", "id_number": "", "tried": TRIED,
                                                  "where": "乡便民服务中心2号窗口", "item_code": "MZ-005",
                                                  "contact": "13700001111，上午在家"}).json() for name in ("吴大爷", "孙大娘")]
    for n in (node, other):
        assert n.post("/api/v1/sync").status_code == 200

    clerk = http(system.central_url, system.clerk_tokens["minzheng"])
    assert clerk.post(f"/api/v1/cases/{rejected['id']}/decision", json={
        "decision": "reject", "note": "家庭人均收入高于当地最低生活保障标准",
        "reason": "经入户调查核实，申请人家庭人均月收入高于本县城乡居民最低生活保障标准，不符合申请条件。",
        "basis": "《社会救助暂行办法》第九条、《河南省最低生活保障审核审批办法》第十二条"}).status_code == 200
    assert clerk.post(f"/api/v1/cases/{rated['id']}/decision", json={"decision": "approve"}).status_code == 200
    assert clerk.post(f"/api/v1/reports/{reports[1]['id']}/take").status_code == 200
    assert node.post("/api/v1/sync").status_code == 200
    assert node.post(f"/api/v1/applications/{rated['id']}/handout",
                     json={"collector": None, "identity_checked": True}).status_code == 200
    assert node.post(f"/api/v1/applications/{rated['id']}/rating",
                     json={"score": 1, "comment": POOR_COMMENT}).status_code == 201
    assert node.post("/api/v1/sync").status_code == 200
    return {"waiting": waiting, "rejected": rejected, "rated": rated, "bundle": bundle, "reports": reports}


# the pages, at phone width ----------------------------------------------------------------------------
def test_every_county_page_reads_well_at_phone_width(system, http, browser):  # noqa: F811
    cases = county_with_cases(system, http)
    county = system.central_url
    page = browser.new_page(locale="zh-CN", viewport=PHONE)
    try:
        page.goto(county + "/login")
        look(page, "01-login")
        login(page, county, "minzheng", PASSWORD)                   # the 民政 clerk
        expect(page.locator("#cases")).to_contain_text(cases["waiting"]["receipt_no"])
        look(page, "02-queue")
        page.goto(county + "/?status=")
        expect(page.locator("#cases")).to_contain_text(cases["rejected"]["receipt_no"])
        look(page, "03-queue-all")

        # A case waiting for a decision: its long-named scan, the decision form, its error, the history.
        page.goto(f"{county}/cases/{cases['waiting']['id']}")
        expect(page.locator("#scans")).to_contain_text(LONG_SCAN)
        look(page, "04-case-to-decide")
        page.click("#decide button[value=reject]")                  # no reason given: refused, a sentence
        expect(page.locator("#decide [role=alert]")).to_be_visible()
        look(page, "05-decide-refused")
        page.locator("#fix select").first.select_option("missing")
        page.locator("#fix input").first.fill("正面模糊，请重新扫描")
        page.fill("#decide textarea[name=note]", "请补交清晰的身份证扫描件")
        page.click("#decide button[value=correction]")
        expect(page.locator("p.ok")).to_be_visible()
        look(page, "06-decided")
        page.goto(f"{county}/cases/{cases['waiting']['id']}")
        expect(page.locator("#case-status")).to_contain_text("已退回补正")

        # A rejected case: the written decision and its history.
        page.goto(f"{county}/cases/{cases['rejected']['id']}")
        expect(page.locator("#decision-written")).to_contain_text("社会救助暂行办法")
        look(page, "07-case-rejected")

        # The poor rating: on the case, then answered from the ratings page at phone width.
        page.goto(f"{county}/cases/{cases['rated']['id']}")
        expect(page.locator("#rating-open")).to_be_visible()
        look(page, "08-case-rated")
        page.goto(county + "/ratings")
        expect(page.locator("#ratings")).to_contain_text(POOR_COMMENT)
        look(page, "09-ratings")
        row = page.locator(f"#r-{cases['rated']['id']}")
        row.locator("textarea[name=answer]").fill("已约谈经办人员，今后逾期前主动电话告知进度")
        row.locator("button").click()
        expect(page.locator("[role=status]")).to_be_visible()
        look(page, "10-ratings-answered")

        # 办不成事: take the open report and answer it, at phone width.
        page.goto(county + "/reports")
        first = page.locator(f"#report-{cases['reports'][0]['id']}")
        expect(first).to_contain_text(TRIED)
        look(page, "11-reports")
        first.locator("button", has_text="我来接手").click()
        first.locator("textarea[name=answer]").fill("已与乡便民服务中心核实，请于下周一到乡里直接办理，无需再到县里")
        first.locator("button.primary").click()
        expect(page.locator(f"#report-{cases['reports'][0]['id']} .ok")).to_be_visible()
        look(page, "12-reports-answered")

        page.goto(county + "/stations")
        expect(page.locator("#stations")).to_contain_text("T1站")
        look(page, "13-stations")
        qr = http(system.stations["V1"]["url"], system.stations["V1"]["token"]).get(
            f"/api/v1/applications/{cases['waiting']['id']}").json()["qr_text"]
        page.goto(county + "/verify")
        look(page, "14-verify")
        page.fill("form.verify textarea", qr)
        page.click("form.verify button")
        expect(page.locator("#verdict")).to_have_class(re.compile(r"\bvalid\b"))
        look(page, "15-verified")
        page.goto(county + "/cases/no-such-case")
        expect(page.locator("h1")).to_have_text("出现问题")
        look(page, "16-error")

        # The supervisor: every department's cases, the sitting of two departments' items.
        page.locator("header button.link").click()                  # 退出
        login(page, county, "boss", PASSWORD)
        expect(page.locator("#cases")).to_contain_text(cases["bundle"][0]["receipt_no"])
        look(page, "17-supervisor-queue")
        page.goto(f"{county}/cases/{cases['bundle'][1]['id']}")
        expect(page.locator("#bundle-cases")).to_contain_text(cases["bundle"][0]["item_name"])
        look(page, "18-case-in-a-sitting")
    finally:
        page.close()
