"""Retention of personal data at the station: the county sets the period (``retention.set``), the
station removes the personal fields of cases handed out longer ago than that and held by the county
in full, from its tables, its copies of the event bodies and its files; the chain still verifies and
the case's history says what happened. Real servers, real files, the real CLI."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

from deploy import cli
from node.station import Station
from node.store import TOKEN_ENV, Store
from sync.law.intake import valid_id_for_demo
from tests.conftest import csrf_of, log_in
from tests.e2e.test_walking_skeleton import full_application
from tests.sync.test_decision_documents import b64, png
from tests.sync.test_recovery import pair  # noqa: F401 - a county and a station in this process

CHINA = dt.timezone(dt.timedelta(hours=8))
PEOPLE = {
    "old": ("欧阳淑珍", valid_id_for_demo("41052219560312002"), "13911112222"),
    "unsent": ("司马建国", valid_id_for_demo("41052219610704003"), "13922223333"),
    "waiting": ("诸葛春兰", valid_id_for_demo("41052219700815004"), "13933334444"),
}
REPORT = {"name": "上官翠花", "phone": "13944445555", "id_number": "", "tried": "去乡里办高龄津贴，上官翠花被让去县里",
          "where": "乡便民服务中心2号窗口", "item_code": "MZ-004", "contact": "13944445555，上午在家"}


def needles(name: str, id_number: str, phone: str) -> list[bytes]:
    """Every form a person's data can take in the files: UTF-8, and JSON's \\uXXXX escapes."""
    return [name.encode(), json.dumps(name).strip('"').encode(), id_number.encode(), phone.encode()]


def found_in(folder: Path, needle: bytes) -> list[str]:
    return [str(p.relative_to(folder)) for p in sorted(folder.rglob("*")) if p.is_file() and needle in p.read_bytes()]


def plain(settings, token: str) -> bytes:
    """Everything the station's database holds, read through its store (node/vault.py decrypts
    with the agent's token), as UTF-8 and as JSON would escape it."""
    store = Store(settings.db_path)
    try:
        assert store.user_by_token(token)
        with store.lock:
            tables = [r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            text = "\n".join(repr(r) + json.dumps(r, default=str) for t in tables
                             for r in store.conn.execute(f"SELECT * FROM {t}").fetchall())
        return text.encode()
    finally:
        store.close()


def snapshot(data: Path, to: Path) -> Path:
    """The whole data folder as a thief would copy it: database, WAL, shared memory, blobs, keys."""
    shutil.copytree(data, to)
    return to


def test_the_county_sets_the_period_and_refuses_a_bad_one_in_words(system, http):
    boss = http(system.central_url, system.central_token)
    assert boss.get("/api/v1/settings/retention").json()["retention_days"] == 30        # the default
    for bad in ({"retention_days": 0}, {"retention_days": "7"}, {"retention_days": 7, "x": 1}, {}):
        r = boss.put("/api/v1/settings/retention", json=bad)
        assert r.status_code == 422 and r.json()["error"] == "invalid_retention" and set(r.json()) == {
            "error", "message", "details"}
    clerk = http(system.central_url, system.clerk_tokens["minzheng"])
    r = clerk.put("/api/v1/settings/retention", json={"retention_days": 7})
    assert r.status_code == 403 and r.json()["error"] == "supervisor_only"
    assert boss.get("/api/v1/settings/retention").json()["retention_days"] == 30        # nothing changed
    done = boss.put("/api/v1/settings/retention", json={"retention_days": 7})
    assert done.status_code == 200 and done.json()["retention_days"] == 7 and done.json()["set_by"] == "boss"

    # The station gets it with its next sync, like the calendar.
    v1 = system.stations["V1"]
    assert http(v1["url"], v1["token"]).post("/api/v1/sync").status_code == 200
    st = Station(v1["settings"])
    try:
        assert st.store.meta("retention_days") == "7"
    finally:
        st.store.close()


def test_cases_past_retention_lose_their_personal_data_everywhere_and_the_chain_still_verifies(
        system, http, tmp_path, capsys, monkeypatch):
    boss = http(system.central_url, system.central_token)
    assert boss.put("/api/v1/settings/retention", json={"retention_days": 7}).status_code == 200
    v1 = system.stations["V1"]
    monkeypatch.setenv(TOKEN_ENV, v1["token"])        # the CLI reads personal data (node/vault.py)
    node = http(v1["url"], v1["token"])
    node.post("/api/v1/sync")
    item = next(i for i in node.get("/api/v1/catalog").json()["items"] if i["code"].startswith("MZ"))
    cases = {}
    for key, (name, id_number, phone) in PEOPLE.items():
        body = full_application(item)
        body["applicant"] = {"name": name, "id_number": id_number, "phone": phone, "address": f"{name}家"}
        if key == "old":                    # a scan named after the citizen, sealed to the county
            body["scans"] = [{"material": item["materials"][0]["code"], "name": f"{name}身份证.png",
                              "data_base64": b64(png())}]
        r = node.post("/api/v1/applications", json=body)
        assert r.status_code == 201, r.text
        cases[key] = r.json()
    report = node.post("/api/v1/reports", json=REPORT).json()
    node.post("/api/v1/sync")
    clerk = http(system.central_url, system.clerk_tokens[item["department"]])
    for key in ("old", "unsent"):
        r = clerk.post(f"/api/v1/cases/{cases[key]['id']}/decision", json={
            "decision": "approve", "note": f"{PEOPLE[key][0]}材料齐全",
            "attachments": [{"name": f"{PEOPLE[key][0]}证照.png", "data_base64": b64(png())}]})
        assert r.status_code == 200, r.text
    minzheng = http(system.central_url, system.clerk_tokens["minzheng"])
    assert minzheng.post(f"/api/v1/reports/{report['id']}/take").status_code == 200
    assert minzheng.post(f"/api/v1/reports/{report['id']}/answer",
                         json={"answer": "已联系上官翠花，下周上门"}).status_code == 200
    node.post("/api/v1/sync")
    page, _ = log_in(http, v1["url"], "agent")
    handout = {"csrf": csrf_of(page), "collector": "applicant", "identity_checked": "1"}
    assert page.post(f"/applications/{cases['old']['id']}/handout", data=handout).status_code == 200
    node.post("/api/v1/sync")                       # the county holds the hand-out

    data = v1["settings"].data
    status = node.get("/api/v1/status").json()["sync"]
    assert status["scans_waiting"] == 0 and status["docs_waiting"] == []     # scans up, documents down
    before = snapshot(data, tmp_path / "before")
    sealed = {p.relative_to(before) for p in before.rglob("*.sealed")}
    assert {p.parts[0] for p in sealed} == {"blobs", "docs"} and len(sealed) == 2    # one document, two cases
    held = plain(v1["settings"], v1["token"])
    for person in PEOPLE.values():                  # without retention, everything is there (encrypted)
        assert any(n in held for n in needles(*person))

    # Today, nothing is past 7 days: a purge removes nothing.
    assert cli.main(["node", "purge", "--data", str(data)]) == 0
    assert "removed from 0 cases and 0 reports" in capsys.readouterr().out
    # Eight days from now (the documented --as-of hook counts the period to that day; the clock
    # of the running node is not touched), with the node still running.
    later = (dt.datetime.now(CHINA) + dt.timedelta(days=8)).date().isoformat()
    assert cli.main(["node", "purge", "--data", str(data), "--as-of", later]) == 0
    out = capsys.readouterr().out
    assert "removed from 1 cases and 1 reports" in out and "bodies redacted after the retention period" in out

    # The citizen rates the case after its purge: the rating goes up, and the next purge removes
    # its comment too, once the county holds it.
    assert node.post(f"/api/v1/applications/{cases['old']['id']}/rating",
                     json={"score": 5, "comment": "欧阳淑珍说很好"}).status_code == 201
    assert cli.main(["node", "purge", "--data", str(data), "--as-of", later]) == 0
    assert "(0 event bodies" in capsys.readouterr().out           # not acknowledged yet: kept
    node.post("/api/v1/sync")
    assert page.post(f"/applications/{cases['unsent']['id']}/handout", data=handout).status_code == 200
    # "unsent": handed out, but the county has not acknowledged the hand-out yet (no sync since)
    assert cli.main(["node", "purge", "--data", str(data), "--as-of", later]) == 0
    assert "from 0 cases and 0 reports (1 event bodies" in capsys.readouterr().out

    after = snapshot(data, tmp_path / "after")
    assert (after / "node.db").exists()
    left = {p.relative_to(after) for p in after.rglob("*.sealed")}
    # The old case's scan is gone; the result document stays, the kept case has the same one.
    assert left == {p for p in sealed if p.parts[0] == "docs"}
    for n in needles(*PEOPLE["old"]) + needles(REPORT["name"], REPORT["phone"], REPORT["contact"][:11]):
        assert found_in(after, n) == [], n
    kept = plain(v1["settings"], v1["token"])
    for n in needles(*PEOPLE["old"]) + needles(REPORT["name"], REPORT["phone"], REPORT["contact"][:11]):
        assert n not in kept, n
    for key in ("unsent", "waiting"):               # not past retention, or not acknowledged: kept
        assert PEOPLE[key][0].encode() in kept or json.dumps(PEOPLE[key][0]).strip('"').encode() in kept

    # The chain still verifies: links and signatures, and every body not redacted against its hash.
    st = Station(v1["settings"])
    st.store.user_by_token(v1["token"])
    try:
        from node.services import retention
        chain = retention.verify_chain(st)
        assert chain["problems"] == [] and chain["redacted"] >= 5 and chain["events"] > chain["redacted"]
        assert retention.purge(st, dt.datetime.now(CHINA) + dt.timedelta(days=8))["cases"] == []   # once only
    finally:
        st.store.close()

    # The case's page and API still work and say what happened; the county still holds it in full.
    shown = page.get(f"/applications/{cases['old']['id']}")
    assert shown.status_code == 200 and 'id="redacted"' in shown.text and "保留期" in shown.text
    assert PEOPLE["old"][0] not in shown.text
    history = node.get(f"/api/v1/applications/{cases['old']['id']}").json()["history"]
    assert [e["kind"] for e in history] == ["application.accepted", "case.decided", "application.handed_out",
                                            "application.rated"]
    assert {e["signature"] for e in history} == {"redacted"}
    row = shown.text.split('data-kind="application.handed_out"')[1].split("</tr>")[0]
    assert "个人信息已按保留期删除" in row and "验证不通过" not in row
    kept = node.get(f"/api/v1/applications/{cases['unsent']['id']}").json()
    assert node.get("/api/v1/status").json()["sync"]["docs_waiting"] == []
    assert {e["signature"] for e in kept["history"]} == {"valid"}
    county_case = clerk.get(f"/api/v1/cases/{cases['old']['id']}").json()
    assert PEOPLE["old"][0] in json.dumps(county_case, ensure_ascii=False)
    # Its receipt still prints and still verifies (number, item, date and signature are kept), with
    # no name to show.
    doc = page.get(f"/applications/{cases['old']['id']}/document")
    assert doc.status_code == 200 and PEOPLE["old"][0] not in doc.text
    code = node.get(f"/api/v1/applications/{cases['old']['id']}").json()["verify_code"]
    assert cli.main(["verify", code, "--data", str(data), "--json"]) == 0
    checked = json.loads(capsys.readouterr().out)
    assert checked["valid"] and checked["receipt_no"] == cases["old"]["receipt_no"] and checked["state"] == "handed_out"
    report_page = page.get(f"/reports/{report['id']}")
    assert report_page.status_code == 200 and REPORT["name"] not in report_page.text

    # The station keeps working: the next sync goes through and the purged case stays consistent.
    assert node.post("/api/v1/sync").status_code == 200


def test_a_bad_as_of_and_a_bad_period_are_refused_in_words(system, capsys):
    assert cli.main(["node", "purge", "--data", str(system.stations["V1"]["settings"].data),
                     "--as-of", "next week"]) == 2
    assert "not a date" in capsys.readouterr().err
    assert cli.main(["central", "retention", "set", "0", "--data", str(system.data / "central")]) == 2
    assert "1 to 3650" in capsys.readouterr().err
    assert cli.main(["central", "retention", "set", "45", "--data", str(system.data / "central")]) == 0
    assert cli.main(["central", "retention", "show", "--data", str(system.data / "central")]) == 0
    assert "45 days" in capsys.readouterr().out


def test_a_search_leaves_no_name_or_id_number_in_the_access_log(system, http):
    """uvicorn's access log (journald, a log file) would keep a search's words long after a purge."""
    import io
    import logging
    import socket
    import threading
    import time
    from urllib.parse import quote

    import uvicorn

    from node.app import create_app

    v1 = system.stations["V1"]
    name, id_number, _ = PEOPLE["old"]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(v1["settings"], background_sync=False), log_level="info",
                                           lifespan="on", access_log=True))
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    logging.getLogger("uvicorn.access").addHandler(handler)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.01)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        page, _ = log_in(http, url, "agent")
        assert page.get("/search", params={"q": name}).status_code == 200
        api = http(url, v1["token"])
        assert api.get("/api/v1/applications", params={"q": id_number}).status_code == 200
        assert api.get("/api/v1/applications", params={"q": id_number[-6:]}).status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        logging.getLogger("uvicorn.access").removeHandler(handler)
    text = captured.getvalue()
    assert "GET /search?…" in text and "GET /api/v1/applications?…" in text        # the requests are logged
    for secret in (name, quote(name), id_number, id_number[-6:]):
        assert secret not in text, secret


def settle_holding_stubs(st, url: str) -> None:
    """Sync until nothing waits upstream. The county lacks downstream events this station holds only
    as stubs: it cannot give them back (issue 15: the county takes back only whole events), so
    ``down_return_from`` stays set and the station gives back nothing from there."""
    from dataclasses import replace
    st.county = replace(st.county, url=url)
    for _ in range(5):
        st.sync()
        if not st.sync_state()["up_waiting"]:
            return
    raise AssertionError(f"sync did not settle: {st.sync_state()}")


def test_a_county_restored_from_a_backup_older_than_a_purge_takes_the_stubs_and_sync_goes_on(pair):
    """The county lost a case the station has purged since: the station sends its own stubs again,
    the county checks their signatures, keeps them with their hashes and sets them aside with the
    reason; the county's own purged decision is not given back (a stub is never taken back: its body
    does not hash to the signed hash, issue 15); sync does not stop, and the station's other cases
    come back whole."""
    from central.app import create_app as central_app
    from central.county import County
    from node.services import retention
    from tests.conftest import serve
    from tests.sync.test_recovery import CLERK, copy_db, stream, sync_until_quiet, take

    county, st, root = pair
    csettings = county.settings
    county.store.close()
    copy_db(csettings.data, root / "county-backup")          # a backup older than the purge
    county = County(csettings)
    first, second = take(st, 2)
    with serve(central_app(csettings)) as url:
        sync_until_quiet(st, url)
        county.decide(first["id"], "approve", "", CLERK)
        sync_until_quiet(st, url)
        assert st.hand_out(first["id"], "代办员")
        sync_until_quiet(st, url)
    county.store.close()
    gone = retention.purge(st, dt.datetime.now(CHINA) + dt.timedelta(days=31))
    assert gone["cases"] == [first["receipt_no"]] and gone["events"] == 3
    copy_db(root / "county-backup", csettings.data)          # the county's disk died: restore the backup
    county = County(csettings)
    with serve(central_app(csettings)) as url:
        settle_holding_stubs(st, url)                        # no bad_event: the sync goes through
    county.store.close()
    county = County(csettings)
    try:
        assert stream(county.store.conn, "up/S1") == stream(st.store.conn, "up/S1")     # every hash kept
        assert not county.store.conn.execute("SELECT 1 FROM _sync_events WHERE stream = 'down/S1'"
                                             " AND kind = 'case.decided'").fetchone()  # the stub: not taken back
        assert st.sync_state()["last_error"] is None
        assert county.store.case(first["id"]) is None                                 # purged: not rebuilt
        assert county.store.case(second["id"])["status"] == "received"               # kept: whole again
        reasons = [r[0] for r in county.store.conn.execute("SELECT reason FROM _sync_repairs").fetchall()]
        assert reasons and all("retention period" in r for r in reasons)
    finally:
        county.store.close()


def test_the_chain_check_names_an_edited_body_and_a_stub_nobody_purged(system, http, capsys, monkeypatch):
    """A redacted stub passes only where the purge put it: a body edited in the database, or one
    dressed up as a stub, is named as a problem (exit 1), never passed over and never a crash."""

    v1 = system.stations["V1"]
    node = http(v1["url"], v1["token"])
    node.post("/api/v1/sync")
    item = next(i for i in node.get("/api/v1/catalog").json()["items"] if i["code"].startswith("MZ"))
    for name in ("甲某某", "乙某某"):
        body = full_application(item)
        body["applicant"]["name"] = name
        assert node.post("/api/v1/applications", json=body).status_code == 201
    data = v1["settings"].data
    monkeypatch.setenv(TOKEN_ENV, v1["token"])        # the CLI reads personal data (node/vault.py)
    assert cli.main(["node", "purge", "--data", str(data)]) == 0
    capsys.readouterr()
    store = Store(data / "node.db")                 # the bodies are encrypted: edit them through the store
    assert store.user_by_token(v1["token"])
    try:
        with store.transaction() as conn:
            rows = conn.execute("SELECT seq, body FROM _sync_events WHERE stream = 'up/V1'"
                                " AND kind = 'application.accepted' ORDER BY seq").fetchall()
            first, second = rows
            conn.execute("UPDATE _sync_events SET body = ? WHERE stream = 'up/V1' AND seq = ?",
                         (first[1].replace("甲某某", "丙某某"), first[0]))
            fake = json.loads(second[1])
            fake["applicant"] = {"name": "", "id_number": "", "phone": "", "address": ""}
            fake["_redacted"] = "retention"
            conn.execute("UPDATE _sync_events SET body = ? WHERE stream = 'up/V1' AND seq = ?",
                         (json.dumps(fake, ensure_ascii=False, separators=(",", ":"), sort_keys=True), second[0]))
    finally:
        store.close()
    assert cli.main(["node", "purge", "--data", str(data)]) == 1
    err = capsys.readouterr().err
    assert f"up/V1#{first[0]}: This event's body does not match its hash" in err
    assert f"up/V1#{second[0]}: This event's body does not match its hash" in err


def test_a_restored_county_that_holds_the_application_shows_the_purged_rest_as_signed_and_redacted(pair, http):
    """The county's backup holds the application; the decision and the hand-out came after it and
    the station has purged them since. The hand-out, sent again as a stub, shows in the county's
    history of the case as signed with the personal data removed and is set aside with the reason;
    the county's own decision, a stub at the station, is not taken back (issue 15)."""
    from central.services import ratings as county_ratings
    from central.app import create_app as central_app
    from central.county import County
    from node.services import retention
    from tests.conftest import PASSWORD, serve
    from tests.sync.test_recovery import CLERK, copy_db, sync_until_quiet, take

    county, st, root = pair
    csettings = county.settings
    county.add_user("boss", "督办", PASSWORD, "supervisor", None)
    (case,) = take(st, 1)
    with serve(central_app(csettings)) as url:
        sync_until_quiet(st, url)                            # the county holds the application
    county.store.close()
    copy_db(csettings.data, root / "county-backup")
    county = County(csettings)
    with serve(central_app(csettings)) as url:
        county.decide(case["id"], "approve", "申请人0材料齐全", CLERK)
        sync_until_quiet(st, url)
        assert st.hand_out(case["id"], "代办员")
        sync_until_quiet(st, url)
    county.store.close()
    assert retention.purge(st, dt.datetime.now(CHINA) + dt.timedelta(days=31))["cases"] == [case["receipt_no"]]
    copy_db(root / "county-backup", csettings.data)
    county = County(csettings)
    with serve(central_app(csettings)) as url:
        settle_holding_stubs(st, url)
        held = county.store.case(case["id"])
        entries = {e["kind"]: e for e in county_ratings.history_of(county, held)}
        assert entries["application.accepted"]["signature"] == "valid"               # from the backup, whole
        assert "case.decided" not in entries                                         # a stub: not taken back
        assert entries["application.handed_out"]["signature"] == "redacted"
        assert "retention period" in entries["application.handed_out"]["set_aside"]
        page, _ = log_in(http, url, "boss")
        row = page.get(f"/cases/{case['id']}").text.split('data-kind="application.handed_out"')[1].split("</tr>")[0]
        assert "个人信息已按保留期删除" in row and "验证不通过" not in row
    county.store.close()


def test_a_purge_reaches_the_copies_kept_as_evidence_of_a_fork_and_waits_for_a_case_in_flight(pair):
    """Besides the log, a station keeps whole events in two side tables: a county event that did
    not fit its log (``_sync_forks``, evidence) and its own events set aside while it heals
    (``_sync_displaced``, still to be sent as signed). A purge blanks the first like the log's own
    copies, and leaves a case with an event in the second alone until it has gone up."""
    from node.services import retention
    from sync import inbox, log
    from sync.log import Event
    from tests.sync.test_recovery import CLERK, round_trip, take

    county, st, _root = pair
    first, second = take(st, 2)
    round_trip(county, st)
    for case in (first, second):
        county.decide(case["id"], "approve", "", CLERK)
    round_trip(county, st)
    for case in (first, second):
        assert st.hand_out(case["id"], "代办员")
    round_trip(county, st)
    names = dict(st.store.conn.execute("SELECT id, applicant_name FROM applications").fetchall())
    with st.store.transaction() as db:
        down = log.events_after(db, log.down(st.code), 0)
        decided = next(ev for ev in down if ev.body.get("id") == first["id"])
        other = Event(**{**decided.content(), "body": {**decided.body, "note": f"{names[first['id']]}的材料已核"}},
                      hash="f" * 64, sig=decided.sig)
        inbox._fork(db, other, "a county event that does not fit the log")
        mine = next(ev for ev in log.events_after(db, log.up(st.code), 0) if ev.body.get("id") == second["id"])
        db.execute("INSERT INTO _sync_displaced (stream, seq, hash, event, at) VALUES (?, ?, ?, ?, ?)",
                   (mine.stream, mine.seq, mine.hash, json.dumps(mine.to_wire(), ensure_ascii=False), log.utcnow()))
    fork_text = lambda: st.store.conn.execute("SELECT event FROM _sync_forks").fetchone()[0]  # noqa: E731
    assert names[first["id"]] in fork_text()

    later = dt.datetime.now(CHINA) + dt.timedelta(days=31)
    gone = retention.purge(st, later)
    assert gone["cases"] == [first["receipt_no"]]           # the second waits: an event of it is in flight
    assert names[first["id"]] not in fork_text() and '"_redacted"' in fork_text()
    assert json.loads(fork_text())["hash"] == "f" * 64       # the evidence keeps its hash and signature
    with st.store.transaction() as db:
        db.execute("DELETE FROM _sync_displaced")            # healed: re-appended and sent
    assert retention.purge(st, later)["cases"] == [second["receipt_no"]]
