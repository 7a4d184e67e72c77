"""The county's log self-check (issue 15, item 13): a record changed or removed in central.db on
disk is flagged by the county itself, on the stations page, in the API, by `lastmile central check`
and in the background, without waiting for the station to sync again. The attacker here has the
county's disk: every edit is made with sqlite3 on the real database file."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import httpx

from central.app import create_app as central_app
from central.county import County
from deploy import cli
from sync import chain
from tests.conftest import PASSWORD, csrf_of, serve
from tests.sync.test_recovery import CLERK, pair, round_trip, take  # noqa: F401 - pair: a county and a station

V1 = "S1"       # the station of ``pair``


def edit(county: County, sql: str, *params: object) -> None:
    """Change central.db behind the county's back (its store stays open, as a running county's does)."""
    conn = sqlite3.connect(county.settings.db_path)
    try:
        with conn:
            assert conn.execute(sql, params).rowcount == 1, sql
    finally:
        conn.close()


def stored(county: County, stream: str) -> list:
    """The rows of ``stream`` in central.db, as the check reads them."""
    return list(chain.rows(county.store.conn, stream))


def whats(result: dict) -> set[tuple[str, int, str]]:
    return {(p["stream"], p["seq"], p["what"]) for p in result["problems"]}


def a_case_handed_out(county: County, st) -> dict:
    """One application taken, approved at the county and handed out, all of it synced."""
    case = take(st, 1)[0]
    round_trip(county, st)
    county.decide(case["id"], "approve", "", CLERK)
    round_trip(county, st)
    st.hand_out(case["id"], "代办员")
    round_trip(county, st)
    return case


def test_a_whole_log_passes_and_a_deleted_hand_out_is_flagged_before_the_station_syncs_again(pair):
    county, st, _ = pair
    a_case_handed_out(county, st)
    first = county.self_check()
    assert first["problem_count"] == 0 and first["problems"] == []
    assert first["streams"] == 2 and first["events"] >= 5
    up_head = stored(county, f"up/{V1}")[-1]
    assert up_head[5] == "application.handed_out"

    edit(county, "DELETE FROM _sync_events WHERE stream = ? AND seq = ?", f"up/{V1}", up_head[1])
    found = county.self_check()
    assert whats(found) == {(f"up/{V1}", up_head[1] - 1, "truncated")}
    assert found["problems"][0]["params"] == {"head": up_head[1] - 1, "seen": up_head[1]}
    # it stays flagged: a later check does not take the shorter log as the new normal
    assert whats(county.self_check()) == {(f"up/{V1}", up_head[1] - 1, "truncated")}


def test_edits_in_the_middle_of_a_log_are_each_named(pair):
    county, st, _ = pair
    for _ in range(3):
        a_case_handed_out(county, st)
    up, down = f"up/{V1}", f"down/{V1}"
    rows = stored(county, up)
    assert len(rows) >= 6
    decisions = [r for r in stored(county, down) if r[5] == "case.decided"]
    assert len(decisions) == 3
    # a middle event removed; a body rewritten (approve -> reject); one event's signature swapped for another's
    edit(county, "DELETE FROM _sync_events WHERE stream = ? AND seq = ?", up, rows[2][1])
    edit(county, "UPDATE _sync_events SET body = replace(body, '\"approve\"', '\"reject\"') WHERE stream = ? AND seq = ?",
         down, decisions[0][1])
    edit(county, "UPDATE _sync_events SET sig = ? WHERE stream = ? AND seq = ?", rows[0][8], up, rows[4][1])
    found = county.self_check()
    assert whats(found) == {(up, rows[3][1], "missing"), (down, decisions[0][1], "altered"),
                            (up, rows[4][1], "bad_signature")}
    missing = next(p for p in found["problems"] if p["what"] == "missing")
    assert missing["params"] == {"first": rows[2][1], "last": rows[2][1]}


def test_the_stations_page_the_api_and_the_cli_say_it_and_only_a_supervisor_starts_it(pair, capsys):
    county, st, _ = pair
    a_case_handed_out(county, st)
    county.add_user("boss", "督办", PASSWORD, "supervisor", None)
    clerk_token = county.add_user("mz", "民政科员", PASSWORD, "clerk", "minzheng")
    settings = replace(county.settings, selfcheck_every_s=0)
    with serve(central_app(settings)) as url, httpx.Client(base_url=url, follow_redirects=True, timeout=60,
                                                           headers={"accept-language": "zh-CN"}) as page:
        api = httpx.Client(base_url=url, timeout=60, headers={"authorization": f"Bearer {clerk_token}"})
        assert api.get("/api/v1/selfcheck").json() is None                # not run yet
        refused = api.post("/api/v1/selfcheck")
        assert refused.status_code == 403 and refused.json()["error"] == "supervisor_only"
        page.post("/login", data={"username": "boss", "password": PASSWORD, "csrf": csrf_of(page)})
        html = page.get("/stations").text
        assert "尚未运行" in html or "未运行" in html
        done = page.post("/selfcheck", data={"csrf": csrf_of_page(page)})
        assert done.status_code == 200 and 'id="selfcheck-ok"' in done.text
        assert api.get("/api/v1/selfcheck").json()["problem_count"] == 0

        last = stored(county, f"down/{V1}")[-1]
        edit(county, "UPDATE _sync_events SET body = '{\"x\":' || body || '}' WHERE stream = ? AND seq = ?",
             f"down/{V1}", last[1])
        done = page.post("/selfcheck", data={"csrf": csrf_of_page(page)})
        assert 'id="selfcheck-problems"' in done.text
        assert "签名之后被改动" in done.text and f"down/{V1}" in done.text
        result = api.get("/api/v1/selfcheck").json()
        assert whats(result) == {(f"down/{V1}", last[1], "altered")}
        api.close()
    county.store.close()
    capsys.readouterr()
    assert cli.main(["central", "check", "--data", str(settings.data)]) == 1
    err = capsys.readouterr().err
    assert f"down/{V1}#{last[1]}: This event's body does not match its hash" in err
    county.store = County(settings).store       # the fixture closes it


def csrf_of_page(page: httpx.Client) -> str:
    return page.get("/stations").text.split('name="csrf" value="')[1].split('"')[0]


def test_the_check_runs_by_itself_in_the_background(pair):
    county, st, _ = pair
    a_case_handed_out(county, st)
    settings = replace(county.settings, selfcheck_first_s=0.1, selfcheck_every_s=0.3)
    up = stored(county, f"up/{V1}")
    with serve(central_app(settings)):
        first = wait_for(lambda r: r is not None, county)
        assert first["problem_count"] == 0
        edit(county, "DELETE FROM _sync_events WHERE stream = ? AND seq = ?", f"up/{V1}", up[0][1])
        flagged = wait_for(lambda r: r and r["problem_count"], county)
        assert whats(flagged) == {(f"up/{V1}", up[1][1], "missing")}


def wait_for(ok, county: County, seconds: float = 30) -> dict:
    from central.services import selfcheck
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = selfcheck.last(county.store)
        if ok(result):
            return result
        time.sleep(0.1)
    raise AssertionError("the background check did not report in time")


def test_a_station_purge_stub_is_allowed_upstream_but_a_stub_the_county_signed_is_not(pair):
    """A station that purged events a restored county had lost sends them as redacted stubs (PROTOCOL
    §8.7): still signed over the original hash, they pass upstream. A stub in the county's own
    downstream log was never sent by anyone: it is an edit."""
    from crypto import canonical
    from sync.law import retention
    county, st, _ = pair
    case = a_case_handed_out(county, st)
    up = next(r for r in stored(county, f"up/{V1}")
              if r[5] == "application.accepted" and case["id"] in r[7])
    down = next(r for r in stored(county, f"down/{V1}") if r[5] == "case.decided")
    for row, stream in ((up, f"up/{V1}"), (down, f"down/{V1}")):
        stub = canonical.dumps(retention.redact(canonical.loads(row[7].encode()))).decode()
        edit(county, "UPDATE _sync_events SET body = ? WHERE stream = ? AND seq = ?", stub, stream, row[1])
    found = county.self_check()
    assert whats(found) == {(f"down/{V1}", down[1], "altered")}
    assert found["redacted"] == 1


def test_garbage_in_a_body_is_reported_not_a_crash(pair, tmp_path: Path):
    county, st, _ = pair
    a_case_handed_out(county, st)
    row = stored(county, f"up/{V1}")[1]
    edit(county, "UPDATE _sync_events SET body = ? WHERE stream = ? AND seq = ?", "{not json", f"up/{V1}", row[1])
    assert whats(county.self_check()) == {(f"up/{V1}", row[1], "unreadable")}
