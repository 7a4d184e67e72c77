"""The start page lists what needs the agent today, and updates itself as sync brings results down."""

from __future__ import annotations

import sqlite3

from sync import log
from sync.law.intake import valid_id_for_demo
from tests.conftest import log_in
from tests.life.test_case_life import sync


def test_today_lists_results_waiting_and_overdue_cases_and_its_stamp_moves(system, http):
    v1 = system.stations["V1"]
    api = http(v1["url"], v1["token"])
    sync(api)
    item = next(i for i in api.get("/api/v1/catalog").json()["items"] if i["code"] == "RS-001")   # 5 working days
    r = api.post("/api/v1/applications", json={
        "item": "RS-001", "decision": "accept", "materials": [m["code"] for m in item["materials"] if m["required"]],
        "applicant": {"name": "周玉兰", "id_number": valid_id_for_demo("41152619560101002"), "phone": "", "address": ""},
        "fields": {f["name"]: f["options"][0]["value"] for f in item["fields"]}})
    assert r.status_code == 201, r.text
    receipt = r.json()["receipt_no"]
    page, home = log_in(http, v1["url"], "agent")
    assert 'id="today"' in home.text and "/static/app.js" in home.text
    first = page.get("/today").json()
    assert receipt not in first["html"]                       # 5 working days left: not due yet
    assert page.get("/today").json()["stamp"] == first["stamp"]

    # the station's clock is found 8 days slow: by the corrected clock the case is past its date
    conn = sqlite3.connect(v1["settings"].db_path)
    with conn:
        log.set_status(conn, "clock_skew_s", str(-8 * 86400))
    conn.close()
    later = page.get("/today").json()
    assert later["stamp"] != first["stamp"]
    assert receipt in later["html"] and "已超期" in later["html"]
    assert page.get("/today", follow_redirects=False).headers["cache-control"] == "no-store"
    assert http(v1["url"]).get("/today", follow_redirects=False).status_code in (303, 401)   # not without login
