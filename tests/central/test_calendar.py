"""The county enters a year's working-day schedule (API and CLI); it goes down to every station, which
counts promised dates by it; where no schedule is known the dates are marked provisional and the
county's supervisors are warned. Real servers, real SQLite files."""

from __future__ import annotations

import copy
import datetime as dt
import json
import sqlite3

from central.app import create_app as central_app
from central.county import County, Settings as CentralSettings
from deploy.cli import main as cli
from node.app import create_app as node_app
from sync.law import workdays
from sync.law.workdays import WorkCalendar
from tests.conftest import CATALOG, add_station, log_in, make_county, serve
from tests.e2e.test_walking_skeleton import full_application

CHINA = dt.timezone(dt.timedelta(hours=8))
EMPTY = {"holidays": [], "workdays": []}


def _held(db_path, year: int) -> dict | None:
    conn = sqlite3.connect(db_path)
    try:
        row = conn.execute("SELECT value FROM meta WHERE name = ?", (f"calendar:{year}",)).fetchone()
        return json.loads(row[0]) if row else None
    finally:
        conn.close()


def test_only_a_supervisor_enters_a_schedule_and_bad_ones_are_refused(system, http):
    boss = http(system.central_url, system.central_token)
    clerk = http(system.central_url, next(t for d, t in system.clerk_tokens.items() if d != "supervisor"))
    assert boss.get("/api/v1/calendar/2025").json()["source"] == "library"
    before = boss.get("/api/v1/calendar/2041").json()
    assert before["source"] == "weekends" and before["provisional"] is True and before["published_at"] is None

    r = clerk.put("/api/v1/calendar/2041", json={"holidays": ["2041-01-01"], "workdays": []})
    assert r.status_code == 403 and r.json()["error"] == "supervisor_only"
    for body, field in (({"holidays": ["2040-12-31"], "workdays": []}, "holidays"),
                        ({"holidays": [], "workdays": ["2041-01-07"]}, "workdays"),        # a Monday
                        ({"holidays": ["2041-01-05"], "workdays": ["2041-01-05"]}, "workdays"),
                        ({"holidays": ["1 Jan"], "workdays": []}, "holidays")):
        r = boss.put("/api/v1/calendar/2041", json=body)
        assert r.status_code == 422 and r.json()["error"] == "invalid_schedule", r.text
        assert r.json()["details"]["field"] == field and r.json()["message"]
    r = boss.put("/api/v1/calendar/2041", json={"holidays": []})
    assert r.status_code == 422 and r.json()["details"]["missing"] == ["workdays"]
    assert boss.put("/api/v1/calendar/20x1", json=EMPTY).status_code == 422
    for path in ("/api/v1/calendar/0000", "/api/v1/calendar/9999", "/api/v1/calendar/12345"):
        r = boss.get(path)
        assert r.status_code == 422 and r.json()["details"] == {"field": "year"}, path
    assert boss.get("/api/v1/calendar/2041").json() == before                # nothing stored
    assert _held(system.data / "central" / "central.db", 2041) is None

    r = boss.put("/api/v1/calendar/2041", json={"holidays": ["2041-01-01"], "workdays": ["2041-01-05"]})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["source"] == "county" and got["provisional"] is False and got["published_by"] == "boss"
    assert got["holidays"] == ["2041-01-01"] and got["workdays"] == ["2041-01-05"]
    assert clerk.get("/api/v1/calendar/2041").json()["source"] == "county"       # everyone may read it
    # A later publication of the year replaces the earlier one.
    assert boss.put("/api/v1/calendar/2041", json={"holidays": ["2041-01-02"], "workdays": []}).status_code == 200
    assert boss.get("/api/v1/calendar/2041").json()["holidays"] == ["2041-01-02"]


def test_the_cli_sets_from_json_or_text_and_shows_the_warning(tmp_path, capsys):
    settings, _ = make_county(tmp_path / "central")
    data = str(settings.data)
    text = tmp_path / "2039.txt"
    text.write_text("# State Council, 2038\n2039-01-03 holiday\n\n2039-01-08 workday\n", encoding="utf-8")
    assert cli(["central", "calendar", "set", "2039", str(text), "--data", data]) == 0
    assert "calendar of 2039 published" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"holidays": ["2039-01-03"], "workdays": ["2039-01-04"]}), encoding="utf-8")
    assert cli(["central", "calendar", "set", "2039", str(bad), "--data", data]) == 2
    assert "not a Saturday or Sunday" in capsys.readouterr().err
    junk = tmp_path / "junk.txt"
    junk.write_text("2039-01-03 feast\n", encoding="utf-8")
    assert cli(["central", "calendar", "set", "2039", str(junk), "--data", data]) == 2
    assert "Line 1" in capsys.readouterr().err
    assert cli(["central", "calendar", "show", "0", "--data", data]) == 2
    assert cli(["central", "calendar", "show", "--data", data, "--today", "1 Nov"]) == 2
    assert cli(["central", "calendar", "set", "--data", data]) == 2
    capsys.readouterr()

    assert cli(["central", "calendar", "show", "2039", "--data", data, "--today", "2039-10-31"]) == 0
    out = capsys.readouterr()
    assert "2039: source county" in out.out and "2039-01-03" in out.out and "2039-01-08" in out.out
    assert "WARNING" not in out.err
    assert cli(["central", "calendar", "show", "--data", data, "--today", "2039-11-01"]) == 0
    out = capsys.readouterr()
    assert "2040: source weekends (PROVISIONAL" in out.out
    assert "WARNING: no working-day schedule for 2040" in out.err

    good = tmp_path / "2040.json"
    good.write_text(json.dumps({"holidays": ["2040-01-02"], "workdays": []}), encoding="utf-8")
    assert cli(["central", "calendar", "set", "2040", str(good), "--data", data]) == 0
    assert cli(["central", "calendar", "show", "--data", data, "--today", "2039-11-01"]) == 0
    assert "WARNING" not in capsys.readouterr().err


def test_supervisors_see_a_banner_from_1_november_when_next_year_is_missing(tmp_path, http):
    settings, tokens = make_county(tmp_path / "central")
    county = County(settings)
    try:
        from central.services import calendar
        calendar.publish(county, 2039, [], [], "boss")                    # this year is known
    finally:
        county.store.close()
    dept = next(d for d in tokens if d != "supervisor")
    for today, banner in ((dt.date(2039, 10, 31), False), (dt.date(2039, 11, 1), True)):
        with serve(central_app(CentralSettings(data=settings.data, calendar_today=today))) as url:
            for user, sees in (("boss", banner), (dept, False)):
                page, landing = log_in(http, url, user)
                assert landing.status_code == 200
                for path in ("/", "/stations"):
                    html = page.get(path).text
                    assert ('id="calendar-missing"' in html) == sees, (today, user, path)
                    assert ("2040" in html) == sees
            if banner:
                api = http(url, tokens["supervisor"])
                assert api.put("/api/v1/calendar/2040", json=EMPTY).status_code == 200
                page, _ = log_in(http, url, "boss")
                assert 'id="calendar-missing"' not in page.get("/").text


def test_a_promised_date_into_an_unknown_year_is_provisional_until_the_county_enters_it(system, http, tmp_path):
    """The station accepts today an application whose promised date reaches into the first year
    nobody knows (2027 as this is written); it is counted on weekends and marked provisional at
    the station and the county. The county enters that year with a holiday before the date; the
    station syncs; a new application's promised date moves one working day and is not provisional."""
    today = dt.datetime.now(CHINA).date()
    year = next(y for y in range(today.year, today.year + 50) if not workdays.library_knows(y))
    holiday = next(d for d in (dt.date(year, 1, 1) + dt.timedelta(n) for n in range(366))
                   if d > today and d.weekday() < 5)
    limit = workdays.LIBRARY_ONLY.working_days_between(today, holiday) + 2     # two working days past it

    catalog = copy.deepcopy(CATALOG)
    item = next(i for i in catalog["items"] if "village" in i["levels"])
    item["time_limit_days"] = limit
    county = County(CentralSettings(data=system.data / "central"))
    try:
        county.publish_catalog(catalog)
    finally:
        county.store.close()
    v1 = system.stations["V1"]
    node = http(v1["url"], v1["token"])
    boss = http(system.central_url, system.central_token)
    assert node.post("/api/v1/sync").status_code == 200
    item = next(i for i in node.get("/api/v1/catalog").json()["items"] if i["code"] == item["code"])
    assert item["time_limit_days"] == limit

    r = node.post("/api/v1/applications", json=full_application(item))
    assert r.status_code == 201, r.text
    first = r.json()
    weekends_only = workdays.LIBRARY_ONLY.add_working_days(today, limit)
    assert first["promised_date"] == weekends_only.isoformat() and weekends_only.year == year
    assert first["promised_provisional"] is True
    agent, _ = log_in(http, v1["url"], "agent")
    for path in ("/", f"/applications/{first['id']}", f"/applications/{first['id']}/document"):
        html = agent.get(path).text
        assert 'class="provisional"' in html and "（暂定）" in html, path
    node.post("/api/v1/sync")
    case = boss.get(f"/api/v1/cases/{first['id']}").json()
    assert case["promised_date"] == first["promised_date"] and case["promised_provisional"] is True
    supervisor, _ = log_in(http, system.central_url, "boss")
    for path in ("/?status=received", f"/cases/{first['id']}"):
        assert 'class="provisional"' in supervisor.get(path).text, path

    # The county enters the year: a holiday on a weekday before the promised date.
    r = boss.put(f"/api/v1/calendar/{year}", json={"holidays": [holiday.isoformat()], "workdays": []})
    assert r.status_code == 200 and r.json()["source"] == "county"
    assert node.post("/api/v1/sync").json()["received"] >= 1
    held = _held(v1["settings"].db_path, year)
    assert held["holidays"] == [holiday.isoformat()] and held["by"] == "boss" and held["year"] == year

    r = node.post("/api/v1/applications", json=full_application(item))
    assert r.status_code == 201, r.text
    second = r.json()
    expected = WorkCalendar.of({year: {"holidays": [holiday.isoformat()], "workdays": []}}).add_working_days(today, limit)
    assert second["promised_date"] == expected.isoformat() != first["promised_date"]
    assert expected == workdays.LIBRARY_ONLY.add_working_days(weekends_only, 1)      # one working day later
    assert second["promised_provisional"] is False
    html = agent.get(f"/applications/{second['id']}/document").text
    assert expected.isoformat() in html and 'class="provisional"' not in html
    node.post("/api/v1/sync")
    assert boss.get(f"/api/v1/cases/{second['id']}").json()["promised_provisional"] is False

    # A station enrolled later gets every year the county entered, and counts the same way.
    settings, token = add_station(CentralSettings(data=system.data / "central"), system.central_url,
                                  tmp_path / "V9", "V9", "village")
    with serve(node_app(settings, background_sync=False)) as url:
        late = http(url, token)
        assert late.post("/api/v1/sync").status_code == 200
        r = late.post("/api/v1/applications", json=full_application(item))
        assert r.status_code == 201, r.text
        assert r.json()["promised_date"] == expected.isoformat() and r.json()["promised_provisional"] is False
    assert _held(settings.db_path, year)["holidays"] == [holiday.isoformat()]


def test_a_county_restored_from_an_old_backup_stores_a_given_back_schedule_but_does_not_take_it_from_a_station(tmp_path):
    """The give-back path: the station returns the county's own calendar.published; the county checks
    it is whole and its own, stores it again (the chain goes on), but does not re-project it: what a
    station hands back is not where the county's calendar comes from (issue 15). A supervisor enters
    the year again."""
    from central.services import calendar
    from tests.sync.test_protocol_machine import make_pair
    from tests.sync.test_recovery import copy_db, round_trip, sync_until_quiet

    county, st = make_pair(tmp_path)
    round_trip(county, st)
    settings = county.settings
    county.store.close()
    copy_db(settings.data, tmp_path / "county-backup")            # last night's backup: no 2041 yet
    county = County(settings)
    try:
        calendar.publish(county, 2041, ["2041-01-01"], ["2041-01-05"], "boss")
    finally:
        county.store.close()
    with serve(central_app(settings)) as url:
        sync_until_quiet(st, url)
        assert st.calendar().source(2041) == "county"
    copy_db(tmp_path / "county-backup", settings.data)           # the county's disk died: restore the backup
    county = County(settings)
    try:
        assert calendar.effective(county, 2041)["source"] == "weekends"
    finally:
        county.store.close()
    with serve(central_app(settings)) as url:
        sync_until_quiet(st, url)                                # the station gives the rest back
    county = County(settings)
    try:
        assert county.store.conn.execute("SELECT count(*) FROM _sync_events WHERE stream = 'down/S1' AND kind ="
                                         " 'calendar.published'").fetchone()[0] >= 1     # stored again
        assert calendar.effective(county, 2041)["source"] == "weekends"                  # not re-projected
        assert county.store.conn.execute("SELECT count(*) FROM _sync_repairs").fetchone()[0] == 0
    finally:
        county.store.close()
        st.store.close()
