"""A returning citizen is found by whatever the agent has to hand; a service by what people call it."""

from __future__ import annotations

from sync.law.intake import valid_id_for_demo
from tests.conftest import CATALOG, log_in
from tests.life.test_case_life import ITEM, fields, sync

PEOPLE = [("张桂芝", valid_id_for_demo("41152619500101002"), "13912340001"),
          ("李建华", valid_id_for_demo("41152619650202001"), "13912340002"),
          ("张伟", valid_id_for_demo("41152619800303003"), "")]


def test_find_a_case_by_receipt_id_last6_name_or_phone(system, http):
    v1 = system.stations["V1"]
    api = http(v1["url"], v1["token"])
    sync(api)
    made = []
    for name, id_number, phone in PEOPLE:
        r = api.post("/api/v1/applications", json={
            "item": ITEM["code"], "decision": "accept", "fields": fields(),
            "applicant": {"name": name, "id_number": id_number, "phone": phone, "address": ""},
            "materials": [m["code"] for m in ITEM["materials"] if m.get("required")]})
        assert r.status_code == 201, r.text
        made.append(r.json())

    def found(q: str) -> list[str]:
        r = api.get("/api/v1/applications", params={"q": q})
        assert r.status_code == 200, r.text
        return sorted(a["applicant_name"] for a in r.json()["applications"])

    assert found(made[1]["receipt_no"]) == ["李建华"]
    assert found(PEOPLE[0][1]) == ["张桂芝"]
    assert found(PEOPLE[0][1].lower()) == ["张桂芝"]                 # an x typed in lower case
    assert found(PEOPLE[2][1][-6:]) == ["张伟"]                      # the last 6 of the ID card
    assert found("13912340002") == ["李建华"]
    assert found("张") == ["张伟", "张桂芝"]
    assert found("王五") == []
    assert api.get("/api/v1/applications", params={"q": " "}).status_code == 422

    page, _ = log_in(http, v1["url"], "agent")
    shown = page.get("/search", params={"q": "张桂芝"}).text
    assert made[0]["receipt_no"] in shown and made[1]["receipt_no"] not in shown
    assert PEOPLE[0][1] not in shown                                 # the ID number is masked on the page
    assert "没有与“<script>”相符的办件" in page.get("/search", params={"q": "<script>"}).text.replace("&lt;", "<").replace("&gt;", ">")
    assert "<script>" not in page.get("/search", params={"q": "<script>"}).text


def test_find_a_service_by_name_keyword_or_pinyin_initials(system, http):
    v1 = system.stations["V1"]
    api = http(v1["url"], v1["token"])
    sync(api)

    def codes(q: str) -> list[str]:
        return [i["code"] for i in api.get("/api/v1/catalog", params={"q": q}).json()["items"]]

    assert codes("dbsq") == ["MZ-001"]                 # 低保申请, as people say it
    assert codes("低保") == ["MZ-001"]
    assert codes("医保")[0] == "YB-001"
    assert codes("CL-001") == ["CL-001"]
    assert codes("canjizheng") == ["CL-001"]           # the full pinyin of a keyword
    assert codes("qqqqq") == []
    everything = codes("")
    assert len(everything) == len([i for i in CATALOG["items"] if "village" in i["levels"]])
    page, _ = log_in(http, v1["url"], "agent")
    assert "最低生活保障申请" in page.get("/search", params={"q": "dbsq"}).text


def test_the_service_guide_says_what_to_bring_who_decides_how_long_and_the_fee(system, http):
    v1 = system.stations["V1"]
    sync(http(v1["url"], v1["token"]))
    page, home = log_in(http, v1["url"], "agent")
    assert 'href="/guide/MZ-001"' in home.text
    guide = page.get("/guide/MZ-001")
    item = next(i for i in CATALOG["items"] if i["code"] == "MZ-001")
    assert guide.status_code == 200 and "办事指南" in guide.text and "县民政局" in guide.text
    assert "材料齐全受理之日起30个工作日" in guide.text and "不收费" in guide.text
    table = guide.text.split('id="guide-materials"')[1].split("</table>")[0]
    for m in item["materials"]:
        assert m["name"] in table
    assert table.count("原件") == sum(m["form"] == "original" for m in item["materials"]) + 1    # + the header
    assert "data-print" in guide.text
    assert page.get("/guide/NOPE-1").status_code == 404
    assert page.get("/guide/ZJ-001").status_code == 200
