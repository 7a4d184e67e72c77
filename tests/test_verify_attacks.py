"""Issue 15, findings 3, 4 and 11, as an attacker would try them: real servers on loopback, real
keys from a station's data folder, real HTTP.

3. A revoked (or retired) station key signs a receipt backdated to before its revocation: the
   county confirms a document only if it holds its event; another station says 签名有效，尚待县中心确认.
4. Typed-code verification is one indexed lookup (EXPLAIN QUERY PLAN), databases made before the
   index get it at start, and the public verify page and API are limited per client address (429).
11. 首问负责 is checked by user name, not by display name."""

from __future__ import annotations

import datetime as dt
import secrets
import sqlite3
import time

import httpx
import pytest

from central.county import County, Settings as CentralSettings
from crypto.keys import Identity
from deploy.cli import main as cli
from node.store import TOKEN_ENV
from sync import codes, verify
from tests.conftest import PASSWORD, log_in
from tests.e2e.test_walking_skeleton import full_application
from tests.life.test_reports import REPORT
from tests.sync.test_recovery import pair  # noqa: F401 - a county and a station in this process

PENDING = "签名有效，尚待县中心确认"


def _issue(node):
    node.post("/api/v1/sync")
    item = next(i for i in node.get("/api/v1/catalog").json()["items"] if i["code"].startswith("MZ"))
    r = node.post("/api/v1/applications", json=full_application(item))
    assert r.status_code == 201, r.text
    return r.json()


def _verify(client, text):
    r = client.post("/api/v1/verify", json={"code": text})
    assert r.status_code == 200, r.text
    return r.json()


def _forge(keys: Identity, at: dt.datetime, no: int = 42) -> str:
    """What a thief holding the station's key makes: a receipt of an event nobody ever stored,
    dated ``at``, signed with the stolen key by the real code path (sync/verify.make)."""
    return verify.make(sign=keys.sign, key_id=keys.public.sign_id, station="V1", station_name="V1站",
                       kind="application.accepted", at=at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                       event_hash=secrets.token_hex(32), receipt_no=f"V1-{at:%Y%m%d}-{no:05d}",
                       item_code="MZ-001", item_name="临时救助申请")


# finding 3 --------------------------------------------------------------------------------------

def test_a_revoked_stations_backdated_receipt_is_genuine_nowhere(system, http):
    v1, t1 = system.stations["V1"], system.stations["T1"]
    node, other = http(v1["url"], v1["token"]), http(t1["url"], t1["token"])
    genuine = _issue(node)
    node.post("/api/v1/sync")                        # the county holds the genuine receipt's event
    stolen = Identity.load(v1["settings"].key_dir)   # the thief takes V1's computer
    time.sleep(1.1)                                  # a token dates its document to the second
    county = County(CentralSettings(data=system.data / "central"))
    county.revoke("V1")
    county.store.close()
    other.post("/api/v1/sync")                       # T1 gets the directory: V1's key revoked now
    backdated = _forge(stolen, dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3))

    # The county holds every event V1 sent: not this one.
    got = _verify(http(system.central_url), backdated)
    assert got["valid"] is False and got["pending"] is False and "未能确认" in got["reason"]
    assert "真实有效" not in http(system.central_url).get("/verify", params={"code": backdated}).text
    # T1, offline from V1's log: the signature verifies, but the key was revoked since.
    got = _verify(other, backdated)
    assert got["valid"] is False and got["pending"] is True and got["undetermined"] is True
    assert got["reason"].startswith(PENDING) and "吊销" in got["reason"]
    page = http(t1["url"]).get("/verify", params={"code": backdated}).text
    assert PENDING in page and "真实有效" not in page
    # The genuine receipt: still confirmed by the county (it holds its event); pending at T1, same rule.
    assert _verify(http(system.central_url), genuine["qr_text"])["valid"] is True
    got = _verify(other, genuine["qr_text"])
    assert got["valid"] is False and got["pending"] is True


def test_a_retired_key_confirms_only_at_the_county(system, http):
    """The rule for a key retired by a rotation (PROTOCOL.md §11): another station cannot tell a
    rotation from a replaced computer nor whether the old private key (kept in keys.retired) is
    safe, so it says pending; the county, which holds every event that key signed, confirms its
    documents and refuses any other."""
    v1, t1 = system.stations["V1"], system.stations["T1"]
    node, other = http(v1["url"], v1["token"]), http(t1["url"], t1["token"])
    old = _issue(node)
    with pytest.MonkeyPatch.context() as env:
        env.setenv(TOKEN_ENV, v1["token"])
        assert cli(["node", "rotate-keys", "--data", str(v1["settings"].data)]) == 0
    for _ in range(3):                               # announce, switch, first push with the new key
        assert node.post("/api/v1/sync").status_code == 200
    retired = Identity.load(next((v1["settings"].data / "keys.retired").iterdir()))   # the old private key
    new = _issue(node)
    node.post("/api/v1/sync")
    other.post("/api/v1/sync")
    county = http(system.central_url)
    assert _verify(county, old["qr_text"])["valid"] is True           # held: confirmed
    assert _verify(county, new["qr_text"])["valid"] is True
    got = _verify(other, old["qr_text"])
    assert got["valid"] is False and got["pending"] is True and "停用" in got["reason"]
    assert _verify(other, new["qr_text"])["valid"] is True            # the current key: genuine offline
    forged = _forge(retired, dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1))
    got = _verify(county, forged)
    assert got["valid"] is False and got["pending"] is False and "未能确认" in got["reason"]
    assert _verify(other, forged)["pending"] is True


def test_a_document_the_county_does_not_hold_yet_is_pending_there(system, http):
    v1 = system.stations["V1"]
    node = http(v1["url"], v1["token"])
    app = _issue(node)                               # not synced since it was issued
    got = _verify(http(system.central_url), app["qr_text"])
    assert got["valid"] is False and got["pending"] is True and got["reason"].startswith(PENDING)
    node.post("/api/v1/sync")
    assert _verify(http(system.central_url), app["qr_text"])["valid"] is True


# finding 4 --------------------------------------------------------------------------------------

def test_a_typed_code_is_one_indexed_lookup_and_old_databases_get_the_index(system, http, capsys):
    v1 = system.stations["V1"]
    node = http(v1["url"], v1["token"])
    app = _issue(node)
    node.post("/api/v1/sync")
    for db in (v1["settings"].db_path, system.data / "central" / "central.db"):
        conn = sqlite3.connect(db)
        try:
            ran: list[str] = []              # the very statement the lookup runs, values bound
            conn.set_trace_callback(ran.append)
            for streams in (("up/V1", "down/V1"), None):        # the station's lookup, the county's
                ran.clear()
                found = codes.code_rows(conn, [app["verify_code"]], streams)
                assert [(stream, doc) for stream, _, doc in found] == [("up/V1", "application.accepted")]
                conn.set_trace_callback(None)
                plan = " ".join(str(r[-1]) for r in conn.execute("EXPLAIN QUERY PLAN " + ran[0]).fetchall())
                conn.set_trace_callback(ran.append)
                assert plan.startswith("SEARCH _sync_codes USING COVERING INDEX") and "(code=?" in plan, plan
                assert "SCAN" not in plan, plan
            conn.set_trace_callback(None)
            assert conn.execute("SELECT doc FROM _sync_codes WHERE code = ?", (app["verify_code"],)).fetchall() \
                == [("application.accepted",)]
        finally:
            conn.close()

    # A station database made before the index: no _sync_codes. The next start indexes it.
    conn = sqlite3.connect(v1["settings"].db_path)
    with conn:
        conn.execute("DROP TABLE _sync_codes")
        conn.execute("DELETE FROM _sync_status WHERE name = 'codes_indexed'")
    conn.close()
    with pytest.MonkeyPatch.context() as env:
        env.setenv(TOKEN_ENV, v1["token"])
        rc = cli(["verify", app["verify_code"], "--data", str(v1["settings"].data), "--lang", "en", "--json"])
    assert rc == 0, capsys.readouterr().out
    assert app["receipt_no"] in capsys.readouterr().out


def test_the_public_verify_page_and_api_are_limited_per_address(system, http):
    v1 = system.stations["V1"]
    node = http(v1["url"], v1["token"])
    app = _issue(node)
    public = http(v1["url"])
    for _ in range(60):
        assert public.post("/api/v1/verify", json={"code": app["verify_code"]}).status_code == 200
    refused = public.post("/api/v1/verify", json={"code": app["verify_code"]})
    assert refused.status_code == 429 and refused.json()["error"] == "too_many_requests"
    assert set(refused.json()) == {"error", "message", "details"} and int(refused.headers["retry-after"]) >= 1
    page = public.get("/verify", params={"code": app["verify_code"]})
    assert page.status_code == 429 and page.text == "该地址的核验请求过多，请等一分钟后再试。"
    assert public.get("/verify").status_code == 200                  # the empty form checks nothing
    # Another address is served; the staff's API token keeps working from the limited one.
    elsewhere = httpx.Client(base_url=v1["url"], transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    try:
        assert elsewhere.post("/api/v1/verify", json={"code": app["verify_code"]}).json()["valid"] is True
    finally:
        elsewhere.close()
    assert node.get(f"/api/v1/applications/{app['id']}").status_code == 200
    # The county's API the same way.
    county = http(system.central_url)
    statuses = [county.post("/api/v1/verify", json={"code": "7KQ2-9MZD-41TX"}).status_code for _ in range(61)]
    assert statuses[:60] == [200] * 60 and statuses[60] == 429


# finding 11 -------------------------------------------------------------------------------------

def test_a_clerk_with_the_owners_display_name_cannot_answer_for_the_owner(system, http):
    v1 = system.stations["V1"]
    station = http(v1["url"], v1["token"])
    station.post("/api/v1/sync")
    report = station.post("/api/v1/reports", json=REPORT).json()
    station.post("/api/v1/sync")
    county = County(CentralSettings(data=system.data / "central"))
    namesake = county.add_user("renshe2", "县民政局科员", PASSWORD, "clerk", "renshe")   # 民政's owner's display name
    county.store.close()
    owner = http(system.central_url, system.clerk_tokens["minzheng"])
    impostor = http(system.central_url, namesake)
    assert owner.post(f"/api/v1/reports/{report['id']}/take").status_code == 200
    r = impostor.post(f"/api/v1/reports/{report['id']}/answer", json={"answer": "我替他答"})
    assert r.status_code == 403 and r.json()["error"] == "not_yours"
    page, _ = log_in(http, system.central_url, "renshe2")            # the page's form the same way
    csrf = page.get("/reports").text.split('name="csrf" value="')[1].split('"')[0]
    page.post(f"/reports/{report['id']}/answer", data={"answer": "我替他答", "csrf": csrf})
    held = next(x for x in owner.get("/api/v1/reports").json()["reports"] if x["id"] == report["id"])
    assert held["answer"] is None and held["status"] == "taken"
    assert owner.post(f"/api/v1/reports/{report['id']}/answer", json={"answer": "已办理"}).status_code == 200


def test_a_report_taken_before_the_user_name_was_kept_is_still_answered_by_its_owner(system, http):
    v1 = system.stations["V1"]
    station = http(v1["url"], v1["token"])
    station.post("/api/v1/sync")
    report = station.post("/api/v1/reports", json=REPORT).json()
    station.post("/api/v1/sync")
    owner = http(system.central_url, system.clerk_tokens["minzheng"])
    assert owner.post(f"/api/v1/reports/{report['id']}/take").status_code == 200
    conn = sqlite3.connect(system.data / "central" / "central.db")     # as an older version left the row
    with conn:
        conn.execute("UPDATE reports SET taken_username = NULL")
    conn.close()
    other = http(system.central_url, system.clerk_tokens["renshe"])
    assert other.post(f"/api/v1/reports/{report['id']}/answer", json={"answer": "x"}).status_code == 403
    assert owner.post(f"/api/v1/reports/{report['id']}/answer", json={"answer": "已办理"}).status_code == 200


def test_a_typed_code_is_answered_while_a_push_holds_the_store(pair):
    """Finding 4, "unaffected by load on the store": a push or a purge holds the store's lock for its
    whole transaction; a typed code on the public page is answered during it, at the station and at
    the county, from a read-only connection beside the writer (templates/readers.py). Before, the
    look-up took the lock and waited for the transaction to end."""
    import threading

    from central.services import verify as county_verify
    from node.services import verify as station_verify
    from tests.sync.test_recovery import round_trip, take

    county, st, _ = pair
    app = take(st, 1)[0]
    round_trip(county, st)
    code = station_verify.verify_code(st.store.application(app["id"]))
    for store, check in ((st.store, lambda: station_verify.check(st, code)),
                         (county.store, lambda: county_verify.check(county, code))):
        holding, release = threading.Event(), threading.Event()

        def writer(store=store, holding=holding, release=release) -> None:
            with store.transaction() as db:
                db.execute("INSERT INTO meta (name, value) VALUES ('held', 'x')")
                holding.set()
                release.wait(20)
                db.execute("DELETE FROM meta WHERE name = 'held'")

        thread = threading.Thread(target=writer)
        thread.start()
        assert holding.wait(10)
        try:
            result = check()
            assert thread.is_alive(), "the look-up waited for the writer's transaction to end"
            assert result["valid"] and result["receipt_no"] == app["receipt_no"]
        finally:
            release.set()
            thread.join()


def test_an_event_is_found_by_its_hash_through_an_index_not_a_scan(pair):
    """Issue 18: printing a document's QR text looks its event up by hash (node/services/verify.py
    ``_event``); at 50k cases a scan of the whole log took seconds. Both ends index the hash."""
    from tests.sync.test_recovery import round_trip, take

    county, st, _ = pair
    app = take(st, 1)[0]
    round_trip(county, st)
    event_hash = st.store.application(app["id"])["event_hash"]
    for conn in (st.store.conn, county.store.conn):
        plan = " ".join(str(r[-1]) for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT stream, seq FROM _sync_events WHERE hash = ?", (event_hash,)).fetchall())
        assert "USING INDEX _sync_events_hash" in plan and "SCAN" not in plan, plan
        assert conn.execute("SELECT stream FROM _sync_events WHERE hash = ?", (event_hash,)).fetchone()[0] == "up/S1"
