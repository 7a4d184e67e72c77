"""The county shows what the station signed: a row edited in the database is flagged, never trusted."""

from __future__ import annotations

import sqlite3

from tests.conftest import log_in
from tests.sync.test_protocol_machine import form_for


def accepted_case(system, http) -> dict:
    """One application accepted at V1 and synced to the county; the county's case as JSON."""
    v1 = system.stations["V1"]
    node = http(v1["url"], v1["token"])
    assert node.post("/api/v1/sync").status_code == 200                    # the catalogue
    item = node.get("/api/v1/catalog").json()["items"][0]
    form = form_for(item, 7)
    r = node.post("/api/v1/applications", json={
        "item": item["code"], "decision": "accept", "applicant": {k: form[k] for k in ("name", "id_number")},
        "fields": {k[2:]: v for k, v in form.items() if k.startswith("f_")}, "materials": form["materials"]})
    assert r.status_code == 201, r.text
    assert node.post("/api/v1/sync").status_code == 200
    boss = http(system.central_url, system.central_token)
    case = boss.get(f"/api/v1/cases/{r.json()['id']}")
    assert case.status_code == 200, case.text
    return case.json()


def tamper(system, sql: str, params: tuple) -> None:
    """What someone with a shell on the county server could do: edit the database directly."""
    db = sqlite3.connect(system.data / "central" / "central.db")
    with db:
        assert db.execute(sql, params).rowcount == 1
    db.close()


def test_an_untouched_case_shows_no_mismatch(system, http):
    case = accepted_case(system, http)
    assert case["signature"] == "valid"
    assert case["record_matches_signature"] is True and case["record_mismatches"] == []
    page, _ = log_in(http, system.central_url, case["department"])
    html = page.get(f"/cases/{case['id']}").text
    assert "电子签名验证通过" in html and 'id="record-mismatch"' not in html


def test_a_row_edited_in_the_database_is_flagged_and_the_signed_values_shown(system, http):
    case = accepted_case(system, http)
    signed_name, signed_id = case["applicant_name"], case["id_number"]
    tamper(system, "UPDATE cases SET applicant_name = ?, id_number = ? WHERE id = ?",
           ("李四", "11010519491231002X", case["id"]))

    boss = http(system.central_url, system.central_token)
    got = boss.get(f"/api/v1/cases/{case['id']}").json()
    assert got["applicant_name"] == signed_name and got["id_number"] == signed_id     # the signed values
    assert got["record_matches_signature"] is False
    assert {(m["field"], m["stored"], m["signed"]) for m in got["record_mismatches"]} == {
        ("applicant_name", "李四", signed_name), ("id_number", "11010519491231002X", signed_id)}
    listed = next(c for c in boss.get("/api/v1/cases", params={"status": ""}).json()["cases"]
                  if c["id"] == case["id"])
    assert listed["applicant_name"] == signed_name and not listed["record_matches_signature"]

    page, _ = log_in(http, system.central_url, case["department"])
    html = page.get(f"/cases/{case['id']}").text
    flagged = html.split('id="record-mismatch"')[1].split("</div>")[0]
    assert "数据库记录与服务站签名的内容不符" in flagged
    assert "李四" in flagged and signed_name in flagged and "11010519491231002X" in flagged
    applicant = html.split("<dt>申请人</dt><dd>")[1].split("</dd>")[0]
    assert signed_name in applicant and signed_id in applicant and "李四" not in applicant


def test_a_scan_list_edited_in_the_database_is_flagged(system, http):
    import base64
    import io

    from PIL import Image
    v1 = system.stations["V1"]
    node = http(v1["url"], v1["token"])
    assert node.post("/api/v1/sync").status_code == 200
    item = node.get("/api/v1/catalog").json()["items"][0]
    form = form_for(item, 8)
    out = io.BytesIO()
    Image.new("RGB", (200, 100), "white").save(out, "JPEG")
    r = node.post("/api/v1/applications", json={
        "item": item["code"], "decision": "accept", "applicant": {k: form[k] for k in ("name", "id_number")},
        "fields": {k[2:]: v for k, v in form.items() if k.startswith("f_")}, "materials": form["materials"],
        "scans": [{"material": item["materials"][0]["code"], "name": "身份证.jpg",
                   "data_base64": base64.b64encode(out.getvalue()).decode()}]})
    assert r.status_code == 201, r.text
    assert node.post("/api/v1/sync").status_code == 200
    tamper(system, "UPDATE scans SET name = ? WHERE case_id = ?", ("换掉的.jpg", r.json()["id"]))
    got = http(system.central_url, system.central_token).get(f"/api/v1/cases/{r.json()['id']}").json()
    assert [m["field"] for m in got["record_mismatches"]] == ["scans"]
    assert got["record_mismatches"][0]["signed"][0]["name"] == "身份证.jpg"
