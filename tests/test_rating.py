"""Ratings (好差评) and the county's follow-up of a poor one (整改反馈), through real servers."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest
from hypothesis import given, settings, strategies as st

from tests.sync.test_recovery import pair  # noqa: F401 - a county and a station in this process

from node.station import Station
from sync import log
from sync.law import facts, intake, transitions
from sync.law.errors import RuleError
from tests.central.test_hostile_station import county_repairs, forge
from tests.conftest import csrf_of, log_in
from tests.e2e.test_walking_skeleton import full_application

CHINA = dt.timezone(dt.timedelta(hours=8))


def accepted_case(system, http, code: str = "V1", decision: str = "accept", reason: str = "") -> tuple:
    """A case taken over the station's API and synced; returns (station client, case, department)."""
    v = system.stations[code]
    node = http(v["url"], v["token"])
    node.post("/api/v1/sync")
    item = next(i for i in node.get("/api/v1/catalog").json()["items"] if i["code"].startswith("MZ"))
    body = full_application(item, decision)
    if reason:
        body["reason"] = reason
    r = node.post("/api/v1/applications", json=body)
    assert r.status_code == 201, r.text
    assert node.post("/api/v1/sync").status_code == 200
    return node, r.json(), item["department"]


def decided_and_handed_out(system, http) -> tuple:
    node, app, dept = accepted_case(system, http)
    clerk = http(system.central_url, system.clerk_tokens[dept])
    assert clerk.post(f"/api/v1/cases/{app['id']}/decision", json={"decision": "approve"}).status_code == 200
    node.post("/api/v1/sync")
    page, _ = log_in(http, system.stations["V1"]["url"], "agent")
    assert page.post(f"/applications/{app['id']}/handout", data={"csrf": csrf_of(page), "collector": "applicant",
                                                              "identity_checked": "1"}).status_code == 200
    return node, app, dept, page


def test_a_poor_rating_is_followed_up_at_the_county_and_the_answer_reaches_the_station(system, http):
    node, app, dept, page = decided_and_handed_out(system, http)
    case = f"/applications/{app['id']}"

    # The page offers the rating screen; the citizen presses 不满意 (2) with a comment.
    shown = page.get(case).text
    assert "请办事群众评价" in shown and f"{case}/rate" in shown
    screen = page.get(f"{case}/rate")
    assert screen.status_code == 200
    for label in ("非常不满意", "不满意", "基本满意", "满意", "非常满意"):
        assert label in screen.text
    thanks = page.post(f"{case}/rate", data={"csrf": csrf_of(page), "score": "2", "comment": "等了很久"})
    assert thanks.status_code == 200 and 'id="thanks"' in thanks.text and "感谢您的评价" in thanks.text
    got = node.get(f"/api/v1/applications/{app['id']}").json()
    assert got["rating"]["score"] == 2 and got["rating"]["comment"] == "等了很久" and got["rating"]["answer"] is None
    assert "请办事群众评价" not in page.get(case).text               # rated once: no second offer

    # A second rating is refused at the station: 409 on the API, a plain sentence on the page.
    again = node.post(f"/api/v1/applications/{app['id']}/rating", json={"score": 5, "comment": ""})
    assert again.status_code == 409 and again.json()["error"] == "already_rated"
    assert set(again.json()) == {"error", "message", "details"}
    second = page.post(f"{case}/rate", data={"csrf": csrf_of(page), "score": "5", "comment": ""})
    assert second.status_code == 409 and "只能评价一次" in second.text

    # Sync: the county lists an open follow-up, first, and the navigation counts it.
    node.post("/api/v1/sync")
    clerk = http(system.central_url, system.clerk_tokens[dept])
    listed = clerk.get("/api/v1/ratings").json()
    assert listed["open"] == 1
    first = listed["ratings"][0]
    assert first["case_id"] == app["id"] and first["score"] == 2 and first["open"] and first["age_hours"] == 0
    other = next(t for d, t in system.clerk_tokens.items() if d not in (dept, "supervisor"))
    assert http(system.central_url, other).get("/api/v1/ratings").json()["ratings"] == []   # another department
    assert http(system.central_url, other).post(f"/api/v1/ratings/{app['id']}/answer",
                                                json={"answer": "不归我管"}).status_code == 403
    boss, queue = log_in(http, system.central_url, "boss")
    assert 'id="open-followups">1<' in queue.text
    ratings_page = boss.get("/ratings").text
    assert "等了很久" in ratings_page and f'action="/ratings/{app["id"]}/answer"' in ratings_page

    # Bad answers are refused and harm nothing; a good one is recorded once.
    assert clerk.post(f"/api/v1/ratings/{app['id']}/answer", json={"answer": "  "}).status_code == 422
    assert clerk.post(f"/api/v1/ratings/{app['id']}/answer", json={"answer": "x" * 2001}).status_code == 422
    empty = boss.post(f"/ratings/{app['id']}/answer", data={"csrf": csrf_of(boss), "answer": ""})
    assert empty.status_code == 422 and "请填写" in empty.text
    r = clerk.post(f"/api/v1/ratings/{app['id']}/answer", json={"answer": "已约谈窗口人员，缩短等候时间"})
    assert r.status_code == 200 and r.json()["answer"] == "已约谈窗口人员，缩短等候时间"
    twice = clerk.post(f"/api/v1/ratings/{app['id']}/answer", json={"answer": "再答一次"})
    assert twice.status_code == 409 and twice.json()["error"] == "already_answered"
    assert clerk.get("/api/v1/ratings").json()["open"] == 0
    assert 'id="open-followups"' not in boss.get("/").text
    county_case = clerk.get(f"/api/v1/cases/{app['id']}").json()
    assert county_case["rating"]["answer"] == "已约谈窗口人员，缩短等候时间" and county_case["status"] == "handed_out"

    # Sync: the station's page and API show the answer.
    node.post("/api/v1/sync")
    got = node.get(f"/api/v1/applications/{app['id']}").json()
    rating = got["rating"]
    assert rating["answer"] == "已约谈窗口人员，缩短等候时间" and rating["answered_by"] and rating["answered_at"]
    assert {"score", "comment", "at", "answer", "answered_by", "answered_at"} <= set(rating)
    assert "已约谈窗口人员，缩短等候时间" in page.get(case).text.split('id="rating-answer"')[1]
    assert got["status"] == "handed_out"


def test_a_good_rating_opens_no_follow_up_and_cannot_be_answered(system, http):
    node, app, dept, _ = decided_and_handed_out(system, http)
    r = node.post(f"/api/v1/applications/{app['id']}/rating", json={"score": 5})
    assert r.status_code == 201 and r.json()["score"] == 5 and r.json()["comment"] == ""
    node.post("/api/v1/sync")
    central = http(system.central_url, system.central_token)
    listed = central.get("/api/v1/ratings").json()
    assert listed["open"] == 0 and listed["ratings"][0]["score"] == 5
    answer = central.post(f"/api/v1/ratings/{app['id']}/answer", json={"answer": "谢谢"})
    assert answer.status_code == 409 and answer.json()["error"] == "not_answerable"


def test_bad_ratings_are_refused_with_a_clear_error_and_store_nothing(system, http):
    node, app, dept, _ = decided_and_handed_out(system, http)
    url = f"/api/v1/applications/{app['id']}/rating"
    written = node.get("/api/v1/status").json()["sync"]["up_written"]
    for bad in ({"score": 0}, {"score": 6}, {"score": "3"}, {"score": True}, {"score": 3.0}, {}):
        r = node.post(url, json=bad)
        assert r.status_code == 422 and r.json()["error"] == "bad_score", bad
    r = node.post(url, json={"score": 3, "comment": "长" * 501})
    assert r.status_code == 422 and r.json()["error"] == "bad_comment"
    assert node.post("/api/v1/applications/0f5b2a9e-3c4d-4e8f-9a1b-2c3d4e5f6a7b/rating",
                     json={"score": 3}).status_code == 404
    assert node.get(f"/api/v1/applications/{app['id']}").json()["rating"] is None
    assert node.get("/api/v1/status").json()["sync"]["up_written"] == written      # nothing signed


def test_a_refused_case_and_a_correction_notice_may_be_rated(system, http):
    node, refused, _ = accepted_case(system, http, "T1", "refuse", "不符合条件")
    assert refused["status"] == "refused"
    r = node.post(f"/api/v1/applications/{refused['id']}/rating", json={"score": 1, "comment": "不满意"})
    assert r.status_code == 201
    node.post("/api/v1/sync")
    assert http(system.central_url, system.central_token).get("/api/v1/ratings").json()["open"] == 1


def test_a_case_waiting_for_a_decision_is_not_rated_at_either_end(system, http):
    node, app, dept = accepted_case(system, http)
    r = node.post(f"/api/v1/applications/{app['id']}/rating", json={"score": 4})
    assert r.status_code == 409 and r.json()["error"] == "not_ratable"
    page, _ = log_in(http, system.stations["V1"]["url"], "agent")
    assert "请办事群众评价" not in page.get(f"/applications/{app['id']}").text
    assert page.get(f"/applications/{app['id']}/rate").status_code == 409

    # A hostile station signs one anyway: the county stores it, sets it aside, counts no rating.
    st = Station(system.stations["V1"]["settings"])
    st.store.user_by_token(system.stations["V1"]["token"])   # unlocks (node/vault.py)
    try:
        seq = forge(st, facts.RATED, rating_body(app["id"], 1))
        st.sync()
    finally:
        st.store.close()
    reason = county_repairs(system, "V1")[seq]
    assert reason["m"] == "Case %(id)s cannot take %(fact)s while it is in state \u201c%(state)s\u201d."
    assert reason["a"]["fact"] == "a rating"
    central = http(system.central_url, system.central_token)
    assert central.get("/api/v1/ratings").json()["ratings"] == []
    assert central.get(f"/api/v1/cases/{app['id']}").json()["rating"] is None


def rating_body(case_id: str, score: int, comment: str = "") -> dict:
    return {"id": case_id, "score": score, "comment": comment, "by": "代办员",
            "at": dt.datetime.now(CHINA).isoformat(timespec="seconds")}


def test_a_second_rating_from_a_hostile_station_is_set_aside_at_the_county(system, http):
    node, app, dept, _ = decided_and_handed_out(system, http)
    assert node.post(f"/api/v1/applications/{app['id']}/rating", json={"score": 4}).status_code == 201
    st = Station(system.stations["V1"]["settings"])
    st.store.user_by_token(system.stations["V1"]["token"])   # unlocks (node/vault.py)
    try:
        seq = forge(st, facts.RATED, rating_body(app["id"], 1, "再评一次"))
        st.sync()
        assert st.sync_state()["up_waiting"] == 0                 # stored and acked all the same
    finally:
        st.store.close()
    reason = county_repairs(system, "V1")[seq]
    assert reason["m"] == "Case %(id)s has already been rated; a case is rated only once."
    central = http(system.central_url, system.central_token)
    listed = central.get("/api/v1/ratings").json()
    assert [r["score"] for r in listed["ratings"]] == [4] and listed["open"] == 0
    boss, _ = log_in(http, system.central_url, "boss")
    assert "已经评价过" in boss.get("/stations").text.split('id="problems"')[1]
    # the county's history lists it, set aside with its reason
    hist = central.get(f"/api/v1/cases/{app['id']}").json()["history"]
    second = [e for e in hist if e["kind"] == "application.rated"][-1]
    assert second["seq"] == seq and "已经评价过" in second["set_aside"]


# the check itself: any body is either valid or a RuleError, never a crash ------------------------

LEAF = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30)
JSONISH = LEAF | st.lists(LEAF, max_size=4) | st.dictionaries(st.text(max_size=8), LEAF, max_size=4)
RATING_FIELDS = st.fixed_dictionaries({}, optional={
    "id": st.sampled_from(["0f5b2a9e-3c4d-4e8f-9a1b-2c3d4e5f6a7b", "x", ""]) | JSONISH,
    "score": st.integers(-2, 8) | JSONISH, "comment": st.text(max_size=600) | JSONISH,
    "by": st.sampled_from(["李娟", " ", ""]) | JSONISH,
    "at": st.sampled_from(["2026-11-22T19:05:36+08:00", "2026-11-22 19:05", ""]) | JSONISH,
    "extra": JSONISH})


@settings(max_examples=400, deadline=None)
@given(st.one_of(RATING_FIELDS, JSONISH))
def test_the_rating_check_never_crashes(body):
    for kind in (facts.RATED, facts.RATING_ANSWERED):
        try:
            found = facts.SPECS[kind].validate(body)
        except RuleError as exc:
            assert exc.reason()
            continue
        assert found == body["id"] and intake.UUID4.fullmatch(found)
        if kind == facts.RATED:
            assert type(body["score"]) is int and 1 <= body["score"] <= 5 and len(body["comment"]) <= 500


def test_ratings_keep_the_state_and_are_allowed_only_after_the_case_is_done():
    for state in (None, *transitions.Status.ALL):
        for kind in (facts.RATED, facts.RATING_ANSWERED):
            try:
                new = facts.next_state(state, kind, case_id="c")
            except RuleError:
                assert state not in (transitions.Status.HANDED_OUT, transitions.Status.REFUSED,
                                     transitions.Status.CORRECTION_NOTICE)
            else:
                assert new == state and state in (transitions.Status.HANDED_OUT, transitions.Status.REFUSED,
                                                  transitions.Status.CORRECTION_NOTICE)


def test_a_station_restored_from_a_backup_gets_its_rating_and_the_answer_back(pair):
    """The rating went up and was answered after the station's last backup; the disk dies, the
    backup is restored, and the station heals from the county's copy: rating and answer included."""
    from central.app import create_app as central_app
    from central.services import ratings as county_ratings
    from node.services import ratings as station_ratings
    from node.settings import Settings as NodeSettings
    from tests.conftest import serve
    from tests.sync.test_recovery import CLERK, copy_db, settle
    from tests.sync.test_protocol_machine import form_for

    county, st, root = pair
    item = st.items()[0]
    refused = st.take(item["code"], {**form_for(item, 1), "reason": "不符合条件"}, "refuse", "代办员")
    with serve(central_app(county.settings)) as url:
        settle(st, url)
        st.store.close()
        copy_db(st.settings.data, root / "station-backup")             # the nightly backup
        st = Station(NodeSettings(data=st.settings.data))
        station_ratings.rate(st, refused["id"], 1, "太慢", "代办员")
        settle(st, url)
        county_ratings.answer(county, refused["id"], "已整改", CLERK)
        settle(st, url)
        assert station_ratings.rating_of(st, refused["id"])["answer"] == "已整改"
        st.store.close()
        copy_db(root / "station-backup", st.settings.data)             # the disk dies: restore
        st = Station(NodeSettings(data=st.settings.data))
        assert station_ratings.rating_of(st, refused["id"]) is None
        county.mark_restored("S1", "installer")          # `lastmile central station restore S1` (INSTALL.md)
        settle(st, url)
    try:
        rating = station_ratings.rating_of(st, refused["id"])
        assert rating is not None and rating["score"] == 1 and rating["answer"] == "已整改"
        with pytest.raises(station_ratings.Refused):                  # still once
            station_ratings.rate(st, refused["id"], 5, "", "代办员")
    finally:
        st.store.close()
