"""The county's sync endpoint refuses bad envelopes with a clear 4xx and harms nothing stored."""

from __future__ import annotations

import json

import pytest

from central.county import County, Settings as CentralSettings
from crypto import envelope
from crypto.keys import Identity
from node.station import Station
from tests.conftest import stored
from sync import enrolment, exchange

ITEM = {"name": "赵大", "id_number": "11010519491231002X", "phone": "", "address": "村东头"}


@pytest.fixture
def v1(system):
    st = Station(system.stations["V1"]["settings"])
    st.store.user_by_token(system.stations["V1"]["token"])   # unlocks (node/vault.py)
    st.sync()
    item = st.items()[0]
    form = {**ITEM, "materials": [m["code"] for m in item["materials"]]}
    form.update({"f_" + f["name"]: (f.get("options") or [{"value": "1"}])[0]["value"] if f["type"] != "date" else "2026-01-01"
                 for f in item["fields"]})
    form["reason"] = "测试用"
    st.take(item["code"], form, "refuse", "测试")
    yield st
    st.store.close()


def push_blob(st: Station, **kw) -> bytes:
    with st.store.transaction() as db:
        return exchange.build_push(db, me=kw.get("me", st.me), station=kw.get("station", st.code),
                                   county=kw.get("county", st.county.keys), county_name=st.county.name).blob


def post(http, system, blob: bytes):
    return http(system.central_url).post("/sync/v1/exchange", content=blob,
                                         headers={"content-type": "application/octet-stream"})


def test_a_replayed_push_gets_the_same_ack_and_stores_nothing_twice(system, v1, http):
    blob = push_blob(v1)
    first = post(http, system, blob)
    assert first.status_code == 200
    after_first = stored(system)
    second = post(http, system, blob)
    assert second.status_code == 200 and stored(system) == after_first
    acks = [envelope.parse(r.content).header["ack"] for r in (first, second)]
    assert acks == [1, 1]


@pytest.mark.parametrize("case, status, code", [
    ("forged", 401, "bad_signature"),
    ("wrong_recipient", 421, "wrong_recipient"),
    ("unknown_station", 403, "unknown_station"),
    ("truncated", 400, "malformed_envelope"),
    ("garbage", 400, "malformed_envelope"),
    ("oversized", 413, "envelope_too_large"),
])
def test_bad_envelopes_are_refused_with_a_clear_4xx(system, v1, http, case, status, code):
    before = stored(system)
    if case == "forged":
        blob = push_blob(v1, me=Identity.generate())
    elif case == "wrong_recipient":
        blob = push_blob(v1, county=Identity.generate().public)
    elif case == "unknown_station":
        blob = push_blob(v1, station="X9")
    elif case == "truncated":
        blob = push_blob(v1)[:-10]
    elif case == "garbage":
        blob = b"GET / HTTP/1.1\r\n" * 10
    else:
        blob = b"LMSE" + b"\0" * (envelope.MAX_ENVELOPE + 1)
    r = post(http, system, blob)
    assert r.status_code == status
    assert r.json()["error"] == code and r.json()["message"]
    assert stored(system) == before


def test_a_compression_bomb_is_refused(system, v1, http):
    county = County(CentralSettings(data=system.data / "central"))
    bomb = envelope.seal({"events": [], "down_have": 0, "pad": "0" * (envelope.MAX_PAYLOAD + 1)}, sender=v1.me,
                         sender_name="V1", recipient=county.me.public, recipient_name=county.name, kind="push")
    county.store.close()
    assert len(bomb) < 1_000_000
    r = post(http, system, bomb)
    assert r.status_code == 413 and r.json()["error"] == "envelope_too_large"


def test_a_revoked_station_is_refused_and_says_so(system, v1, http):
    county = County(CentralSettings(data=system.data / "central"))
    county.revoke("V1")
    county.store.close()
    r = post(http, system, push_blob(v1))
    assert r.status_code == 403 and r.json()["error"] == "revoked_station"
    node = http(system.stations["V1"]["url"], system.stations["V1"]["token"])
    r = node.post("/api/v1/sync")
    assert r.status_code == 502 and r.json()["error"] == "revoked_station"
    assert node.get("/api/v1/status").json()["sync"]["up_waiting"] == 1     # kept, not dropped


def test_a_diverged_push_stores_nothing_and_the_station_is_told_to_heal(system, v1, http, tmp_path):
    assert post(http, system, push_blob(v1)).status_code == 200
    # The node is restored from a backup taken before its last event and writes a different one.
    with v1.store.transaction() as db:
        db.execute("DELETE FROM applications")
        db.execute("DELETE FROM _sync_events WHERE stream = 'up/V1'")
        db.execute("DELETE FROM _sync_cursors")
    item = v1.items()[1]
    form = {**ITEM, "reason": "另一件", "materials": []}
    v1.take(item["code"], form, "refuse", "测试")
    r = post(http, system, push_blob(v1))
    assert r.status_code == 200
    county = County(CentralSettings(data=system.data / "central"))
    try:
        cases = county.store.cases(station="V1")
        assert len(cases) == 1 and cases[0]["item_code"] != item["code"]       # the original stays
        # Not a fork for a person any more (PROTOCOL.md §8.2): the station heals from the county's
        # copy and re-sequences its own event (tests/sync/test_recovery.py).
        assert county.store.sync_problems() == []
        assert [(r["what"], r["first"]) for r in county.store.recoveries()] == [("up_diverged", 1)]
    finally:
        county.store.close()


def enrol_request(county_info: dict, station: str, otp: str, keys=None) -> dict:
    """The body a station posts to /enroll/v2: its keys and a MAC keyed by the code (never the code)."""
    keys = keys or Identity.generate().public
    mac = enrolment.request_mac(enrolment.mac_key(otp, station), station=station, station_keys=keys.to_dict(),
                                county_name=county_info["county_name"], county_keys=county_info["county_keys"])
    return {"station": station, "keys": keys.to_dict(), "mac": mac}


def test_enrolment_codes_are_single_use(system, http, tmp_path):
    county = County(CentralSettings(data=system.data / "central"))
    otp = county.add_station("V2", "二号站", "village")
    county.store.close()
    c = http(system.central_url)
    info = c.get("/enroll/v2/county").json()
    body = enrol_request(info, "V2", otp)
    wrong = enrol_request(info, "V2", "0000-0000-0000-0000")
    r = c.post("/enroll/v2", json=wrong)
    assert r.status_code == 403 and r.json()["error"] == "bad_mac"
    answer = c.post("/enroll/v2", json=body)
    assert answer.status_code == 200
    assert answer.json()["mac"] == enrolment.answer_mac(
        enrolment.mac_key(otp, "V2"), station="V2", station_keys=body["keys"], county_name=info["county_name"],
        county_keys=info["county_keys"], station_name="二号站", station_level="village")
    again = c.post("/enroll/v2", json=enrol_request(info, "V2", otp))
    assert again.status_code == 403 and again.json()["error"] == "not_pending"
    assert c.post("/enroll/v2", content=b"{]").status_code == 400
    assert json.loads(c.post("/enroll/v2", json={"station": "V2"}).text)["error"] == "bad_request"
    assert c.post("/enroll/v1", json=body).status_code in (404, 405)          # the clear-code version is gone


def test_an_expired_enrolment_code_is_refused(system, http):
    county = County(CentralSettings(data=system.data / "central"))
    otp = county.add_station("V3", "三号站", "village")
    with county.store.transaction() as db:
        county.store.update_station(db, "V3", enroll_expires="2020-01-01T00:00:00+00:00")
    county.store.close()
    c = http(system.central_url)
    r = c.post("/enroll/v2", json=enrol_request(c.get("/enroll/v2/county").json(), "V3", otp))
    assert r.status_code == 403 and r.json()["error"] == "expired"


def test_wrong_proofs_slow_their_sender_down_and_never_void_the_code(system, http, monkeypatch):
    import time

    from central.http import pages as county_views
    # The throttle's own clock, held still: on a loaded machine one scrypt can outlast the first
    # one-second wait, and the test must judge what the throttle decided, not the machine's speed.
    now = [time.time()]
    monkeypatch.setattr(county_views.ENROL_THROTTLE, "clock", lambda: now[0])
    county = County(CentralSettings(data=system.data / "central"))
    otp = county.add_station("V4", "四号站", "village")
    county.store.close()
    c = http(system.central_url)
    c.headers["x-forwarded-for"] = "10.6.6.6"          # the attacker's computer, through a trusted proxy
    info = c.get("/enroll/v2/county").json()
    answers = [c.post("/enroll/v2", json=enrol_request(info, "V4", f"0000-0000-0000-000{i}")) for i in range(8)]
    assert [a.json()["error"] for a in answers] == ["bad_mac"] * 5 + ["slow_down"] * 3
    assert answers[-1].status_code == 429 and 1 <= int(answers[-1].headers["retry-after"]) <= 60
    # Once the wait is over, the next guess is checked again (slowed, not locked out), then waits longer.
    now[0] += int(answers[-1].headers["retry-after"]) + 0.1
    again = [c.post("/enroll/v2", json=enrol_request(info, "V4", f"0000-0000-0000-00{i}9")) for i in range(2)]
    assert [a.json()["error"] for a in again] == ["bad_mac", "slow_down"]
    assert int(again[1].headers["retry-after"]) >= int(answers[-1].headers["retry-after"])
    # The right code from the installer's own address gets in at once: the code is not void.
    assert http(system.central_url).post("/enroll/v2", json=enrol_request(info, "V4", otp)).status_code == 200


def test_malformed_enrolment_bodies_get_400(system, http):
    c = http(system.central_url)
    for body in ({"station": "V9", "mac": "0" * 64, "keys": "a string"},
                 {"station": "V9", "mac": "0" * 64, "keys": {"sign": "+/==", "enc": "AAAA"}},
                 {"station": "V9", "mac": "not hex", "keys": Identity.generate().public.to_dict()},
                 {"station": "V9", "code": "1A2B-3C4D-5E6F-7A8B", "keys": Identity.generate().public.to_dict()},
                 ["a list"]):
        r = c.post("/enroll/v2", json=body)
        assert r.status_code == 400 and r.json()["error"] == "bad_request" and r.json()["message"]
    r = c.post("/enroll/v2", content=b"[" * 5000 + b"]" * 5000)
    assert r.status_code == 400 and r.json()["error"] == "bad_request"


@pytest.mark.real_kdf          # the vector is of the real scrypt parameters
def test_the_enrolment_test_vector_in_the_protocol_is_what_the_code_computes():
    from pathlib import Path
    doc = (Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")
    block = doc.split("code           1a2b-3c4d-5e6f-7a8b")[1].split("```")[0]
    field = {line[:15].strip(): line[15:].split() for line in block.splitlines() if line.strip()}
    sk = {"sign": field["station_keys"][1], "enc": field["station_keys"][3]}
    ck = {"sign": field["county_keys"][1], "enc": field["county_keys"][3]}
    key = enrolment.mac_key("1a2b-3c4d-5e6f-7a8b", "V001")
    assert key.hex() == field["K"][0]
    assert enrolment.request_mac(key, station="V001", station_keys=sk, county_name="county",
                                 county_keys=ck) == field["request MAC"][0]
    assert enrolment.answer_mac(key, station="V001", station_keys=sk, county_name="county", county_keys=ck,
                                station_name=field["station_name"][0],
                                station_level=field["station_level"][0]) == field["answer MAC"][0]
