"""The JSON APIs' OpenAPI documents stay true to the mounted routes, every page action has an API
counterpart (the audit in node/http/openapi.py and central/http/openapi.py, docs/ARCHITECTURE.md), and API
errors name fields in the API's own names."""

from __future__ import annotations

import hashlib
import re

from central import app as central_app_module
from central.http import openapi as central_openapi
from node import app as node_app_module
from node.http import openapi as node_openapi
from templates.openapi import documented, mounted_api
from tests.life.test_case_life import APPLICANT, ITEM, accept, fields, jpeg, sync

APPS = {"node": (node_app_module.ROUTES, node_openapi), "central": (central_app_module.ROUTES, central_openapi)}
NOT_PAGES = ("/api/", "/sync/", "/enroll/")      # the API itself, and the station-to-county wire


def _path(path: str) -> str:
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)


def test_each_document_describes_exactly_the_mounted_api_routes():
    for name, (routes, spec) in APPS.items():
        mounted, described = mounted_api(routes), documented(spec.DOCUMENT)
        assert mounted == described, (name, "undocumented:", mounted - described, "stale:", described - mounted)


def test_every_page_action_has_an_api_counterpart_or_a_reason():
    for name, (routes, spec) in APPS.items():
        page_posts = {("POST", _path(r.path)) for r in routes if "POST" in (getattr(r, "methods", None) or ())
                      and not r.path.startswith(NOT_PAGES)}
        assert page_posts == set(spec.PAGE_ACTIONS), (name, "not in the audit:", page_posts - set(spec.PAGE_ACTIONS),
                                                      "gone:", set(spec.PAGE_ACTIONS) - page_posts)
        for page, api in spec.PAGE_ACTIONS.items():
            if isinstance(api, str):
                assert page[1] in ("/login", "/logout") and api, (name, page)   # only the session has no API
            else:
                assert api in mounted_api(routes), (name, page, api)


def test_both_apps_serve_their_document_without_login(system, http):
    for url, title in ((system.stations["V1"]["url"], "lastmile station"), (system.central_url, "lastmile county centre")):
        r = http(url).get("/openapi.json")
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        doc = r.json()
        assert doc["openapi"].startswith("3.1") and doc["info"]["title"] == title
        assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert "/api/v1/verify" in doc["paths"] and doc["paths"]["/api/v1/verify"]["post"]["security"] == []


def test_api_error_details_use_the_api_names_not_the_form_names(system, http):
    v1 = system.stations["V1"]
    api = http(v1["url"], v1["token"])
    sync(api)
    r = api.post("/api/v1/applications", json={
        "item": ITEM["code"], "decision": "accept", "applicant": {**APPLICANT, "id_number": "123"},
        "fields": {**fields(), "event_date": "20 November"},
        "materials": [m["code"] for m in ITEM["materials"] if m.get("required")]})
    assert r.status_code == 422, r.text
    details = r.json()["details"]
    assert "applicant.id_number" in details and "fields.event_date" in details, details
    assert not any(k.startswith("f_") or k in ("id_number", "event_date") for k in details), details
    assert r.json()["error"] == "invalid"
    # the same names when completing a correction notice
    notice = api.post("/api/v1/applications", json={"item": ITEM["code"], "decision": "correction",
                                                    "applicant": APPLICANT, "fields": fields(), "materials": []})
    assert notice.status_code == 201, notice.text
    r = api.post(f"/api/v1/applications/{notice.json()['id']}/complete", json={
        "decision": "accept", "applicant": {**APPLICANT, "phone": "12"}, "fields": {**fields(), "event_date": "x"},
        "materials": [m["code"] for m in ITEM["materials"] if m.get("required")]})
    assert r.status_code == 422 and set(r.json()["details"]) == {"applicant.phone", "fields.event_date"}, r.text


def test_the_station_correction_notice_is_completed_over_the_api_on_the_same_case(system, http):
    v1 = system.stations["V1"]
    api = http(v1["url"], v1["token"])
    sync(api)
    notice = api.post("/api/v1/applications", json={"item": ITEM["code"], "decision": "correction",
                                                    "applicant": APPLICANT, "fields": fields(), "materials": []})
    assert notice.status_code == 201 and notice.json()["status"] == "correction_notice", notice.text
    case_id = notice.json()["id"]
    required = [m["code"] for m in ITEM["materials"] if m.get("required")]
    done = api.post(f"/api/v1/applications/{case_id}/complete", json={
        "decision": "accept", "applicant": APPLICANT, "fields": fields(), "materials": required})
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["id"] == case_id and body["status"] == "accepted" and body["promised_date"]
    assert body["receipt_no"] != notice.json()["receipt_no"]
    again = api.post(f"/api/v1/applications/{case_id}/complete", json={
        "decision": "accept", "applicant": APPLICANT, "fields": fields(), "materials": required})
    assert again.status_code == 409 and again.json()["error"] == "conflict", again.text
    assert api.get(f"/api/v1/applications/{case_id}").json()["status"] == "accepted"     # nothing else changed
    missing = api.post("/api/v1/applications/nope/complete", json={"decision": "accept", "applicant": APPLICANT})
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    sync(api)
    county = http(system.central_url, system.clerk_tokens[ITEM["department"]])
    assert county.get(f"/api/v1/cases/{case_id}").json()["status"] == "received"       # the county has it


def test_the_county_stations_page_and_a_case_scan_have_their_api(system, http):
    v1 = system.stations["V1"]
    api = http(v1["url"], v1["token"])
    sync(api)
    picture = jpeg("blue")
    app = accept(api, scans=[{"material": ITEM["materials"][0]["code"], "name": "证明.jpg", "data_base64": picture}])
    sync(api)
    sync(api)           # the scan goes after the county holds the application that lists it
    clerk = http(system.central_url, system.clerk_tokens[ITEM["department"]])
    stations = clerk.get("/api/v1/stations")
    assert stations.status_code == 200, stations.text
    rows = {s["code"]: s for s in stations.json()["stations"]}
    assert set(rows) == {"V1", "T1"} and rows["V1"]["status"] == "active" and rows["V1"]["received"] >= 1
    assert not {"enroll_code_hash", "enroll_expires", "sign_key", "enc_key"} & set(rows["V1"]), rows["V1"]   # no secrets
    sha = clerk.get(f"/api/v1/cases/{app['id']}").json()["scans"][0]["sha256"]
    r = clerk.get(f"/api/v1/cases/{app['id']}/scans/{sha}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert hashlib.sha256(r.content).hexdigest() == sha and r.content[:2] == b"\xff\xd8"     # the signed scan
    other = next(t for d, t in system.clerk_tokens.items() if d not in (ITEM["department"], "supervisor"))
    assert http(system.central_url, other).get(f"/api/v1/cases/{app['id']}/scans/{sha}").json()["error"] == \
        "other_department"
    missing = clerk.get(f"/api/v1/cases/{app['id']}/scans/{'0' * 64}")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert http(system.central_url).get("/api/v1/stations").status_code == 401


def test_county_refusals_name_the_field_of_the_api_body(system, http):
    v1 = system.stations["V1"]
    api = http(v1["url"], v1["token"])
    sync(api)
    app = accept(api)
    sync(api)
    clerk = http(system.central_url, system.clerk_tokens[ITEM["department"]])
    r = clerk.post(f"/api/v1/cases/{app['id']}/decision", json={"decision": "reject", "basis": "《办法》第五条"})
    assert r.status_code == 422 and r.json()["error"] == "reason_required", r.text
    assert list(r.json()["details"]) == ["reason"] and r.json()["details"]["reason"] == r.json()["message"]
    r = clerk.post(f"/api/v1/cases/{app['id']}/decision", json={"decision": "maybe"})
    assert r.status_code == 422 and list(r.json()["details"]) == ["decision"]
    assert clerk.get(f"/api/v1/cases/{app['id']}").json()["status"] == "received"        # nothing was decided


def test_the_start_page_lists_have_their_api(system, http):
    v1 = system.stations["V1"]
    api = http(v1["url"], v1["token"])
    sync(api)
    notice = api.post("/api/v1/applications", json={"item": ITEM["code"], "decision": "correction",
                                                    "applicant": APPLICANT, "fields": fields(), "materials": []})
    report = api.post("/api/v1/reports", json={"name": "李四", "phone": "13800000000", "tried": "开证明",
                                               "where": "镇政府"})
    assert notice.status_code == 201 and report.status_code == 201, (notice.text, report.text)
    today = api.get("/api/v1/today")
    assert today.status_code == 200, today.text
    body = today.json()
    assert [a["id"] for a in body["waiting"]] == [notice.json()["id"]] and body["results"] == []
    assert [r["receipt_no"] for r in body["open_reports"]] == [report.json()["receipt_no"]]
    r = api.post("/api/v1/applications/x/supplement", json={"materials": "id_card"})
    assert r.status_code == 422 and list(r.json()["details"]) == ["materials"]
    r = api.post("/api/v1/applications", json={"item": ITEM["code"], "decision": "accept", "applicant": APPLICANT,
                                               "scans": [{"material": "x"}]})
    assert r.status_code == 422 and list(r.json()["details"]) == ["scans[0]"], r.text
