"""A case's whole life through real servers: the county asks for corrections, the station records
the supplement on the same case, the clock stops while the case waits on the citizen, the result is
handed out to a proxy; the station's own correction notice is completed on the same case; receipt
numbers run without gaps."""

from __future__ import annotations

import base64
import io
import re
from typing import Any

from PIL import Image

from sync.law.intake import valid_id_for_demo
from tests.conftest import CATALOG, log_in

ITEM = next(i for i in CATALOG["items"] if i["code"] == "MZ-003")      # 临时救助申请: 15 working days
APPLICANT = {"name": "王秀英", "id_number": valid_id_for_demo("41152619580312002"), "phone": "13812345678",
             "address": "王庄村3组"}
PROXY = {"name": "王建国", "id_number": valid_id_for_demo("41152619820705001"), "relation": "子女"}


def fields() -> dict[str, Any]:
    return {"emergency_type": ITEM["fields"][0]["options"][0]["value"], "event_date": "2026-11-20",
            "reason": "房屋失火，急需救助"}


def jpeg(colour: str = "red") -> str:
    out = io.BytesIO()
    Image.new("RGB", (60, 40), colour).save(out, "JPEG")
    return base64.b64encode(out.getvalue()).decode()


def accept(api: Any, **extra: Any) -> dict[str, Any]:
    r = api.post("/api/v1/applications", json={
        "item": ITEM["code"], "decision": "accept", "applicant": APPLICANT, "fields": fields(),
        "materials": [m["code"] for m in ITEM["materials"] if m.get("required")], **extra})
    assert r.status_code == 201, r.text
    return r.json()


def sync(api: Any) -> None:
    r = api.post("/api/v1/sync")
    assert r.status_code == 200, r.text


def test_county_correction_supplement_and_hand_out_to_a_proxy(system, http):
    v1 = system.stations["V1"]
    station = http(v1["url"], v1["token"])
    county = http(system.central_url, system.clerk_tokens["minzheng"])
    sync(station)           # the catalogue comes down
    app = accept(station)
    case_id = app["id"]
    assert app["days_left"] == 15 and app["suspended"] is False
    sync(station)

    # the clerk picks each defective material, with the problem
    r = county.post(f"/api/v1/cases/{case_id}/decision", json={
        "decision": "correction", "note": "请补充村委会证明原件",
        "materials": [{"code": "hardship_proof", "problem": "unclear"},
                      {"code": "household_register", "problem": "other", "text": "户主页缺失"}]})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "correction_requested" and r.json()["suspended"] is True
    # a material the item does not ask for, or "other" without words: a readable 422
    bad = county.post(f"/api/v1/cases/{case_id}/decision", json={"decision": "correction", "note": "x",
                                                                  "materials": [{"code": "bank_card", "problem": "missing"}]})
    assert bad.status_code == 409       # already waiting for the citizen: not open for a decision
    sync(station)

    got = station.get(f"/api/v1/applications/{case_id}").json()
    assert got["status"] == "correction_requested"
    assert got["suspended"] is True and got["due_date"] is None
    assert [(m["code"], m["problem"], m["text"]) for m in got["correction"]] == [
        ("hardship_proof", "unclear", ""), ("household_register", "other", "户主页缺失")]
    assert got["correction"][0]["name"] == next(m["name"] for m in ITEM["materials"] if m["code"] == "hardship_proof")

    # the page lists exactly that, and prints a 材料补正通知书 in the department's name
    page, _ = log_in(http, v1["url"], "agent")
    shown = page.get(f"/applications/{case_id}").text
    assert "县级部门要求补正" in shown and "不清晰" in shown and "户主页缺失" in shown and "中止计时" in shown
    notice = page.get(f"/applications/{case_id}/correction-notice").text
    department = next(d["name"] for d in CATALOG["departments"] if d["code"] == "minzheng")
    assert "材料补正通知书" in notice and department in notice and "户主页缺失" in notice and "请补充村委会证明原件" in notice
    # nothing to hand out while the citizen has to bring something
    assert station.post(f"/api/v1/applications/{case_id}/handout", json={"identity_checked": True}).status_code == 409

    # the supplement: materials brought, a scan, a note; the same case goes up again
    r = station.post(f"/api/v1/applications/{case_id}/supplement", json={
        "materials": ["hardship_proof", "household_register"], "note": "已补交清晰件",
        "scans": [{"material": "hardship_proof", "name": "证明.jpg", "data_base64": jpeg()}]})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "accepted" and r.json()["suspended"] is False
    again = station.post(f"/api/v1/applications/{case_id}/supplement", json={"materials": [], "note": "再来一次"})
    assert again.status_code == 409 and again.json()["error"] == "conflict"
    sync(station)
    sync(station)      # the scan goes after the county holds the supplement that lists it

    case = county.get(f"/api/v1/cases/{case_id}").json()
    assert case["status"] == "received" and case["suspended"] is False
    assert case["supplement"]["materials"] == ["hardship_proof", "household_register"]
    assert [s["name"] for s in case["scans"]] == ["证明.jpg"] and case["scans_complete"]
    clerk, _ = log_in(http, system.central_url, "minzheng")
    review = clerk.get(f"/cases/{case_id}").text
    assert "群众补正材料" in review and "已补交清晰件" in review

    # a second round, then approval
    assert county.post(f"/api/v1/cases/{case_id}/decision", json={
        "decision": "correction", "materials": [{"code": "id_card", "problem": "expired"}], "note": ""}).status_code == 200
    sync(station)
    assert station.post(f"/api/v1/applications/{case_id}/supplement",
                        json={"materials": ["id_card"], "note": ""}).status_code == 200
    sync(station)
    assert county.post(f"/api/v1/cases/{case_id}/decision", json={"decision": "approve", "note": "同意救助"}).status_code == 200
    sync(station)

    # hand-out to a proxy: identity checked, a real ID number, a relation
    assert station.post(f"/api/v1/applications/{case_id}/handout", json={
        "collector": PROXY, "identity_checked": False}).status_code == 422
    wrong = station.post(f"/api/v1/applications/{case_id}/handout", json={
        "collector": {**PROXY, "id_number": PROXY["id_number"][:-1] + ("0" if PROXY["id_number"][-1] != "0" else "1")},
        "identity_checked": True})
    assert wrong.status_code == 422 and "身份证号" in wrong.json()["message"] or "ID number" in wrong.json()["message"]
    r = station.post(f"/api/v1/applications/{case_id}/handout", json={"collector": PROXY, "identity_checked": True})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "handed_out" and r.json()["collector"] == PROXY
    assert station.post(f"/api/v1/applications/{case_id}/handout",
                        json={"identity_checked": True}).status_code == 409
    sync(station)
    case = county.get(f"/api/v1/cases/{case_id}").json()
    assert case["status"] == "handed_out" and case["collector"] == PROXY
    assert "王建国" in page.get(f"/applications/{case_id}").text


def test_a_correction_notice_is_completed_on_the_same_case_with_the_next_receipt_number(system, http):
    v1 = system.stations["V1"]
    sync(http(v1["url"], v1["token"]))
    page, home = log_in(http, v1["url"], "agent")
    csrf = home.text.split('name="csrf" value="')[1].split('"')[0]
    form = page.get(f"/apply/{ITEM['code']}").text
    token = form.split('name="submit_token" value="')[1].split('"')[0]
    data = {"csrf": csrf, "submit_token": token, **APPLICANT, **{"f_" + k: v for k, v in fields().items()},
            "materials": ["id_card"], "reason": "", "decision": "correction"}
    notice = page.post(f"/apply/{ITEM['code']}", data=data)
    assert notice.status_code == 200 and "一次性告知" in notice.text or "补正" in notice.text
    case_id = str(notice.url).split("/applications/")[1].split("/")[0]
    first_no = re.search(r"V1-\d{8}-(\d{5})", notice.text)
    assert first_no is not None

    # the citizen comes back: the same form, filled in as it was
    back = page.get(f"/applications/{case_id}/complete")
    assert back.status_code == 200 and APPLICANT["name"] in back.text and 'id="completing"' in back.text
    token2 = back.text.split('name="submit_token" value="')[1].split('"')[0]
    done = page.post(f"/applications/{case_id}/complete", data={
        **data, "submit_token": token2, "decision": "accept",
        "materials": [m["code"] for m in ITEM["materials"] if m.get("required")]})
    assert done.status_code == 200 and "受理回执" in done.text
    assert str(done.url).endswith(f"/applications/{case_id}/document")          # the same case
    second_no = re.search(r"V1-\d{8}-(\d{5})", done.text)
    assert int(second_no[1]) == int(first_no[1]) + 1                          # no gap
    # pressing it again does not make a second case or a second number
    again = page.post(f"/applications/{case_id}/complete", data={**data, "submit_token": token2, "decision": "accept",
                                                                  "materials": ["id_card"]})
    assert again.status_code == 200 and second_no[0] in again.text

    api = http(v1["url"], v1["token"])
    got = api.get(f"/api/v1/applications/{case_id}").json()
    assert got["status"] == "accepted" and got["receipt_no"] == second_no[0] and got["days_used"] == 0
    assert page.get(f"/applications/{case_id}/complete").status_code == 409
    sync(api)
    county = http(system.central_url, system.clerk_tokens["supervisor"])
    case = county.get(f"/api/v1/cases/{case_id}").json()
    assert case["status"] == "received" and case["receipt_no"] == second_no[0] and case["signature"] == "valid"
    assert county.get("/api/v1/cases").json()["total"] == 1


def test_receipt_numbers_run_without_gaps_and_a_refused_form_uses_none(system, http):
    v1 = system.stations["V1"]
    api = http(v1["url"], v1["token"])
    sync(api)
    numbers = [accept(api)["receipt_no"]]
    bad = api.post("/api/v1/applications", json={"item": ITEM["code"], "decision": "accept",
                                                 "applicant": {**APPLICANT, "id_number": "123"}, "fields": fields()})
    assert bad.status_code == 422
    r = api.post("/api/v1/applications", json={"item": ITEM["code"], "decision": "refuse", "applicant": APPLICANT,
                                               "fields": fields(), "reason": "不属于救助范围"})
    numbers.append(r.json()["receipt_no"])
    numbers.append(accept(api)["receipt_no"])
    tails = [int(n.rsplit("-", 1)[1]) for n in numbers]
    assert tails == [1, 2, 3] and len({n.rsplit("-", 1)[0] for n in numbers}) == 1
