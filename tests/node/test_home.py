"""The station's front door, as the village agent sees it: the work first (受理新申请 before any list),
empty lists folded into one quiet line, the link's speed inside its details, required fields marked,
our own Chinese file buttons on every form with files, and the header's language link apart from
the agent's name. A real county and station (tests/conftest.py), pages as the browser gets them."""

from __future__ import annotations

import re
from tests.conftest import log_in
from tests.life.test_case_life import APPLICANT, ITEM, accept, sync

LISTS = ("results", "waiting", "due", "open-reports", "recent")


def labels(html: str) -> list[str]:
    return re.findall(r"<label\b.*?</label>", html, flags=re.S)


def file_groups(html: str) -> list[str]:
    return re.findall(r'<div class="files[^"]*".*?</div>', html, flags=re.S)


def assert_our_file_buttons(html: str, name: str, count: int) -> None:
    """``count`` groups of our 选择文件 / 拍照 buttons for file field ``name``: one input for files,
    one opening the camera (``capture``), both submitting under ``name``."""
    groups = [g for g in file_groups(html) if f'name="{name}' in g]
    assert len(groups) == count, groups
    for g in groups:
        assert "选择文件" in g and "拍照" in g and "未选择文件" in g
        inputs = re.findall(r"<input [^>]*>", g)
        assert len(inputs) == 2 and all('type="file"' in i for i in inputs), inputs
        assert 'capture="environment"' in inputs[1] and 'capture' not in inputs[0]
        assert "multiple" in inputs[0]
    assert "Choose" not in html


def test_the_start_page_leads_with_new_applications_and_folds_empty_lists(system, http):
    v1 = system.stations["V1"]
    api = http(v1["url"], v1["token"])
    sync(api)                                                     # the catalogue
    page, home = log_in(http, v1["url"], "agent")
    html = home.text
    assert home.status_code == 200 and ITEM["name"] in html
    # nothing to do yet: no list is a box, all are named on one quiet line
    for box in LISTS:
        assert f'id="{box}"' not in html
    quiet = re.search(r'<p class="muted quiet" id="nothing-waiting">(.*?)</p>', html).group(1)  # type: ignore[union-attr]
    assert quiet == "暂无待发放结果、等待群众补正、临近或超过承诺办结日期、等待答复的办不成事诉求"
    assert 'href="/reports/new"' in html                         # the report form stays one click away

    # a case waiting for the citizen: its list is a box, after 受理新申请, and leaves the quiet line
    r = api.post("/api/v1/applications", json={
        "item": ITEM["code"], "decision": "correction", "reason": "缺少户口簿",
        "applicant": {"name": "王秀英", "id_number": APPLICANT["id_number"], "phone": "", "address": ""},
        "fields": {}, "materials": []})
    assert r.status_code == 201, r.text
    html = page.get("/").text
    new = html.index('id="new-application"')
    assert new < html.index('id="waiting"') and new < html.index('id="recent"')
    assert new < html.index('id="today"') and new < html.index('id="sync-state"')
    assert "王秀英" in html
    quiet = re.search(r'id="nothing-waiting">(.*?)</p>', html).group(1)  # type: ignore[union-attr]
    assert "等待群众补正" not in quiet and "待发放结果" in quiet
    # the self-updating lists (/today) are the same fragment
    assert 'id="waiting"' in page.get("/today").json()["html"]


def test_link_speed_is_only_in_the_sync_details(system, http):
    v1 = system.stations["V1"]
    api = http(v1["url"], v1["token"])
    sync(api)                                                     # the catalogue: big enough to measure the link
    assert api.post("/api/v1/sync").json()["state"]["link_bps"]
    page, home = log_in(http, v1["url"], "agent")
    html = home.text
    assert html.count("链路速度") == 1
    details = re.search(r'<details id="sync-details">.*?</details>', html, flags=re.S).group(0)  # type: ignore[union-attr]
    assert "链路速度" in details and "kbit/s" in details and "<summary>链路详情</summary>" in details
    status = re.search(r'<section class="card sync[^"]*" id="sync-state">.*?<details', html, flags=re.S).group(0)  # type: ignore[union-attr]
    assert "kbit/s" not in status


def test_required_fields_carry_the_mark_and_the_required_attribute(system, http):
    v1 = system.stations["V1"]
    sync(http(v1["url"], v1["token"]))
    page, _ = log_in(http, v1["url"], "agent")
    html = page.get(f"/apply/{ITEM['code']}").text
    marked = [lab for lab in labels(html) if 'class="req"' in lab]
    required_names = {"name", "id_number"} | {"f_" + f["name"] for f in ITEM["fields"] if f.get("required")}
    optional_names = {"phone", "address"} | {"f_" + f["name"] for f in ITEM["fields"] if not f.get("required")}
    assert required_names and len(marked) == len(required_names)
    for lab in labels(html):
        name = re.search(r'<(?:input|textarea|select) name="([^"]+)"', lab)
        if not name or name.group(1) not in required_names | optional_names:
            continue
        if name.group(1) in required_names:
            assert 'class="req"' in lab and '<span aria-hidden="true">*</span>' in lab and "必填" in lab, lab
            assert re.search(r"<(?:input|textarea|select) [^>]*\brequired\b", lab), lab
        else:
            assert 'class="req"' not in lab and not re.search(r"<(?:input|textarea|select) [^>]*\brequired\b", lab), lab
    # a correction notice or a refusal may go with fields left empty, as the server allows
    assert re.search(r'<button name="decision" value="correction" formnovalidate>', html)
    assert re.search(r'<button class="danger" name="decision" value="refuse" formnovalidate>', html)


def test_every_form_with_files_has_our_chinese_file_buttons(system, http):
    v1 = system.stations["V1"]
    api = http(v1["url"], v1["token"])
    sync(api)
    page, _ = log_in(http, v1["url"], "agent")
    intake = page.get(f"/apply/{ITEM['code']}").text
    assert_our_file_buttons(intake, "scan_", len(ITEM["materials"]))

    # the supplement after the county asked for corrections, and the county's decision form
    app = accept(api)
    sync(api)
    county, _ = log_in(http, system.central_url, "minzheng")
    decide = county.get(f"/cases/{app['id']}").text
    assert_our_file_buttons(decide, "attachments", 1)
    clerk = http(system.central_url, system.clerk_tokens["minzheng"])
    r = clerk.post(f"/api/v1/cases/{app['id']}/decision", json={
        "decision": "correction", "note": "请补充", "materials": [{"code": "hardship_proof", "problem": "unclear"}]})
    assert r.status_code == 200, r.text
    sync(api)
    supplement = page.get(f"/applications/{app['id']}").text
    assert 'id="supplement-form"' in supplement
    assert_our_file_buttons(supplement, "scan_", len(ITEM["materials"]))


def test_the_header_keeps_the_language_link_apart_from_the_name(system, http):
    page, home = log_in(http, system.stations["V1"]["url"], "agent")
    nav = re.search(r"<nav>.*?</nav>", home.text, flags=re.S).group(0)  # type: ignore[union-attr]
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", nav)).strip()
    assert re.search(r"English \| V1代办员", text), text        # not "EnglishV1代办员"
