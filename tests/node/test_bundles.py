"""一件事一次办: one sitting, one applicant, several items (node/services/sittings.py, central/services/bundles.py),
through real servers: the station's API and pages, the county's queues, case pages and API."""

from __future__ import annotations

import base64
import copy
import io
import sqlite3
from typing import Any

import pytest
from PIL import Image

from central.county import County, CountyError, Settings
from sync.law.intake import valid_id_for_demo
from tests.conftest import CATALOG, log_in, stored

ID = valid_id_for_demo("11010519900307001")
FIELDS = {"WJ-001": {"child_order": 1, "expected_date": "2026-12-20", "marital_status": "first"},
          "YB-001": {"insured_count": 1, "insured_category": "newborn", "subsidy_type": "none"}}
BIRTH = ["id_card", "marriage_cert", "household_register"]       # every required material of both items


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (200, 100), "white").save(out, "JPEG")
    return out.getvalue()


def sitting(**extra: Any) -> dict[str, Any]:
    return {"bundle": "YJS-001", "decision": "accept",
            "applicant": {"name": "王芳", "id_number": ID, "phone": "13800138000", "address": "张村三组12号"},
            "items": [{"item": code, "fields": dict(fields)} for code, fields in FIELDS.items()],
            "materials": BIRTH, **extra}


def rows(settings: Any, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(settings.db_path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture
def v1(system, http) -> dict[str, Any]:
    v1 = system.stations["V1"]
    api = http(v1["url"], v1["token"])
    assert api.post("/api/v1/sync").status_code == 200                      # the catalogue
    return {**v1, "api": api}


def test_an_api_sitting_makes_linked_cases_in_two_departments_with_one_receipt(system, v1, http):
    scan = {"material": "id_card", "name": "身份证.jpg", "data_base64": base64.b64encode(jpeg()).decode()}
    r = v1["api"].post("/api/v1/applications", json=sitting(scans=[scan]))
    assert r.status_code == 201, r.text
    got = r.json()
    wj, yb = got["applications"]
    assert got["bundle"] == "YJS-001" and len(got["bundle_id"]) == 36
    assert (wj["item_code"], yb["item_code"]) == ("WJ-001", "YB-001")
    # Each item its own gapless receipt number and its own promised date (3 and 5 working days).
    assert [wj["receipt_no"][-5:], yb["receipt_no"][-5:]] == ["00001", "00002"]
    assert wj["promised_date"] < yb["promised_date"]
    # The shared material was scanned once and is listed on both cases.
    assert [s["material"] for s in wj["scans"]] == [s["material"] for s in yb["scans"]] == ["id_card"]
    assert wj["scans"][0]["sha256"] == yb["scans"][0]["sha256"]
    one = v1["api"].get(f"/api/v1/applications/{yb['id']}").json()
    assert one["bundle_id"] == got["bundle_id"] and one["bundle_cases"] == [wj["id"]]

    page, _ = log_in(http, v1["url"], "agent")
    assert f'href="/applications/{yb["id"]}/bundle-receipt"' in page.get(f"/applications/{yb['id']}").text
    assert wj["receipt_no"] in page.get(f"/applications/{yb['id']}/bundle-receipt").text
    receipt = page.get(got["receipt_url"])
    assert receipt.status_code == 200
    for app in (wj, yb):
        assert app["receipt_no"] in receipt.text and app["promised_date"] in receipt.text
    assert "出生一件事" in receipt.text and "县卫生健康委员会" in receipt.text and "县医疗保障局" in receipt.text

    assert v1["api"].post("/api/v1/sync").status_code == 200
    assert v1["api"].post("/api/v1/sync").status_code == 200          # the scan goes up after the ack
    county = http(system.central_url, system.central_token)
    queue = {d: [c["id"] for c in http(system.central_url, system.clerk_tokens[d]).get("/api/v1/cases").json()["cases"]]
             for d in ("weijian", "yibao")}
    assert queue == {"weijian": [wj["id"]], "yibao": [yb["id"]]}
    case = county.get(f"/api/v1/cases/{wj['id']}").json()
    assert case["bundle_id"] == got["bundle_id"] and case["bundle_code"] == "YJS-001"
    assert [(o["id"], o["department"], o["may_read"]) for o in case["bundle_cases"]] == [(yb["id"], "yibao", True)]
    for app in (wj, yb):
        at_county = county.get(f"/api/v1/cases/{app['id']}").json()
        assert [s["sha256"] for s in at_county["scans"]] == [wj["scans"][0]["sha256"]]
        assert at_county["scans_complete"] is True

    # A clerk of one department sees the other item's name and status, with no link, and may not open it.
    clerk = http(system.central_url, system.clerk_tokens["weijian"])
    mine = clerk.get(f"/api/v1/cases/{wj['id']}").json()
    assert mine["bundle_cases"][0]["may_read"] is False and mine["bundle_cases"][0]["item_name"] == yb["item_name"]
    assert clerk.get(f"/api/v1/cases/{yb['id']}").status_code == 403
    clerk_page, _ = log_in(http, system.central_url, "weijian")
    shown = clerk_page.get(f"/cases/{wj['id']}").text
    assert yb["item_name"] in shown and f"/cases/{yb['id']}" not in shown
    boss_page, _ = log_in(http, system.central_url, "boss")
    assert f'href="/cases/{yb["id"]}"' in boss_page.get(f"/cases/{wj['id']}").text


def test_a_bad_field_in_the_second_item_is_named_and_nothing_is_stored(system, v1):
    body = sitting()
    body["items"][1]["fields"]["insured_category"] = "martian"
    body["items"][1]["fields"]["insured_count"] = "many"
    r = v1["api"].post("/api/v1/applications", json=body)
    assert r.status_code == 422, r.text
    details = r.json()["details"]
    assert set(details) == {"items[1].fields.insured_category", "items[1].fields.insured_count"}
    assert r.json()["error"] == "invalid" and r.json()["message"]
    missing = v1["api"].post("/api/v1/applications", json=sitting(materials=["id_card", "household_register"]))
    assert missing.status_code == 422
    assert list(missing.json()["details"]) == ["items[0].materials"]
    assert "结婚证" in missing.json()["details"]["items[0].materials"]          # what is missing, by name
    assert rows(v1["settings"], "SELECT count(*) FROM applications") == [(0,)]
    assert rows(v1["settings"], "SELECT count(*) FROM _sync_events WHERE stream LIKE 'up/%'") == [(0,)]
    # No receipt number was used: the next sitting starts at 00001.
    ok = v1["api"].post("/api/v1/applications", json=sitting())
    assert [a["receipt_no"][-5:] for a in ok.json()["applications"]] == ["00001", "00002"]


def test_an_idempotent_retry_makes_no_second_sitting(system, v1):
    key = {"idempotency-key": "sitting-2026-0001"}
    first = v1["api"].post("/api/v1/applications", json=sitting(), headers=key)
    again = v1["api"].post("/api/v1/applications", json=sitting(), headers=key)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json() and again.headers.get("idempotent-replayed") == "true"
    other = v1["api"].post("/api/v1/applications", json=sitting(reason="x"), headers=key)
    assert other.status_code == 422 and other.json()["error"] == "idempotency_key_reused"
    assert rows(v1["settings"], "SELECT count(*) FROM applications") == [(2,)]
    assert v1["api"].post("/api/v1/sync").status_code == 200
    assert stored(system)[1] == 2


def hidden(page: str, name: str) -> str:
    return page.split(f'name="{name}" value="')[1].split('"')[0]


def test_the_bundle_form_asks_everything_once_and_prints_one_receipt(system, v1, http):
    listed = v1["api"].get("/api/v1/catalog").json()["bundles"]
    assert [(b["code"], b["items"]) for b in listed] == [("YJS-001", ["WJ-001", "YB-001"]),
                                                         ("YJS-002", ["CL-001", "MZ-005"])]
    assert [b["code"] for b in v1["api"].get("/api/v1/catalog", params={"q": "出生"}).json()["bundles"]] == ["YJS-001"]
    page, home = log_in(http, v1["url"], "agent")
    assert "/bundle/YJS-001" in home.text and "/bundle/YJS-002" in home.text
    assert "/bundle/YJS-002" in page.get("/search", params={"q": "残疾人"}).text
    form = page.get("/bundle/YJS-001")
    assert form.status_code == 200
    # one picker for a material both items need: its files input and its camera input (templates/_forms.html)
    assert form.text.count('name="scan_id_card"') == 2 and form.text.count('name="scan_id_card" accept="image/*" capture') == 1
    assert form.text.count('value="household_register"') == 1
    assert form.text.count('name="f_child_order"') == 1 and 'name="f_insured_category"' in form.text
    data = {"csrf": hidden(form.text, "csrf"), "submit_token": hidden(form.text, "submit_token"),
            "name": "王芳", "id_number": ID, "phone": "", "address": "",
            **{f"f_{k}": str(v) for fields in FIELDS.values() for k, v in fields.items()}}
    # A material one item requires is missing: the page lists it per item and nothing is stored.
    short = page.post("/bundle/YJS-001", data={**data, "decision": "accept", "materials": ["id_card",
                                                                                           "household_register"]})
    assert short.status_code == 422 and "结婚证" in short.text and 'id="missing-per-item"' in short.text
    assert rows(v1["settings"], "SELECT count(*) FROM applications") == [(0,)]
    sent = page.post("/bundle/YJS-001", data={**data, "decision": "accept", "materials": BIRTH},
                     files={"scan_id_card": ("身份证.jpg", jpeg(), "image/jpeg")}, follow_redirects=False)
    assert sent.status_code == 303, sent.text
    twice = page.post("/bundle/YJS-001", data={**data, "decision": "accept", "materials": BIRTH},
                      follow_redirects=False)                                    # the double click
    assert twice.headers["location"] == sent.headers["location"]
    receipt = page.get(sent.headers["location"])
    numbers = [r[0] for r in rows(v1["settings"], "SELECT receipt_no FROM applications ORDER BY receipt_no")]
    assert len(numbers) == 2 and all(n in receipt.text for n in numbers)
    assert rows(v1["settings"], "SELECT count(DISTINCT sha256), count(*) FROM scans") == [(1, 2)]
    page.get("/lang/en")
    english = page.get("/bundle/YJS-001").text
    assert "Birth of a child: one sitting" in english and "Accept all items and print the receipt" in english
    printed = page.get(sent.headers["location"]).text      # a citizen's paper: Chinese whatever the session's language
    assert "受理回执" in printed and "Acceptance receipt" not in printed


def test_one_correction_notice_for_the_sitting_and_a_completed_case_stays_linked(system, v1, http):
    r = v1["api"].post("/api/v1/applications", json=sitting(decision="correction",
                                                           materials=["id_card", "household_register"]))
    assert r.status_code == 201, r.text
    wj, yb = r.json()["applications"]
    assert wj["status"] == yb["status"] == "correction_notice"
    assert wj["missing"] == ["marriage_cert"] and yb["missing"] == []
    page, _ = log_in(http, v1["url"], "agent")
    notice = page.get(r.json()["receipt_url"]).text
    assert "结婚证" in notice and wj["receipt_no"] in notice and yb["receipt_no"] in notice
    refused = v1["api"].post("/api/v1/applications", json=sitting(decision="refuse"))
    assert refused.status_code == 422 and "decision" in refused.json()["details"]
    # The citizen comes back with the marriage certificate: the case is completed, still in its sitting.
    form = page.get(f"/applications/{wj['id']}/complete").text
    done = page.post(f"/applications/{wj['id']}/complete", follow_redirects=False, data={
        "csrf": hidden(form, "csrf"), "submit_token": hidden(form, "submit_token"), "decision": "accept",
        "name": "王芳", "id_number": ID, "materials": BIRTH,
        **{f"f_{k}": str(v) for k, v in FIELDS["WJ-001"].items()}})
    assert done.status_code == 303, done.text
    again = v1["api"].get(f"/api/v1/applications/{wj['id']}").json()
    assert again["status"] == "accepted" and again["bundle_id"] == r.json()["bundle_id"]
    assert v1["api"].post("/api/v1/sync").status_code == 200
    case = http(system.central_url, system.central_token).get(f"/api/v1/cases/{wj['id']}").json()
    assert case["status"] == "received" and case["bundle_id"] == r.json()["bundle_id"]
    assert [o["id"] for o in case["bundle_cases"]] == [yb["id"]]


def test_the_county_refuses_a_bundle_of_unknown_items_and_a_station_offers_only_what_its_level_may_take(
        system, v1, http):
    c = County(Settings(data=system.data / "central"))
    try:
        bad = copy.deepcopy(CATALOG)
        bad["bundles"].append({**bad["bundles"][0], "code": "YJS-009", "items": ["WJ-001", "XX-999"]})
        with pytest.raises(CountyError) as refused:
            c.publish_catalog(bad)
        assert refused.value.code == "bad_bundle" and "XX-999" in str(refused.value.params)
        clash = copy.deepcopy(CATALOG)          # 医保 and 民政 both call a field subsidy_type, with other options
        clash["bundles"].append({**clash["bundles"][0], "code": "YJS-009", "items": ["YB-001", "MZ-005"]})
        with pytest.raises(CountyError) as refused:
            c.publish_catalog(clash)
        assert refused.value.code == "bad_bundle" and refused.value.params["field"] == "subsidy_type"
        wider = copy.deepcopy(CATALOG)          # 居住证 is taken at township and county stations only
        wider["bundles"].append({**wider["bundles"][0], "code": "YJS-003", "name": "新市民一件事",
                                 "items": ["GA-001", "RS-001"]})
        c.publish_catalog(wider)
    finally:
        c.store.close()
    t1 = system.stations["T1"]
    t1_api = http(t1["url"], t1["token"])
    for api in (v1["api"], t1_api):
        assert api.post("/api/v1/sync").status_code == 200
    v1_page, v1_home = log_in(http, v1["url"], "agent")
    _, t1_home = log_in(http, t1["url"], "agent")
    assert "/bundle/YJS-003" in t1_home.text and "/bundle/YJS-003" not in v1_home.text
    assert v1_page.get("/bundle/YJS-003").status_code == 404


def test_a_hostile_stations_inconsistent_sitting_is_just_separate_cases(system, http):
    import uuid

    from node.station import Station
    from tests.central.test_hostile_station import county_repairs, forge, good_body
    s = Station(system.stations["V1"]["settings"])
    s.store.user_by_token(system.stations["V1"]["token"])     # unlocks (node/vault.py)
    try:
        s.sync()
        a, b, c = (str(uuid.uuid4()) for _ in range(3))
        link = {"id": str(uuid.uuid4()), "code": "YJS-001", "cases": [a, b]}
        forge(s, "application.accepted", good_body(s, "WJ-001", id=a, bundle=link))
        stranger = {"name": "赵六", "id_number": valid_id_for_demo("41152619700101003"), "phone": "", "address": ""}
        forge(s, "application.accepted", good_body(s, "YB-001", id=b, bundle=link, applicant=stranger))
        bad = forge(s, "application.accepted", good_body(s, "YB-001", id=c, bundle={**link, "cases": [a, b]}))
        s.sync()
        assert s.sync_state()["up_waiting"] == 0                    # stored and acked all the same
    finally:
        s.store.close()
    county = http(system.central_url, system.central_token)
    first, second = (county.get(f"/api/v1/cases/{x}").json() for x in (a, b))
    assert first["status"] == second["status"] == "received"          # both stand on their own
    assert first["bundle_id"] == second["bundle_id"] == link["id"]
    assert first["bundle_cases"] == second["bundle_cases"] == []       # another applicant: not linked
    assert county.get(f"/api/v1/cases/{c}").status_code == 404
    assert county_repairs(system, "V1")[bad]["m"] == "The bundle does not list the case itself."
