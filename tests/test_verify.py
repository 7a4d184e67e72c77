"""Any document can be verified anywhere, even offline (issue 8): the QR text, the typed code, the
key directory sent down to every station; page, API and CLI, through real servers."""

from __future__ import annotations

import re
import time

import pytest
import segno
from hypothesis import given, settings, strategies as st

from central.county import County, Settings as CentralSettings
from deploy.cli import main as cli
from node.store import TOKEN_ENV
from sync import codes, verify
from templates import qr_svg
from tests.e2e.test_walking_skeleton import full_application


def _issue(node):
    node.post("/api/v1/sync")
    item = next(i for i in node.get("/api/v1/catalog").json()["items"] if i["code"].startswith("MZ"))
    r = node.post("/api/v1/applications", json=full_application(item))
    assert r.status_code == 201, r.text
    return r.json(), item


def _api_verify(client, code):
    r = client.post("/api/v1/verify", json={"code": code})
    assert r.status_code == 200, r.text
    return r.json()


def _cli(capsys, code, data, token=None):
    """``lastmile verify``; at a station with the API token that unlocks it (node/vault.py)."""
    with pytest.MonkeyPatch.context() as env:
        if token:
            env.setenv(TOKEN_ENV, token)
        rc = cli(["verify", code, "--data", str(data), "--lang", "en"])
    return rc, capsys.readouterr().out


def test_receipt_verifies_at_its_station_the_county_and_another_station(system, http, capsys):
    v1, t1 = system.stations["V1"], system.stations["T1"]
    node, other = http(v1["url"], v1["token"]), http(t1["url"], t1["token"])
    app, item = _issue(node)
    qr, code = app["qr_text"], app["verify_code"]

    # The QR text reads as a sentence on a phone, then the signed token on its own line.
    lines = qr.split("\n")
    assert lines[0] == f"受理回执 {app['receipt_no']}"
    assert "V1站（V1）" in lines[1] and item["name"] in lines[1]
    assert lines[2] == f"核验码 {code}" and re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){2}", code)
    assert lines[3].startswith("LM2:") and len(qr.encode()) < 330
    # The printed document carries exactly that text in its QR code (segno is deterministic) and the code.
    page = http(v1["url"], follow_redirects=True)
    from tests.conftest import log_in
    login, _ = log_in(http, v1["url"], "agent")
    doc = login.get(f"/applications/{app['id']}/document").text
    assert qr_svg(qr) in doc and code in doc
    assert segno.make(qr, error="m").version <= 13

    # At V1 (page without login, API, CLI): genuine, and what it says.
    got = _api_verify(page, qr)
    assert got["valid"] is True and got["station"] == "V1" and got["receipt_no"] == app["receipt_no"]
    assert got["item"] == item["name"] and got["state"] == "accepted" and got["issued_at"].endswith("Z")
    assert got["key_id"] and got["verify_code"] == code
    shown = page.get("/verify", params={"code": qr}).text
    assert "真实有效" in shown and app["receipt_no"] in shown
    assert "李*" in shown and "李秀英" not in shown          # only the masked name, as the paper prints
    rc, out = _cli(capsys, qr, v1["settings"].data, v1["token"])
    assert rc == 0 and app["receipt_no"] in out

    # The typed code works at V1 (and below at the county).
    typed = _api_verify(page, code.lower().replace("-", " "))
    assert typed["valid"] is True and typed["receipt_no"] == app["receipt_no"]

    # At the county, once the station synced: QR and typed code, page, API, CLI; the case API names them.
    node.post("/api/v1/sync")
    county = http(system.central_url)
    for text in (qr, code):
        got = _api_verify(county, text)
        assert got["valid"] is True and got["receipt_no"] == app["receipt_no"] and got["state"] == "received"
    assert app["receipt_no"] in county.get("/verify", params={"code": code}).text
    rc, out = _cli(capsys, code, system.data / "central")
    assert rc == 0 and app["receipt_no"] in out
    case = http(system.central_url, system.central_token).get(f"/api/v1/cases/{app['id']}").json()
    assert case["verify_code"] == code

    # At T1, offline from V1's log, with the directory the county sent down: the QR verifies;
    # the typed code T1 cannot check itself (it holds no copy of the case): it asks the county
    # (tests/test_verify_elsewhere.py: and when the county cannot be asked).
    other.post("/api/v1/sync")
    got = _api_verify(other, qr)
    assert got["valid"] is True and got["station"] == "V1" and got["item"] == item["name"] and got["state"] is None
    assert "V1" in http(t1["url"]).get("/verify", params={"code": qr}).text
    rc, out = _cli(capsys, qr, t1["settings"].data, t1["token"])
    assert rc == 0
    typed = _api_verify(other, code)
    assert typed["valid"] is True and typed["station_name"] == "V1站" and typed["receipt_no"] == app["receipt_no"]


def test_altered_forged_and_made_up_documents_are_refused(system, http, capsys):
    v1 = system.stations["V1"]
    node = http(v1["url"], v1["token"])
    app, _ = _issue(node)
    qr = app["qr_text"]
    public = http(v1["url"])

    # A digit of the receipt number changed in the readable part the token covers.
    no = app["receipt_no"]
    altered = qr.replace(no, no[:-1] + ("2" if no[-1] != "2" else "3"), 1)
    got = _api_verify(public, altered)
    assert got["valid"] is False and got["reason"] == "印制的文字与签名的核验码不符：文书已被篡改。"
    # One character of the token changed.
    head, token = qr.rsplit("LM2:", 1)
    i = len(token) // 2
    forged = head + "LM2:" + token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:]
    got = public.post("/api/v1/verify", json={"code": forged}, headers={"accept-language": "en"}).json()
    assert got["valid"] is False and got["reason"]
    rc, out = _cli(capsys, forged, v1["settings"].data, v1["token"])
    assert rc == 1 and out.startswith("✗")
    # A made-up code: not found, in words.
    got = _api_verify(public, "7KQ2-9MZD-41TX")
    assert got["valid"] is False and got["receipt_no"] is None and "没有该核验码" in got["reason"]
    assert "✗" in public.get("/verify", params={"code": "7KQ2-9MZD-41TX"}).text
    # Bad requests: a JSON error, nothing else.
    bad = public.post("/api/v1/verify", json={"text": 1})
    assert bad.status_code == 422 and set(bad.json()) == {"error", "message", "details"}
    assert public.post("/api/v1/verify", content=b"[").status_code == 400


def test_document_signed_after_revocation_is_refused_at_another_station(system, http):
    v1, t1 = system.stations["V1"], system.stations["T1"]
    node, other = http(v1["url"], v1["token"]), http(t1["url"], t1["token"])
    before, _ = _issue(node)
    time.sleep(1.1)                     # the token dates a document to the second
    county = County(CentralSettings(data=system.data / "central"))
    county.revoke("V1")
    county.store.close()
    time.sleep(1.1)
    after, _ = _issue(node)            # V1 works offline and does not know yet
    other.post("/api/v1/sync")          # T1 gets the directory with V1's revoked key
    got = _api_verify(other, after["qr_text"])
    assert got["valid"] is False and "吊销" in got["reason"]
    # Signed before the revocation: the signature holds, but a thief could date a paper so; only the
    # county confirms it (PROTOCOL.md §11; tests/test_verify_attacks.py for the county's side).
    got = _api_verify(other, before["qr_text"])
    assert got["valid"] is False and got["pending"] is True and got["reason"].startswith("签名有效，尚待县中心确认")
    assert _api_verify(http(system.central_url), after["qr_text"])["valid"] is False


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | st.text(max_size=300).map(lambda s: "LM2:" + s)
       | st.binary(max_size=200).map(lambda b: "LM2:" + __import__("base64").urlsafe_b64encode(b).decode().rstrip("=")))
def test_any_string_is_a_clear_refusal_never_a_crash(text):
    try:
        verify.parse(text)
    except verify.VerifyError as exc:
        assert exc.message
    result = verify.lookup(text, {}, by_hash=lambda s, h: None, by_code=lambda c: None)
    assert result["valid"] is False and result["reason"]


def _doc(me, at="2026-11-29T02:03:04.567Z"):
    return verify.make(sign=me.sign, key_id=me.public.sign_id, station="V1", station_name="V1站",
                       kind="application.refused", at=at, event_hash="ab" * 32, receipt_no="V1-20261129-00007",
                       item_code="MZ-001", item_name="临时救助申请")


def _entry(me, **key):
    return {"V1": {"code": "V1", "name": "V1站", "keys": [{"sign_id": me.public.sign_id, "sign_key": me.public.sign,
                                                         "valid_from": "2026-01-01T00:00:00.000Z", "valid_until": None,
                                                         "revoked_at": None, **key}]}}


def test_a_document_dated_after_its_key_was_retired_is_refused_and_a_bare_token_still_checks():
    from crypto.keys import Identity
    me = Identity.generate()
    text = _doc(me)
    assert text.split("\n")[0] == "不予受理决定书 V1-20261129-00007"
    _, token, _ = verify.check(text, _entry(me))
    assert token.date == "2026-11-29" and token.issued_at == "2026-11-29T02:03:04Z"
    assert verify.check("LM2:" + text.rsplit("LM2:", 1)[1], _entry(me))[0] is None     # only the token line
    try:
        verify.check(text, _entry(me, valid_until="2026-11-29T02:00:00.000Z"))
        raise AssertionError("a document signed after its key was retired verified")
    except verify.VerifyError as exc:
        assert exc.message.startswith("This document is dated after its key was retired")
    try:
        verify.check(text, _entry(Identity.generate()))
        raise AssertionError("a document signed by another key verified")
    except verify.VerifyError as exc:
        assert "not a key of station" in exc.message


def test_a_malformed_directory_is_refused_by_the_shared_spec():
    from crypto.keys import Identity
    from sync.law import facts
    me = Identity.generate()
    good = {"stations": [{**_entry(me)["V1"]}], "at": "2026-11-29T00:00:00.000Z"}
    assert set(facts.SPECS[facts.STATIONS_DIRECTORY].validate(good)) == {"V1"}
    wrong_id = {"stations": [{**_entry(me)["V1"], "keys": [{**_entry(me)["V1"]["keys"][0], "sign_id": "0" * 16}]}],
                "at": "2026-11-29T00:00:00.000Z"}
    for bad in ({"stations": []}, {"stations": [{"code": "V1"}], "at": "x"}, wrong_id, [], None):
        try:
            facts.SPECS[facts.STATIONS_DIRECTORY].validate(bad)
            raise AssertionError(f"accepted {bad!r}")
        except facts.RuleError as exc:
            assert exc.message == "The directory of station keys is malformed."


def test_the_protocol_test_vector_verifies_by_the_documented_bytes():
    import base64
    import hashlib
    from pathlib import Path

    from crypto.keys import key_id, unb64, verify as ed25519_verify
    doc = (Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")
    sec = doc[doc.index("## 11. Document verification"):]
    qr = re.search(r"```\n(.*?)\n```", sec, re.S).group(1)
    sign_key = re.search(r"sign key `([A-Za-z0-9_-]{43})`", sec).group(1)
    event_hash = re.search(r"`hash`\s+`([0-9a-f]{64})`", sec).group(1)
    readable, token = qr.rsplit("\nLM2:", 1)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    signed, sig = raw[:-64], raw[-64:]
    ed25519_verify(sign_key, sig, b"lastmile-doc/1|" + signed)                      # by hand, as §11 says
    assert signed[0] == 1 and signed[1] == 1 and signed[6:14].hex() == key_id(unb64(sign_key))
    assert int.from_bytes(signed[2:6], "big") == 1795917784 and signed[14:30] == bytes.fromhex(event_hash[:32])
    assert signed[30:46] == hashlib.sha256(readable.encode()).digest()[:16]
    assert signed[46:] == b"\x02V1" + b"\x11V1-20261129-00001" + b"\x06MZ-001"
    assert readable.split("\n")[2] == "核验码 " + codes.code_of(event_hash)
    directory = {"V1": {"name": "V1站", "keys": [{"sign_id": key_id(unb64(sign_key)), "sign_key": sign_key,
                                                  "valid_from": "", "valid_until": None, "revoked_at": None}]}}
    assert verify.check(qr, directory)[1].receipt_no == "V1-20261129-00001"


def test_after_the_upgrade_the_county_sends_the_directory_once_to_every_active_station(system):
    import sqlite3
    db = system.data / "central" / "central.db"

    def directories() -> dict[str, int]:
        conn = sqlite3.connect(db)
        try:
            return dict(conn.execute("SELECT stream, count(*) FROM _sync_events WHERE kind = 'stations.directory'"
                                     " GROUP BY stream").fetchall())
        finally:
            conn.close()
    before = directories()
    assert before == {"down/V1": 2, "down/T1": 1}      # V1 at its enrolment and T1's; T1 at its own
    County(CentralSettings(data=system.data / "central")).store.close()
    assert directories() == before                     # nothing changed: nothing sent
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("DELETE FROM meta WHERE name = 'stations_directory_hash'")   # as a county before the upgrade
    conn.close()
    County(CentralSettings(data=system.data / "central")).store.close()
    assert directories() == {"down/V1": 3, "down/T1": 2}
