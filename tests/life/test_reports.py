"""办不成事: a citizen's report is filed at the station with a receipt number, goes up, is taken at
the county by someone who answers for it, and the owner and the answer come back down."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from sync.law import reports
from sync.law.errors import RuleError
from sync.law.intake import valid_id_for_demo
from tests.conftest import log_in
from tests.life.test_case_life import sync

REPORT = {"name": "吴大爷", "phone": "13700001111", "id_number": "", "tried": "去乡里办高龄津贴，窗口说要去县里，县里又说回乡里",
          "where": "乡便民服务中心2号窗口", "item_code": "MZ-004", "contact": "13700001111，上午在家"}


def test_a_report_goes_up_is_taken_and_answered_and_the_answer_comes_back(system, http):
    v1 = system.stations["V1"]
    station = http(v1["url"], v1["token"])
    sync(station)
    bad = station.post("/api/v1/reports", json={**REPORT, "tried": "", "name": ""})
    assert bad.status_code == 422 and set(bad.json()["details"]) == {"tried", "name"}
    r = station.post("/api/v1/reports", json=REPORT)
    assert r.status_code == 201, r.text
    report = r.json()
    assert report["status"] == "open" and report["owner"] is None and report["receipt_no"].startswith("V1-")
    sync(station)

    clerk = http(system.central_url, system.clerk_tokens["minzheng"])
    other = http(system.central_url, system.clerk_tokens["renshe"])
    listed = clerk.get("/api/v1/reports").json()["reports"]
    assert [x["id"] for x in listed] == [report["id"]] and listed[0]["tried"] == REPORT["tried"]
    # The README names every field the list gives (an independent client needed `id`: issue 17).
    import re
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if line.startswith("| `GET /api/v1/reports` |"))
    assert re.findall(r"`([a-z_]+)`", row.split("each with", 1)[1]) == list(listed[0])
    taken = clerk.post(f"/api/v1/reports/{report['id']}/take")
    assert taken.status_code == 200 and taken.json()["owner"]["by"] == "县民政局科员"
    again = other.post(f"/api/v1/reports/{report['id']}/take")
    assert again.status_code == 409 and "县民政局科员" in again.json()["message"]
    assert other.post(f"/api/v1/reports/{report['id']}/answer", json={"answer": "我来答"}).status_code == 403
    assert clerk.post(f"/api/v1/reports/{report['id']}/answer", json={"answer": " "}).status_code == 422

    sync(station)
    mid = station.get(f"/api/v1/reports/{report['id']}").json()
    assert mid["status"] == "taken" and mid["owner"]["by"] == "县民政局科员" and mid["answer"] is None
    answer = "已联系乡民政所，高龄津贴可在乡里办理，下周一工作人员上门。"
    assert clerk.post(f"/api/v1/reports/{report['id']}/answer", json={"answer": answer}).status_code == 200
    assert clerk.post(f"/api/v1/reports/{report['id']}/answer", json={"answer": answer}).status_code == 409
    sync(station)
    done = station.get(f"/api/v1/reports/{report['id']}").json()
    assert done["status"] == "answered" and done["answer"]["answer"] == answer

    page, home = log_in(http, v1["url"], "agent")
    shown = page.get(f"/reports/{report['id']}").text
    assert "办不成事诉求受理回执" in shown and answer in shown and "县民政局科员" in shown
    assert report["receipt_no"] not in page.get("/today").json()["html"]        # answered: no longer waiting
    county_page, _ = log_in(http, system.central_url, "boss")
    assert answer in county_page.get("/reports").text


def test_the_report_form_keeps_what_was_typed_and_the_today_list_shows_it(system, http):
    v1 = system.stations["V1"]
    sync(http(v1["url"], v1["token"]))
    page, home = log_in(http, v1["url"], "agent")
    form = page.get("/reports/new")
    csrf = form.text.split('name="csrf" value="')[1].split('"')[0]
    refused = page.post("/reports", data={"csrf": csrf, **REPORT, "where": "", "name": "<b>吴</b>"})
    assert refused.status_code == 422 and "必填" in refused.text and "&lt;b&gt;吴&lt;/b&gt;" in refused.text
    done = page.post("/reports", data={"csrf": csrf, **REPORT, "id_number": valid_id_for_demo("41152619400101001")})
    assert done.status_code == 200 and "办不成事诉求受理回执" in done.text
    assert "吴大爷" in page.get("/today").json()["html"]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["id", "receipt_no", "station", "agent", "at", "citizen", "tried", "where",
                                        "item_code", "contact", "x"]),
                       st.one_of(st.none(), st.integers(), st.text(max_size=30),
                                 st.dictionaries(st.sampled_from(["name", "phone", "id_number"]), st.text(max_size=20)))))
def test_any_report_body_is_refused_in_words_or_accepted_never_a_crash(body):
    try:
        reports.check_filed(body, author="V1", items=None)
    except RuleError as exc:
        assert exc.reason()
