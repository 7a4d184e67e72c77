"""The county gives the QR text the station printed (issue 8): each push carries, beside its events,
the QR text the station prints for each document event in it (``qr_texts``, PROTOCOL.md §6); the
county checks each against the station's key history and the event before it keeps or serves it.
Real servers on loopback, real SQLite files; the hostile entries are pushes a station builds
itself with its real keys (``exchange.build_push`` with its own ``qr_texts``), sent to the county
over HTTP."""

from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any, Callable

import httpx

from crypto.keys import Identity
from node.services import verify as doc_verify
from node.station import Station
from sync import client, exchange, inbox, log, verify
from templates import qr_svg
from tests.central.test_hostile_station import forge, good_body
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


def _verify(client_, text: str) -> dict[str, Any]:
    r = client_.post("/api/v1/verify", json={"code": text})
    assert r.status_code == 200, r.text
    return r.json()


def _county_case(http, system, case_id: str) -> dict[str, Any]:
    r = http(system.central_url, system.central_token).get(f"/api/v1/cases/{case_id}")
    assert r.status_code == 200, r.text
    return r.json()


def _county_db(system) -> sqlite3.Connection:
    return sqlite3.connect(system.data / "central" / "central.db")


def _kept(system) -> dict[str, str]:
    """The QR texts the county keeps: event hash -> text."""
    conn = _county_db(system)
    try:
        return dict(conn.execute("SELECT event_hash, qr_text FROM document_qr").fetchall())
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
    # Three documents are three records to send, not six: the QR texts are no records of their own.
    assert node.get("/api/v1/status").json()["sync"]["up_waiting"] == 3

    # After the station syncs, the county holds each document with its QR text.
    moved = node.post("/api/v1/sync")
    assert moved.status_code == 200 and moved.json()["sent"] == 3
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
    assert qr_svg(case["qr_text"]) in printed

    # Each verifies at the county and, offline from V1's log, at T1 with the directory sent down.
    other.post("/api/v1/sync")
    county = http(system.central_url)
    for d, state in ((docs[0], "received"), (docs[1], "received"), (refused["station_documents"][0], "refused")):
        got = _verify(county, d["qr_text"])
        assert got["valid"] is True and got["receipt_no"] == d["receipt_no"] and got["state"] == state
        assert got["verify_code"] == d["verify_code"]
        got = _verify(other, d["qr_text"])
        assert got["valid"] is True and got["station"] == "V1" and got["state"] is None

    # The case's history lists the documents' events, one step each.
    kinds = [e["kind"] for e in case["history"]]
    assert kinds[:2] == ["application.correction_notice", "application.accepted"]


def _push_with(system, st: Station, texts: Callable[[list[log.Event]], dict[int, str]]) -> httpx.Response:
    """A push of all of the station's upstream events (from seq 1), built and sealed with its real
    keys, with ``texts`` beside them as a hostile station would make them; sent to the county's
    sync endpoint. Its answer is not applied: the station's cursor stays where it was."""
    with st.store.transaction() as db:
        push = exchange.build_push(db, me=st.me, station=st.code, county=st.county.keys,
                                   county_name=st.county.name, after=0, qr_texts=texts)
    with httpx.Client(timeout=30) as h:
        return h.post(f"{system.central_url}/sync/v1/exchange", content=push.blob,
                      headers={"content-type": "application/octet-stream"})


def test_a_qr_text_that_does_not_verify_or_names_another_document_is_never_kept_or_served(system, http, caplog):
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
        # A document event the county sets aside (a's case id again), with the QR text V1 would print for it.
        aside = forge(st, "application.accepted", good_body(st, id=a["id"]))
        with st.store.lock:
            ev_aside = log.get(st.store.conn, log.up("V1"), aside)
        assert ev_aside is not None
        aside_text = doc_verify.qr_of_event(st, ev_aside)

        stranger = Identity.generate()
        by_stranger = verify.make(sign=stranger.sign, key_id=stranger.public.sign_id, station="V1",
                                  station_name="V1站", kind=ev_b.kind, at=ev_b.at, event_hash=ev_b.hash,
                                  receipt_no=b["receipt_no"], item_code=b["item_code"], item_name=b["item_name"])
        own_key_other_item = verify.make(sign=st.me.sign, key_id=st.me.public.sign_id, station="V1",
                                         station_name="V1站", kind=ev_b.kind, at=ev_b.at, event_hash=ev_b.hash,
                                         receipt_no=b["receipt_no"], item_code="MZ-999", item_name="伪造事项")
        forged = [
            ({ev_b.seq: a["qr_text"]}, "does not match"),                 # a's genuine text, beside b's event
            ({ev_b.seq: b["qr_text"].replace(b["receipt_no"], a["receipt_no"], 1)}, "does not verify"),  # edited
            ({ev_b.seq: by_stranger}, "does not verify"),                 # signed by a key that is not V1's
            ({ev_b.seq: own_key_other_item}, "does not match"),           # V1's key, another item than b names
            ({ev_b.seq: b["qr_text"] + "\n"}, "does not match"),          # b's text, but not as it is laid out
            ({ev_b.seq: "受理回执\nLM2:xyz"}, "does not verify"),           # not a token at all
            ({aside: aside_text}, "is set aside"),                        # right, but for an event set aside
        ]
        for texts, why in forged:
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="lastmile.central.verify"):
                r = _push_with(system, st, lambda _events, texts=texts: texts)
            # a wrong text is not a malformed push: the county takes the events and answers as always
            assert r.status_code == 200, r.text
            notes = [rec.getMessage() for rec in caplog.records if "QR text for up/V1#" in rec.getMessage()]
            assert any(why in n for n in notes), (why, notes)
            assert _kept(system) == {}, why
    finally:
        st.store.close()

    conn = _county_db(system)
    try:
        repairs = {r["seq"]: json.loads(r["reason"]) for r in inbox.repairs(conn, log.up("V1"))}
    finally:
        conn.close()
    assert repairs[aside]["m"].startswith("Case id %(id)s is already held by the county")
    for app in (a, b):                                 # nothing forged is served
        case = _county_case(http, system, app["id"])
        assert case["qr_text"] is None and [d["qr_text"] for d in case["station_documents"]] == [None]

    # The station's own sync sends its events again with the genuine texts: those are kept and served;
    # the set-aside event is listed nowhere, its text not kept.
    assert node.post("/api/v1/sync").status_code == 200
    assert node.get("/api/v1/status").json()["sync"]["up_waiting"] == 0
    assert _kept(system) == {ev_a.hash: a["qr_text"], ev_b.hash: b["qr_text"]}
    for app in (a, b):
        case = _county_case(http, system, app["id"])
        assert case["qr_text"] == app["qr_text"] and [d["qr_text"] for d in case["station_documents"]] == [app["qr_text"]]
        assert _verify(http(system.central_url), case["qr_text"])["valid"] is True


def test_an_older_station_s_documents_have_no_qr_text_at_the_county(system, http):
    """A station before ``qr_texts`` pushes the document's event alone: the county gives its
    verification code and ``qr_text: null`` (it cannot sign), and the QR text still verifies there."""
    v1 = system.stations["V1"]
    node = http(v1["url"], v1["token"])
    item = _item(node)
    r = node.post("/api/v1/applications", json=full_application(item))
    assert r.status_code == 201, r.text
    app = r.json()
    st = _station(system, "V1")
    try:      # as an older station syncs: its pushes carry the events and no qr_texts
        with httpx.Client(timeout=30) as h:
            got = client.sync_once(st.store.transaction, h, me=st.me, station="V1", county=st.county,
                                   apply=st.apply_down)
        assert got.sent == 1 and got.acked == 1
    finally:
        st.store.close()
    case = _county_case(http, system, app["id"])
    assert case["qr_text"] is None and case["verify_code"] == app["verify_code"]
    assert case["station_documents"] == [{"kind": "application.accepted", "receipt_no": app["receipt_no"],
                                          "at": case["station_documents"][0]["at"], "seq": 1,
                                          "verify_code": app["verify_code"], "qr_text": None}]
    assert _verify(http(system.central_url), app["qr_text"])["valid"] is True


def test_a_station_upgraded_before_its_county_still_syncs_without_the_qr_texts(system, http, monkeypatch, caplog):
    """The county must be upgraded first (INSTALL), but an installer may visit the station first. A
    county older than ``qr_texts`` refuses any push carrying it (its strict payload check); the
    station then pushes without it, for a day, instead of sending nothing. (The older county is this
    county with the field taken out of its list of push fields: the check that refuses it is the same.)"""
    from sync import payload as payload_fields
    older = {k: v for k, v in payload_fields.PUSH_FIELDS.items() if k != "qr_texts"}
    monkeypatch.setattr(payload_fields, "PUSH_FIELDS", older)
    monkeypatch.setitem(payload_fields.FIELDS, "push", older)
    v1 = system.stations["V1"]
    node = http(v1["url"], v1["token"])
    item = _item(node)              # a push with no events: nothing to refuse yet
    app = node.post("/api/v1/applications", json=full_application(item)).json()
    st = _station(system, "V1")
    try:
        with caplog.at_level(logging.WARNING, logger="lastmile.node"):
            got = st.sync()
        assert got.sent == 1 and got.acked == 1
        assert "does not take qr_texts in a push yet" in caplog.text
        case = _county_case(http, system, app["id"])
        assert case["receipt_no"] == app["receipt_no"] and case["qr_text"] is None
        # Within the day it does not offer them again; the next case goes up at the first try.
        second = node.post("/api/v1/applications", json=full_application(item)).json()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="lastmile.node"):
            assert st.sync().sent == 1
        assert "does not take qr_texts" not in caplog.text
        assert _county_case(http, system, second["id"])["qr_text"] is None
        # The county is upgraded; a day later the station offers the texts again and they are kept.
        monkeypatch.undo()
        with st.store.transaction() as db:
            log.set_status(db, "qr_texts_refused_at", "0")
        third = node.post("/api/v1/applications", json=full_application(item)).json()
        assert st.sync().sent == 1
        assert _county_case(http, system, third["id"])["qr_text"] == third["qr_text"]
    finally:
        st.store.close()
