"""The county gives the QR text the station printed (issue 8): each document event of a case is
followed up by ``document.qr``, signed in the station's log; the county checks it against the
station's key history and the event before it stores or serves it. Real servers on loopback, real
SQLite files; the hostile facts are signed with the station's real key and pushed by its real sync."""

from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any

import segno

from crypto.keys import Identity
from node.station import Station
from sync import inbox, log, verify
from tests.conftest import log_in
from tests.e2e.test_walking_skeleton import full_application


def _station(system, code: str) -> Station:
    s = system.stations[code]
    st = Station(s["settings"])
    st.store.user_by_token(s["token"])
    return st


def _item(node) -> dict[str, Any]:
    node.post("/api/v1/sync")
    return next(i for i in node.get("/api/v1/catalog").json()["items"] if i["code"].startswith("MZ"))


def _form(app: dict[str, Any]) -> dict[str, Any]:
    """The station's intake form of an API application body (full_application)."""
    return {**app["applicant"], **{"f_" + k: v for k, v in app["fields"].items()}, "materials": app["materials"],
            "reason": app.get("reason", "")}


def _verify(client, text: str) -> dict[str, Any]:
    r = client.post("/api/v1/verify", json={"code": text})
    assert r.status_code == 200, r.text
    return r.json()


def _county_case(http, system, case_id: str) -> dict[str, Any]:
    r = http(system.central_url, system.central_token).get(f"/api/v1/cases/{case_id}")
    assert r.status_code == 200, r.text
    return r.json()


def _repairs(system, station: str) -> dict[int, dict[str, Any]]:
    conn = sqlite3.connect(system.data / "central" / "central.db")
    try:
        return {r["seq"]: json.loads(r["reason"]) for r in inbox.repairs(conn, log.up(station))}
    finally:
        conn.close()


def test_the_county_gives_each_document_the_qr_text_the_station_printed(system, http):
    v1, t1 = system.stations["V1"], system.stations["T1"]
    node, other = http(v1["url"], v1["token"]), http(t1["url"], t1["token"])
    item = _item(node)

    # A case with two documents: the one-time correction notice, then the receipt once completed.
    r = node.post("/api/v1/applications", json={**full_application(item, "correction"), "materials": []})
    assert r.status_code == 201, r.text
    notice = r.json()
    assert notice["status"] == "correction_notice" and notice["qr_text"].startswith("一次性告知书 ")
    st = _station(system, "V1")
    try:
        done = st.take(item["code"], _form(full_application(item)), "accept", "代办员", case_id=notice["id"])
    finally:
        st.store.close()
    receipt = node.get(f"/api/v1/applications/{done['id']}").json()
    assert receipt["qr_text"].startswith("受理回执 ") and receipt["qr_text"] != notice["qr_text"]
    # A refusal: one more document, on another case.
    r = node.post("/api/v1/applications", json={**full_application(item, "refuse"), "reason": "不属于救助范围"})
    assert r.status_code == 201, r.text
    refusal = r.json()
    assert refusal["qr_text"].startswith("不予受理决定书 ")

    # Before the station syncs, the county holds nothing; after, each document with its QR text.
    assert node.post("/api/v1/sync").status_code == 200
    case = _county_case(http, system, notice["id"])
    docs = case["station_documents"]
    assert [d["kind"] for d in docs] == ["application.correction_notice", "application.accepted"]
    assert [d["qr_text"] for d in docs] == [notice["qr_text"], receipt["qr_text"]]       # byte for byte
    assert [d["verify_code"] for d in docs] == [notice["verify_code"], receipt["verify_code"]]
    assert [d["receipt_no"] for d in docs] == [notice["receipt_no"], receipt["receipt_no"]]
    assert case["qr_text"] == receipt["qr_text"] and case["verify_code"] == receipt["verify_code"]   # the latest
    refused = _county_case(http, system, refusal["id"])
    assert refused["qr_text"] == refusal["qr_text"] and len(refused["station_documents"]) == 1

    # The receipt the station prints carries exactly the county's text in its QR code.
    page, _ = log_in(http, v1["url"], "agent")
    printed = page.get(f"/applications/{done['id']}/document").text
    assert segno.make(case["qr_text"], error="m").svg_inline(scale=2) in printed

    # Each verifies at the county and, offline from V1's log, at T1 with the directory sent down.
    other.post("/api/v1/sync")
    county = http(system.central_url)
    for d, state in ((docs[0], "received"), (docs[1], "received"), (refused["station_documents"][0], "refused")):
        got = _verify(county, d["qr_text"])
        assert got["valid"] is True and got["receipt_no"] == d["receipt_no"] and got["state"] == state
        assert got["verify_code"] == d["verify_code"]
        got = _verify(other, d["qr_text"])
        assert got["valid"] is True and got["station"] == "V1" and got["state"] is None

    # The case's history lists the documents' own events, not their QR copies.
    kinds = [e["kind"] for e in case["history"]]
    assert "document.qr" not in kinds and kinds[:2] == ["application.correction_notice", "application.accepted"]


def _forge(st: Station, body: Any) -> int:
    """Sign a ``document.qr`` with the station's real key as its next upstream event, as a hostile node would."""
    with st.store.transaction() as db:
        return log.append(db, st.me, stream=log.up(st.code), author=st.code, kind=verify.DOCUMENT_QR, body=body).seq


def test_a_qr_text_that_does_not_verify_or_names_another_document_is_never_served(system, http, caplog):
    v1 = system.stations["V1"]
    node = http(v1["url"], v1["token"])
    item = _item(node)
    apps = []
    for _ in range(2):
        r = node.post("/api/v1/applications", json=full_application(item))
        assert r.status_code == 201, r.text
        apps.append(r.json())
    a, b = apps
    st = _station(system, "V1")
    try:
        with st.store.lock:
            ev_a = log.get(st.store.conn, log.up("V1"), int(st.store.application(a["id"])["seq"]))
            ev_b = log.get(st.store.conn, log.up("V1"), int(st.store.application(b["id"])["seq"]))
        assert ev_a is not None and ev_b is not None
        stranger = Identity.generate()
        by_stranger = verify.make(sign=stranger.sign, key_id=stranger.public.sign_id, station="V1",
                                  station_name="V1站", kind=ev_b.kind, at=ev_b.at, event_hash=ev_b.hash,
                                  receipt_no=b["receipt_no"], item_code=b["item_code"], item_name=b["item_name"])
        own_key_other_item = verify.make(sign=st.me.sign, key_id=st.me.public.sign_id, station="V1",
                                         station_name="V1站", kind=ev_b.kind, at=ev_b.at, event_hash=ev_b.hash,
                                         receipt_no=b["receipt_no"], item_code="MZ-999", item_name="伪造事项")
        forged = {
            # a's genuine QR text, said to be case b's
            _forge(st, {"id": b["id"], "event": ev_a.hash, "qr_text": a["qr_text"]}): "another case",
            # a's genuine QR text, naming b's event
            _forge(st, {"id": b["id"], "event": ev_b.hash, "qr_text": a["qr_text"]}): "does not match",
            # the readable part changed after signing
            _forge(st, {"id": b["id"], "event": ev_b.hash,
                        "qr_text": b["qr_text"].replace(b["receipt_no"], a["receipt_no"], 1)}): "does not verify",
            # signed by a key that is not V1's
            _forge(st, {"id": b["id"], "event": ev_b.hash, "qr_text": by_stranger}): "does not verify",
            # V1's own key, but another item than the signed application names
            _forge(st, {"id": b["id"], "event": ev_b.hash, "qr_text": own_key_other_item}): "does not match",
            # a document V1 never sent
            _forge(st, {"id": b["id"], "event": "ab" * 32, "qr_text": b["qr_text"]}): "does not hold",
        }
        malformed = _forge(st, {"id": b["id"], "event": ev_b.hash, "qr_text": "受理回执\nLM2:xyz"})
    finally:
        st.store.close()

    with caplog.at_level(logging.WARNING):
        assert node.post("/api/v1/sync").status_code == 200
    assert node.get("/api/v1/status").json()["sync"]["up_waiting"] == 0        # stored and acked all the same
    repairs = _repairs(system, "V1")
    for seq, why in forged.items():
        assert why in repairs[seq]["m"], (seq, repairs[seq])
    assert "not described as it must be" in repairs[malformed]["m"]
    assert any("document.qr of V1" in r.getMessage() for r in caplog.records)

    # The genuine QR texts (sent right behind each application) are served; nothing forged is.
    for app in (a, b):
        case = _county_case(http, system, app["id"])
        assert case["qr_text"] == app["qr_text"] and [d["qr_text"] for d in case["station_documents"]] == [app["qr_text"]]
        assert _verify(http(system.central_url), case["qr_text"])["valid"] is True


def test_an_older_station_s_documents_have_no_qr_text_at_the_county(system, http):
    """A station before ``document.qr`` sends only the document's event: the county gives its
    verification code and ``qr_text: null`` (it cannot sign), and the QR text still verifies there."""
    v1 = system.stations["V1"]
    node = http(v1["url"], v1["token"])
    item = _item(node)
    r = node.post("/api/v1/applications", json=full_application(item))
    assert r.status_code == 201, r.text
    app = r.json()
    st = _station(system, "V1")
    try:      # as an older station's log: the document's event alone
        with st.store.transaction() as db:
            seq = db.execute("SELECT max(seq) FROM _sync_events WHERE stream = ?", (log.up("V1"),)).fetchone()[0]
            assert db.execute("SELECT kind FROM _sync_events WHERE stream = ? AND seq = ?",
                              (log.up("V1"), seq)).fetchone()[0] == verify.DOCUMENT_QR
            db.execute("DELETE FROM _sync_events WHERE stream = ? AND seq = ?", (log.up("V1"), seq))
    finally:
        st.store.close()
    assert node.post("/api/v1/sync").status_code == 200
    case = _county_case(http, system, app["id"])
    assert case["qr_text"] is None and case["verify_code"] == app["verify_code"]
    assert case["station_documents"] == [{"kind": "application.accepted", "receipt_no": app["receipt_no"],
                                          "at": case["station_documents"][0]["at"], "seq": 1,
                                          "verify_code": app["verify_code"], "qr_text": None}]
    assert _verify(http(system.central_url), app["qr_text"])["valid"] is True
