"""A typed code entered at another station (issue 14): a typed code carries no signature, so T1 asks
the county (its answer signed for T1's nonce), names the document's kind and V1 by its name, and with
the county out of reach says it cannot confirm the code here: never "not verified" for a genuine one.
Real county and stations on loopback."""

from __future__ import annotations

import re

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from node.store import Store as NodeStore
from tests.conftest import serve
from tests.e2e.stoppable import stoppable_system
from tests.life.test_case_life import APPLICANT, ITEM, accept, fields, sync


@pytest.fixture
def stoppable(tmp_path):
    with stoppable_system(tmp_path) as pair:
        yield pair


def verdict(http, url: str, code: str) -> str:
    r = http(url).get("/verify", params={"code": code})
    assert r.status_code == 200
    return r.text.split('id="verdict"')[1]


def test_a_typed_code_of_v1_at_t1_is_confirmed_by_the_county_and_never_refused_when_it_cannot_be(stoppable, http):
    system, stop_county = stoppable
    v1, t1 = system.stations["V1"], system.stations["T1"]
    node, other = http(v1["url"], v1["token"]), http(t1["url"], t1["token"])
    sync(node)
    sync(other)
    receipt = accept(node)
    sync(node)
    code = receipt["verify_code"]

    shown = verdict(http, t1["url"], code)
    assert "✓" in shown and "未通过" not in shown and "县" in shown.split('id="reason"')[1].split("</p>")[0]
    assert re.search(r'id="kind">\s*受理回执\s*<', shown)
    assert re.search(r'id="station">\s*V1站\s*<', shown) and "V1 (V1)" not in shown and "V1站 (V1)" not in shown
    assert receipt["receipt_no"] in shown
    key_id = node.post("/api/v1/verify", json={"code": code}).json()["key_id"]
    details = shown.split("<details")[1].split("</details>")[0]
    assert key_id in details and shown.count(key_id) == 1                  # the hex key id only in the fold
    api = other.post("/api/v1/verify", json={"code": code}).json()
    assert api["valid"] is True and api["station_name"] == "V1站" and api["kind"] == "application.accepted"

    # a made-up code, and a code changed by one character: refused (the county holds neither)
    wrong = code[:-1] + ("0" if code[-1] != "0" else "1")
    for fake in ("ABCD-EFGH-JKMN", wrong):
        shown = verdict(http, t1["url"], fake)
        assert "✗" in shown and "未通过核验" in shown and "✓" not in shown

    # the county stops: T1 cannot confirm the code here, and says what to do; never "not verified"
    stop_county()
    shown = verdict(http, t1["url"], code)
    assert "未通过" not in shown and "✓" not in shown and "✗" not in shown
    assert "无法在此确认" in shown and "二维码" in shown and "出具" in shown
    api = other.post("/api/v1/verify", json={"code": code}).json()
    assert api["valid"] is False and api["undetermined"] is True
    # V1 still confirms its own, offline
    assert "✓" in verdict(http, v1["url"], code)


def test_an_answer_not_signed_by_the_county_never_makes_a_code_genuine(system, http):
    """Whatever answers at the county's address must sign for T1's nonce with the county's key."""
    v1, t1 = system.stations["V1"], system.stations["T1"]
    node, other = http(v1["url"], v1["token"]), http(t1["url"], t1["token"])
    sync(node)
    sync(other)

    async def lying(request):
        body = await request.json()
        return JSONResponse({"valid": True, "reason": "真的", "station": "V1", "station_name": "V1站",
                             "receipt_no": "V1-20260101-00001", "item": "临时救助申请", "issued_at": None,
                             "key_id": "00", "state": None, "kind": "application.accepted",
                             "verify_code": body["code"], "replaced_by": None, "undetermined": False},
                            headers={"lastmile-signature": "A" * 86})
    impostor = Starlette(routes=[Route("/api/v1/verify", lying, methods=["POST"])])
    with serve(impostor) as fake_url:
        store = NodeStore(t1["settings"].db_path)
        with store.transaction() as db:
            store.set_meta(db, "county_url", fake_url)
        store.close()
        other.post("/api/v1/sync")          # T1 notices the new address (and cannot sync with it)
        shown = verdict(http, t1["url"], "ABCD-EFGH-JKMN")
    assert "✓" not in shown and "V1-20260101-00001" not in shown and "无法在此确认" in shown


def test_a_replaced_notice_names_its_replacement_at_its_station_and_elsewhere(system, http):
    v1, t1 = system.stations["V1"], system.stations["T1"]
    node = http(v1["url"], v1["token"])
    sync(node)
    sync(http(t1["url"], t1["token"]))
    notice = node.post("/api/v1/applications", json={"item": ITEM["code"], "decision": "correction",
                                                     "applicant": APPLICANT, "fields": fields(), "materials": []}).json()
    done = node.post(f"/api/v1/applications/{notice['id']}/complete", json={
        "decision": "accept", "applicant": APPLICANT, "fields": fields(),
        "materials": [m["code"] for m in ITEM["materials"] if m.get("required")]}).json()
    assert done["receipt_no"] != notice["receipt_no"]
    sync(node)
    for url in (v1["url"], t1["url"], system.central_url):
        shown = verdict(http, url, notice["verify_code"])
        assert "✓" in shown and re.search(r'id="kind">\s*一次性告知书\s*<', shown)
        replaced = shown.split('id="replaced"')[1].split("</p>")[0]
        assert done["receipt_no"] in replaced and "受理回执" in replaced and "已被" in replaced
    assert 'id="replaced"' not in verdict(http, t1["url"], done["verify_code"])      # the latest is not replaced
    # a scanned QR text of the old notice says so too
    assert 'id="replaced"' in verdict(http, v1["url"], notice["qr_text"])
