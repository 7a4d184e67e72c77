"""Decision documents that travel down: the written rejection (reason, legal basis, rights of appeal),
the approval's result documents sealed to the station and downloaded resumably, the printable
documents at the station. Real servers on loopback, real SQLite files, the fault proxy for cuts."""

from __future__ import annotations

import base64
import io
import os
import sqlite3

import httpx
import pytest
from PIL import Image

from central.county import County, CountyError, Settings as CentralSettings
from node.services import documents
from node.station import Station
from sync import client
from sync.law import facts
from sync.law.errors import RuleError
from tests import conftest
from tests.sync.test_protocol_machine import form_for

PDF = b"%PDF-1.4\n" + os.urandom(300_000) + b"\n%%EOF\n"


def png(w: int = 120, h: int = 80) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def taken(st: Station, n: int = 1) -> dict:
    """An accepted application of V1, already at the county."""
    item = st.items()[0]
    app = st.take(item["code"], form_for(item, n), "accept", "测试")
    st.sync()
    return app


def county_api(system, http, app: dict):
    return http(system.central_url, system.clerk_tokens[app["department"]])


def events_only(st: Station) -> None:
    with httpx.Client(timeout=30) as h:
        client.sync_once(st.store.transaction, h, me=st.me, station="V1", county=st.county, apply=st.apply_down)


def test_an_approval_with_two_result_documents_reaches_the_station_and_prints(system, station, http):
    app = taken(station)
    picture = png()
    r = county_api(system, http, app).post(f"/api/v1/cases/{app['id']}/decision", json={
        "decision": "approve", "note": "符合条件，予以批准",
        "attachments": [{"name": "批准决定书.pdf", "data_base64": b64(PDF)}, {"name": "证照.png", "data_base64": b64(picture)}]})
    assert r.status_code == 200, r.text
    station.sync()
    got = http(system.stations["V1"]["url"], system.stations["V1"]["token"]).get(f"/api/v1/applications/{app['id']}").json()
    kinds = [d["kind"] for d in got["documents"]]
    assert kinds == ["receipt", "approval_notice", "attachment", "attachment"]
    assert all(d["complete"] for d in got["documents"])
    assert got["decision"]["decision"] == "approve" and got["decision"]["note"] == "符合条件，予以批准"
    assert [a["name"] for a in got["decision"]["attachments"]] == ["批准决定书.pdf", "证照.png"]
    page, _ = conftest.log_in(http, system.stations["V1"]["url"], "agent")
    served = {d["name"]: page.get(d["url"]) for d in got["documents"] if d["kind"] == "attachment"}
    assert served["批准决定书.pdf"].content == PDF and served["批准决定书.pdf"].headers["content-type"] == "application/pdf"
    assert served["证照.png"].content == picture and served["证照.png"].headers["content-type"] == "image/png"
    notice = page.get(next(d["url"] for d in got["documents"] if d["kind"] == "approval_notice"))
    assert notice.status_code == 200 and "办结通知书" in notice.text and "符合条件，予以批准" in notice.text
    assert "批准决定书.pdf" in notice.text and "证照.png" in notice.text and "县人力资源和社会保障局" in notice.text
    assert "/static/documents.css" in notice.text
    assert page.get("/static/documents.css").status_code == 200
    detail = page.get(f"/applications/{app['id']}")
    assert 'id="documents"' in detail.text and "still-coming" not in detail.text


def test_a_rejection_prints_its_reason_basis_and_rights_of_appeal(system, station, http):
    app = taken(station)
    r = county_api(system, http, app).post(f"/api/v1/cases/{app['id']}/decision", json={
        "decision": "reject", "reason": "申请人不符合参保年龄条件", "basis": "《社会保险法》第二十条"})
    assert r.status_code == 200, r.text
    station.sync()
    got = http(system.stations["V1"]["url"], system.stations["V1"]["token"]).get(f"/api/v1/applications/{app['id']}").json()
    assert got["decision"]["reason"] == "申请人不符合参保年龄条件" and got["decision"]["basis"] == "《社会保险法》第二十条"
    assert got["decision"]["appeal"]["review_body"] == "示范县人民政府"
    assert [d["kind"] for d in got["documents"]] == ["receipt", "rejection_decision"]
    page, _ = conftest.log_in(http, system.stations["V1"]["url"], "agent")
    text = page.get(got["documents"][1]["url"]).text
    assert "不予批准决定书" in text and "申请人不符合参保年龄条件" in text and "《社会保险法》第二十条" in text
    assert ("如不服本决定，可自收到本决定书之日起60日内向示范县人民政府申请行政复议，"
            "或者在6个月内向示范县人民法院提起行政诉讼。") in text
    assert "决定机关：县人力资源和社会保障局" in text
    county_page, _ = conftest.log_in(http, system.central_url, app["department"])
    case = county_page.get(f"/cases/{app['id']}").text                   # the clerk sees what was sent
    assert 'id="decision-written"' in case and "《社会保险法》第二十条" in case and "示范县人民法院" in case


def test_the_station_refusal_names_the_review_body_or_says_it_cannot(system, station, http):
    item = station.items()[0]
    refused = station.take(item["code"], {**form_for(item, 5), "reason": "不属于本站受理范围"}, "refuse", "测试")
    page, _ = conftest.log_in(http, system.stations["V1"]["url"], "agent")
    text = page.get(f"/applications/{refused['id']}/document").text
    assert "向示范县人民政府申请行政复议" in text and "向示范县人民法院提起行政诉讼" in text
    assert 'id="appeal-generic"' not in text
    with station.store.transaction() as db:             # a catalogue published before the appeal block existed
        catalog = station.store.catalog()
        catalog.pop("appeal")
        station.store.set_meta(db, "catalog", __import__("json").dumps(catalog, ensure_ascii=False))
    text = page.get(f"/applications/{refused['id']}/document").text
    assert 'id="appeal-generic"' in text and "示范县人民政府" not in text and "60日" in text
    with station.store.transaction() as db:             # a malformed block is not printed as if it were right
        station.store.set_meta(db, "catalog", __import__("json").dumps(
            {**catalog, "appeal": {"review_body": "示范县人民政府", "review_days": "六十", "court": "x"}},
            ensure_ascii=False))
    text = page.get(f"/applications/{refused['id']}/document").text
    assert 'id="appeal-generic"' in text and "六十" not in text


def test_a_rejection_without_its_basis_is_refused_and_nothing_is_decided(system, station, http, caplog):
    caplog.set_level("INFO", logger="lastmile.central")
    app = taken(station)
    api = county_api(system, http, app)
    url = f"/api/v1/cases/{app['id']}/decision"
    r = api.post(url, json={"decision": "reject", "reason": "不符合条件"})
    assert r.status_code == 422 and r.json()["error"] == "basis_required" and r.json()["message"]
    assert any("basis_required" in m for m in caplog.messages)        # refusals are logged
    r = api.post(url, json={"decision": "reject", "note": "材料不全"})                    # the old note-only shape
    assert r.status_code == 422 and r.json()["error"] == "reason_required"
    r = api.post(url, json={"decision": "approve", "attachments": [{"name": "x.exe", "data_base64": b64(b"MZ" * 50)}]})
    assert r.status_code == 422 and r.json()["error"] == "bad_attachment"
    r = api.post(url, json={"decision": "approve", "attachments": [{"name": "a.png", "data_base64": b64(b"\x89PNG\r\n\x1a\n" + b"0" * 40)}]})
    assert r.status_code == 422 and r.json()["error"] == "bad_attachment"
    r = api.post(url, json={"decision": "approve", "attachments": "nope"})
    assert r.status_code == 422 and r.json()["error"] == "bad_attachment"
    page, _ = conftest.log_in(http, system.central_url, app["department"])
    form = page.post(url.replace("/api/v1", ""), data={"decision": "reject", "reason": "不符合条件", "basis": "",
                                                       "csrf": conftest.csrf_of(page)})
    assert form.status_code == 422 and "不予批准须写明法律依据" in form.text
    assert api.get(f"/api/v1/cases/{app['id']}").json()["status"] == "received"
    assert api.post(url, json={"decision": "approve", "note": "予以批准"}).status_code == 200     # note-only approve


def test_the_decide_form_takes_reason_basis_and_files(system, station, http):
    app = taken(station)
    page, _ = conftest.log_in(http, system.central_url, app["department"])
    case = page.get(f"/cases/{app['id']}").text
    assert 'enctype="multipart/form-data"' in case and 'name="basis"' in case and 'name="attachments"' in case
    r = page.post(f"/cases/{app['id']}/decision", data={"decision": "approve", "note": "", "csrf": conftest.csrf_of(page)},
                  files=[("attachments", ("结果.pdf", PDF, "application/pdf"))])
    assert r.status_code == 200 and "/?m=decided" in str(r.url)
    station.sync()
    got = http(system.stations["V1"]["url"], system.stations["V1"]["token"]).get(f"/api/v1/applications/{app['id']}").json()
    assert [(d["name"], d["complete"]) for d in got["documents"] if d["kind"] == "attachment"] == [("结果.pdf", True)]


def test_a_forged_or_foreign_result_document_is_refused_and_stays_still_coming(system, station, http):
    app = taken(station)
    other = taken(station, 2)
    api = county_api(system, http, app)
    assert api.post(f"/api/v1/cases/{app['id']}/decision", json={
        "decision": "approve", "attachments": [{"name": "结果.pdf", "data_base64": b64(PDF)}]}).status_code == 200
    assert api.post(f"/api/v1/cases/{other['id']}/decision", json={
        "decision": "approve", "attachments": [{"name": "另一份.png", "data_base64": b64(png())}]}).status_code == 200
    folder = system.data / "central" / "docs" / "V1"
    sealed = sorted(folder.glob("*.sealed"), key=lambda p: p.stat().st_size)
    small, big = sealed[0], sealed[1]
    original = big.read_bytes()
    big.write_bytes(os.urandom(len(original)))                       # garbage in the county's sealed file
    station.sync()                                                   # no exception: the pass goes on
    api_st = http(system.stations["V1"]["url"], system.stations["V1"]["token"])
    doc = next(d for d in api_st.get(f"/api/v1/applications/{app['id']}").json()["documents"] if d["kind"] == "attachment")
    assert doc["complete"] is False
    page, _ = conftest.log_in(http, system.stations["V1"]["url"], "agent")
    assert page.get(doc["url"]).status_code == 404
    assert "尚在从县里传送中" in page.get(f"/applications/{app['id']}").text
    home = page.get("/").text                                        # the sync panel names it, with why
    assert 'id="docs-waiting"' in home and "结果.pdf" in home and "bad_document" in home and "另一份.png" not in home
    assert [d["name"] for d in station.sync_state()["docs_waiting"]] == ["结果.pdf"]
    errors = documents.errors(station)
    assert list(errors) == [doc["sha256"]] and "bad_document" in errors[doc["sha256"]]
    second = next(d for d in api_st.get(f"/api/v1/applications/{other['id']}").json()["documents"] if d["kind"] == "attachment")
    assert second["complete"] and page.get(second["url"]).status_code == 200        # the other one came
    big.write_bytes(small.read_bytes())                              # a real sealed document, but another one
    station.sync()
    assert not documents.received(station, doc["sha256"]) and "bad_document" in documents.errors(station)[doc["sha256"]]
    from crypto import envelope
    foreign = envelope.seal_blob(os.urandom(len(PDF)), recipient=station.me.public, digest=doc["sha256"])
    big.write_bytes(foreign)                                         # the right length, sealed to us, wrong bytes
    station.sync()
    assert not documents.received(station, doc["sha256"]) and "bad_document" in documents.errors(station)[doc["sha256"]]
    big.write_bytes(original)                                        # the county's file repaired: it comes
    station.sync()
    assert page.get(doc["url"]).content == PDF and documents.errors(station) == {}


def test_a_cut_download_resumes_where_it_stopped(system, station, http):
    from tests.faultproxy import FaultProxy
    app = taken(station)
    big = b"%PDF-1.4\n" + os.urandom(3 * 1024 * 1024) + b"\n%%EOF\n"
    assert county_api(system, http, app).post(f"/api/v1/cases/{app['id']}/decision", json={
        "decision": "approve", "attachments": [{"name": "大文件.pdf", "data_base64": b64(big)}]}).status_code == 200
    events_only(station)
    assert len(documents.pending(station)) == 1
    host, port = system.central_url.replace("http://", "").split(":")
    with FaultProxy((host, int(port)), rate_bps=40_000_000, cut_after_bytes=len(big) // 3) as proxy, \
            httpx.Client(timeout=30) as h:
        for _ in range(10):
            try:
                if documents.fetch_pending(station, h, url=proxy.url) == 1:
                    break
            except Exception:  # noqa: BLE001 - the link failed four times in a row: the next pass resumes
                continue
        assert proxy.stats.cuts >= 2
        assert proxy.stats.bytes_down < 2 * len(big)                 # each cut cost only what was in flight
    assert documents.pending(station) == [] and station.sync_state()["docs_waiting"] == []
    page, _ = conftest.log_in(http, system.stations["V1"]["url"], "agent")
    got = http(system.stations["V1"]["url"], system.stations["V1"]["token"]).get(f"/api/v1/applications/{app['id']}").json()
    assert page.get(got["documents"][-1]["url"]).content == big


def test_only_the_station_that_owns_the_case_gets_its_documents(system, station, http):
    from sync import docs
    app = taken(station)
    assert county_api(system, http, app).post(f"/api/v1/cases/{app['id']}/decision", json={
        "decision": "approve", "attachments": [{"name": "结果.pdf", "data_base64": b64(PDF)}]}).status_code == 200
    sha = next(p.stem for p in (system.data / "central" / "docs" / "V1").glob("*.sealed"))
    t1 = Station(system.stations["T1"]["settings"])
    t1.store.user_by_token(system.stations["T1"]["token"])   # unlocks (node/vault.py)
    try:
        import time
        c = http(system.central_url)

        def get(me, code, offset=0, nonce=None):
            nonce, expires = nonce or os.urandom(16).hex(), int(time.time()) + 60
            return c.get(docs.DOC_PATH + sha, headers={
                "lastmile-station": code, "lastmile-expires": str(expires), "lastmile-nonce": nonce,
                "lastmile-signature": docs.sign_request(me, code, sha, offset, expires, nonce), "range": f"bytes={offset}-"})
        assert get(t1.me, "T1").json()["error"] == "unknown_document"           # not sealed for T1
        assert get(t1.me, "V1").status_code == 401                               # T1 posing as V1
        ok = get(station.me, "V1", 100)
        assert ok.status_code == 206 and ok.headers["content-range"].startswith("bytes 100-")
        assert c.get(docs.DOC_PATH + sha).json()["error"] == "bad_request"
    finally:
        t1.store.close()


def test_the_station_checks_a_decision_with_the_same_spec():
    spec = facts.SPECS[facts.CASE_DECIDED]
    base = {"id": "x", "note": "", "by": "科员", "department": "renshe", "at": "2026-11-28T00:00:00.000Z"}
    appeal = {"review_body": "示范县人民政府", "review_days": 60, "court": "示范县人民法院", "court_months": 6}
    spec.validate({**base, "decision": "reject", "note": "材料不全"})               # written before: still valid
    spec.validate({**base, "decision": "reject", "reason": "r", "basis": "b", "appeal": appeal})
    a = {"sha256": "a" * 64, "name": "x.pdf", "mime": "application/pdf", "size": 10}
    spec.validate({**base, "decision": "approve", "attachments": [a]})
    for bad in ({**base, "decision": "reject", "reason": "r"},
                {**base, "decision": "reject", "reason": "r", "basis": "b" * 501},
                {**base, "decision": "reject", "reason": "r", "basis": "b", "appeal": {**appeal, "review_days": "60"}},
                {**base, "decision": "approve", "reason": "r", "basis": "b"},
                {**base, "decision": "reject", "reason": "r", "basis": "b", "attachments": [a]},
                {**base, "decision": "approve", "attachments": [{**a, "mime": "text/html"}]},
                {**base, "decision": "approve", "attachments": [a, a]},
                {**base, "decision": "approve", "attachments": [{**a, "size": 8 * 1024 * 1024 + 1}]}):
        with pytest.raises(RuleError):
            spec.validate(bad)


def test_a_catalogue_without_the_appeal_block_is_not_published(tmp_path):
    settings = CentralSettings(data=tmp_path / "c")
    County.init(settings)
    county = County(settings)
    try:
        catalog = {k: v for k, v in conftest.CATALOG.items() if k != "appeal"}
        with pytest.raises(CountyError) as missing:
            county.publish_catalog(catalog)
        assert missing.value.code == "no_appeal" and '"appeal"' in str(missing.value)
        with pytest.raises(CountyError) as bad:
            county.publish_catalog({**catalog, "appeal": {"review_body": "", "review_days": 60, "court": "x",
                                                          "court_months": 6}})
        assert bad.value.code == "bad_appeal"
        assert county.catalog()["version"] == 0                       # nothing published
        assert county.publish_catalog(conftest.CATALOG) == 1
    finally:
        county.store.close()


def test_the_catalog_command_refuses_a_catalogue_without_appeal_and_says_why(tmp_path, capsys):
    import json
    from deploy import cli
    data = tmp_path / "county"
    assert cli.main(["central", "init", "--data", str(data)]) == 0
    old = tmp_path / "old.json"
    old.write_text(json.dumps({k: v for k, v in conftest.CATALOG.items() if k != "appeal"}, ensure_ascii=False),
                   encoding="utf-8")
    assert cli.main(["central", "catalog", "publish", "--data", str(data), "--file", str(old)]) == 2
    assert 'no "appeal" block' in capsys.readouterr().err
    conn = sqlite3.connect(data / "central.db")
    try:
        assert conn.execute("SELECT count(*) FROM _sync_events").fetchone()[0] == 0     # nothing published
    finally:
        conn.close()
    assert cli.main(["central", "catalog", "publish", "--data", str(data)]) == 0         # the demo one has it
