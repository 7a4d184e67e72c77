"""Steps 1-5 as a person does them, in Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest
from PIL import Image
from playwright.sync_api import expect

from sync.law.intake import valid_id_for_demo
from tests.conftest import PASSWORD

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = os.environ.get("LASTMILE_SCREENSHOTS")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is needed for the browser tests: apt-get install chromium fonts-noto-cjk")
    from playwright.sync_api import sync_playwright  # noqa: PLC0415
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


def shot(page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=f"{SHOTS}/{name}.png", full_page=True)


def login(page, url: str, user: str, password: str) -> None:
    page.goto(url + "/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("button.primary")


def fill_dibao_form(station, name: str, id_number: str) -> None:
    """The 最低生活保障 form as an agent fills it: the applicant, every field, every material ticked."""
    station.fill("input[name=name]", name)
    station.fill("input[name=id_number]", id_number)
    station.fill("input[name=phone]", "13912345678")
    station.fill("input[name=address]", "张村二组8号")
    for field in station.locator("#apply-form textarea[name^=f_], #apply-form input[name^=f_]").all():
        field.fill("3" if field.get_attribute("inputmode") == "numeric" else "因病致贫，家庭收入低于当地低保标准")
    for sel in station.locator("#apply-form select").all():
        sel.select_option(index=1)
    for box in station.locator("input[name=materials]").all():
        box.check()


def attach_scan(station, folder: Path) -> None:
    """A 1600x1000 photo of an ID card, attached with the first file button."""
    scan = folder / "身份证.jpg"
    Image.merge("RGB", [Image.effect_noise((1600, 1000), 30)] * 3).save(scan, "JPEG")
    station.locator("input[type=file]").first.set_input_files(str(scan))


def test_agent_and_clerk_walk_one_case_in_the_browser(system, browser, tmp_path):
    v1 = system.stations["V1"]
    station = browser.new_page(locale="zh-CN")
    login(station, v1["url"], "agent", PASSWORD)
    station.click("text=立即同步")                                   # fetch the catalogue
    expect(station.locator("#up-waiting")).to_have_text("0")
    station.click("text=最低生活保障申请")
    shot(station, "1-form")

    # A wrong ID number gets a plain sentence and keeps what was typed.
    fill_dibao_form(station, "王桂兰", "110105194912310021")
    station.click("button[value=accept]")
    expect(station.locator("[role=alert]")).to_contain_text("身份证号码校验位不正确")
    assert station.input_value("input[name=name]") == "王桂兰"
    station.fill("input[name=id_number]", valid_id_for_demo("11010519491231002"))
    for box in station.locator("input[name=materials]").all():
        box.check()
    attach_scan(station, tmp_path)
    station.click("button[value=accept]")
    station.wait_for_selector("text=受理回执")
    assert station.locator("#promised").inner_text()[:4].isdigit()
    assert station.locator("svg").count() >= 1                       # the verification QR code
    shot(station, "2-receipt")

    station.goto(v1["url"] + "/")
    expect(station.locator("#up-waiting")).to_have_text("1")
    station.click("text=立即同步")
    expect(station.locator(".ok")).to_have_text("同步完成。")
    expect(station.locator("#up-waiting")).to_have_text("0")

    county = browser.new_page(locale="zh-CN")
    login(county, system.central_url, "minzheng", PASSWORD)
    shot(county, "3-queue")
    county.click("#cases a")
    expect(county.locator("#signature")).to_contain_text("电子签名验证通过")
    expect(county.locator("#scans-state")).to_contain_text("全部1份扫描件已到达并校验无误")
    with county.expect_popup() as popup:
        county.locator("#scans a").first.click()
    popup.value.wait_for_load_state()          # the popup navigates to the scan before it can be read
    assert popup.value.evaluate("document.images[0].naturalWidth") == 1600
    shot(county, "3-case")
    county.fill("textarea[name=note]", "经审核符合低保条件，予以批准")
    county.click("button[value=approve]")
    expect(county.locator(".ok")).to_contain_text("审批结果已保存")

    station.click("text=立即同步")
    results = station.locator("#results")
    expect(results).to_contain_text("王桂兰")
    expect(results).to_contain_text("已批准")
    shot(station, "4-results")
    results.locator("button").first.click()
    expect(station.locator(".ok")).to_have_text("已登记出件。")
    expect(station.locator("#results")).to_have_count(0)

    station.click("text=English")
    expect(station.locator("#new-application h2")).to_have_text("New application")
    expect(station.locator("#nothing-waiting")).to_contain_text("Results to hand out")    # nothing left to hand out
