"""One history per case (电子监察): both pages and both APIs list every fact naming the case, oldest
first, each signature checked again now; an event edited in the database shows as not verifying."""

from __future__ import annotations

import sqlite3

from node.station import Station
from node.store import Store as NodeStore
from tests.central.test_hostile_station import forge
from tests.conftest import log_in
from tests.test_rating import decided_and_handed_out

LIFE = ["application.accepted", "case.decided", "application.handed_out", "application.rated", "rating.answered"]


def whole_life(system, http) -> tuple:
    node, app, dept, page = decided_and_handed_out(system, http)
    assert node.post(f"/api/v1/applications/{app['id']}/rating", json={"score": 2, "comment": "态度不好"}).status_code == 201
    node.post("/api/v1/sync")
    clerk = http(system.central_url, system.clerk_tokens[dept])
    assert clerk.post(f"/api/v1/ratings/{app['id']}/answer", json={"answer": "已批评教育"}).status_code == 200
    node.post("/api/v1/sync")
    return node, app, dept, page, clerk


def test_both_ends_show_the_whole_history_in_order_with_valid_signatures(system, http):
    node, app, dept, page, clerk = whole_life(system, http)
    station_view = node.get(f"/api/v1/applications/{app['id']}").json()["history"]
    county_view = clerk.get(f"/api/v1/cases/{app['id']}").json()["history"]
    for hist in (station_view, county_view):
        assert [e["kind"] for e in hist] == LIFE
        assert {e["signature"] for e in hist} == {"valid"}
        assert [e["label"] for e in hist] == ["受理申请", "县级审批：已批准", "出件", "群众评价", "县级整改反馈"]
        assert {"kind", "label", "at", "received_at", "by", "where", "seq", "stream", "signature"} <= set(hist[0])
        assert hist[0]["by"] == "V1代办员" and hist[0]["where"]["code"] == "V1" and hist[0]["stream"] == "up/V1"
        assert hist[1]["stream"] == "down/V1" and hist[1]["where"]["code"] == dept and hist[1]["where"]["side"] == "county"
        assert hist[4]["by"] and hist[4]["where"]["code"] == dept
    assert all(e["received_at"] for e in county_view)                 # the county stored each one
    assert station_view[0]["received_at"]                             # the station knows its ack

    # The pages show the same list, in the reader's language, every signature verifying.
    station_page = page.get(f"/applications/{app['id']}").text.split('id="history"')[1]
    boss, _ = log_in(http, system.central_url, "boss")
    county_page = boss.get(f"/cases/{app['id']}").text.split('id="history"')[1]
    for html in (station_page, county_page):
        assert [html.index(f'data-kind="{k}"') for k in LIFE] == sorted(html.index(f'data-kind="{k}"') for k in LIFE)
        assert html.count("✓ 验证通过") == 5 and "验证不通过" not in html


def tamper(db_path, kind: str, old: str, new: str, token: str | None = None) -> None:
    if token:                   # a station's bodies are encrypted (node/vault.py): edit them through its store
        store = NodeStore(db_path)
        assert store.user_by_token(token)
        try:
            with store.transaction() as db:
                rows = db.execute("SELECT rowid, body FROM _sync_events WHERE kind = ?", (kind,)).fetchall()
                hit = [(rowid, body.replace(old, new)) for rowid, body in rows if old in body]
                for rowid, body in hit:
                    db.execute("UPDATE _sync_events SET body = ? WHERE rowid = ?", (body, rowid))
            assert len(hit) == 1
        finally:
            store.close()
        return
    conn = sqlite3.connect(db_path)
    try:
        with conn:
            n = conn.execute("UPDATE _sync_events SET body = replace(body, ?, ?) WHERE kind = ?", (old, new, kind)).rowcount
        assert n == 1
    finally:
        conn.close()


def test_an_event_edited_in_the_database_shows_as_not_verifying(system, http):
    node, app, dept, page, clerk = whole_life(system, http)
    tamper(system.data / "central" / "central.db", "application.rated", "态度不好", "态度很好")
    tamper(system.stations["V1"]["settings"].db_path, "rating.answered", "已批评教育", "无需整改",
           system.stations["V1"]["token"])

    county_view = {e["kind"]: e["signature"] for e in clerk.get(f"/api/v1/cases/{app['id']}").json()["history"]}
    assert county_view.pop("application.rated") == "invalid" and set(county_view.values()) == {"valid"}
    station_view = {e["kind"]: e["signature"] for e in node.get(f"/api/v1/applications/{app['id']}").json()["history"]}
    assert station_view.pop("rating.answered") == "invalid" and set(station_view.values()) == {"valid"}

    boss, _ = log_in(http, system.central_url, "boss")
    row = boss.get(f"/cases/{app['id']}").text.split('data-kind="application.rated"')[1].split("</tr>")[0]
    assert "✗ 验证不通过" in row
    row = page.get(f"/applications/{app['id']}").text.split('data-kind="rating.answered"')[1].split("</tr>")[0]
    assert "✗ 验证不通过" in row


def test_a_kind_nobody_knows_gets_a_generic_line_not_an_error(system, http):
    node, app, dept, page = decided_and_handed_out(system, http)
    st = Station(system.stations["V1"]["settings"])
    st.store.user_by_token(system.stations["V1"]["token"])   # unlocks (node/vault.py)
    try:
        seq = forge(st, "application.from_the_future", {"id": app["id"], "by": "代办员", "at": "2026-11-22T19:05:36+08:00"})
        st.sync()
    finally:
        st.store.close()
    for hist in (node.get(f"/api/v1/applications/{app['id']}").json()["history"],
                 http(system.central_url, system.central_token).get(f"/api/v1/cases/{app['id']}").json()["history"]):
        last = hist[-1]
        assert last["kind"] == "application.from_the_future" and last["seq"] == seq
        assert last["label"] == "事件 application.from_the_future" and last["signature"] == "valid"
    assert page.get(f"/applications/{app['id']}").status_code == 200
    boss, _ = log_in(http, system.central_url, "boss")
    county_page = boss.get(f"/cases/{app['id']}").text
    assert "事件 application.from_the_future" in county_page and "已搁置" in county_page    # the county set it aside


def test_a_supplement_after_a_correction_request_is_in_the_history_at_both_ends(system, http):
    from tests.test_rating import accepted_case
    node, app, dept = accepted_case(system, http)
    clerk = http(system.central_url, system.clerk_tokens[dept])
    r = clerk.post(f"/api/v1/cases/{app['id']}/decision", json={"decision": "correction", "note": "户口簿不清晰"})
    assert r.status_code == 200, r.text
    node.post("/api/v1/sync")
    material = node.get(f"/api/v1/applications/{app['id']}").json()
    r = node.post(f"/api/v1/applications/{app['id']}/supplement", json={"materials": [], "note": "已补交清晰复印件"})
    assert r.status_code == 200, r.text
    node.post("/api/v1/sync")
    for hist in (node.get(f"/api/v1/applications/{app['id']}").json()["history"],
                 clerk.get(f"/api/v1/cases/{app['id']}").json()["history"]):
        assert [e["kind"] for e in hist] == ["application.accepted", "case.decided", "application.supplemented"]
        assert [e["label"] for e in hist][1:] == ["县级审批：已退回补正", "登记补正材料"]
        assert {e["signature"] for e in hist} == {"valid"} and not any(e["set_aside"] for e in hist)
    assert material["status"] == "correction_requested"
