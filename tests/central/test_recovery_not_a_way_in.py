"""Recovery must not be a way in (issue 15). Written as the attacker would: a real station client with
its own keys, a push built by hand (``envelope.seal``, as ``hostile_push`` in tests/crypto/
test_strict_wire.py does) and a real county over HTTP (the ``system`` fixture). Nothing patched.

1. ``down_return``: a station "gives back" events that claim to be the county's own. The county takes
   back only what it once signed for *that* station, at the numbers it sent them, with a body that
   hashes to the signed hash (never a redacted stub), and never re-projects a catalogue, calendar,
   retention or directory fact from a give-back.
2. ``up_return``: a copy of a station's disk (its keys in clear) cannot pull the station's whole
   upstream log from the county: the county returns a station's own log only after the county has
   marked the station restored or replaced (``lastmile central station restore``, one-time, 24 h).
"""

from __future__ import annotations

import copy
import json
import sqlite3
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as strat

from central.county import County, Settings as CentralSettings
from crypto import canonical, envelope
from node.station import Station
from sync import exchange, log
from tests.conftest import CATALOG, log_in
from tests.sync.test_recovery import pair  # noqa: F401 - a county and a station in this process
from tests.sync.test_protocol_machine import form_for


def station(system, code: str) -> Station:
    st = Station(system.stations[code]["settings"])
    st.store.user_by_token(system.stations[code]["token"])      # unlocks (node/vault.py)
    return st


def hand_made_push(st: Station, **fields: Any) -> bytes:
    """A push sealed and signed with the station's real keys, its payload written by hand."""
    with st.store.transaction() as db:
        payload = {"events": [], "down_have": log.head(db, log.down(st.code))[0],
                   "up_high": log.head(db, log.up(st.code))[0], "station_time": log.utcnow()}
    payload.update(fields)
    return envelope.seal(payload, sender=st.me, sender_name=st.code, recipient=st.county.keys,
                         recipient_name=st.county.name, kind="push", extra={"first": 0, "last": 0})


def post(http, system, blob: bytes):
    return http(system.central_url).post("/sync/v1/exchange", content=blob,
                                         headers={"content-type": "application/octet-stream"})


def open_answer(st: Station, blob: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    with st.store.transaction() as db:
        keys = exchange.county_sign_keys(db, st.county.keys)
    return envelope.open_sealed(blob, recipient=st.me, recipient_name=st.code, sender=keys)


def county_db(system) -> sqlite3.Connection:
    return sqlite3.connect(system.data / "central" / "central.db")


def projections(system) -> dict[str, Any]:
    """Every projection the county builds from events: cases, decisions waiting for their case,
    catalogue versions, working-day calendars, reports, ratings (not the logs themselves)."""
    conn = county_db(system)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                  if not r[0].startswith(("_sync", "sqlite_", "_litestream")) and r[0] not in
                  ("stations", "meta", "users", "station_keys", "sessions")]
        return {t: sorted(map(repr, conn.execute(f"SELECT * FROM {t}").fetchall())) for t in tables}
    finally:
        conn.close()


def v1_case(system, http) -> tuple[Station, dict[str, Any]]:
    """V1 takes a 民政 application (最低生活保障) and syncs: the county holds it, waiting for a decision."""
    v1 = station(system, "V1")
    v1.sync()
    item = next(i for i in v1.items() if i["department"] == "minzheng")
    case = v1.take(item["code"], form_for(item, 0), "accept", "代办员")
    v1.sync()
    clerk = http(system.central_url, system.clerk_tokens["minzheng"])
    assert clerk.get(f"/api/v1/cases/{case['id']}").json()["status"] == "received"
    return v1, case


def forged_stub(st: Station, kind: str, body: dict[str, Any], *, seq: int | None = None) -> dict[str, Any]:
    """An event claiming to be the county's, at the end of the station's down/ stream, carrying the
    hash and signature of a genuine county event and a body marked redacted (so the old county did
    not hash it): what a station with nothing but its own keys can make."""
    with st.store.transaction() as db:
        stream = log.down(st.code)
        high, high_hash = log.head(db, stream)
        genuine = log.get(db, stream, 1)
    assert genuine is not None
    return {"stream": stream, "seq": seq or high + 1, "prev": high_hash, "author": genuine.author,
            "key": genuine.key, "kind": kind, "at": log.utcnow(), "body": {**body, "_redacted": "retention"},
            "hash": genuine.hash, "sig": genuine.sig}


# 1. down_return --------------------------------------------------------------------------------

def test_a_station_cannot_give_back_an_approval_of_another_stations_case(system, http):
    v1, case = v1_case(system, http)
    t1 = station(system, "T1")
    t1.sync()
    before = projections(system)
    forged = forged_stub(t1, "case.decided", {"id": case["id"], "decision": "approve", "note": "",
                                              "by": "某科员", "department": "minzheng", "at": log.utcnow()})
    r = post(http, system, hand_made_push(t1, down_return=[forged]))
    assert r.status_code == 422 and r.json()["error"] == "bad_event", r.status_code
    assert projections(system) == before                                  # nothing stored, nothing projected
    clerk = http(system.central_url, system.clerk_tokens["minzheng"])
    assert clerk.get(f"/api/v1/cases/{case['id']}").json()["status"] == "received"
    done = clerk.post(f"/api/v1/cases/{case['id']}/decision", json={"decision": "approve", "note": "符合条件"})
    assert done.status_code == 200 and done.json()["status"] == "approved"    # the real clerk still decides
    t1.sync()                                           # the real T1 is not harmed by its own forgery
    assert t1.sync_state()["last_error"] is None


def test_a_station_cannot_give_back_a_catalogue_version_the_county_never_published(system, http):
    v1, case = v1_case(system, http)
    t1 = station(system, "T1")
    t1.sync()
    forged_catalog = copy.deepcopy(CATALOG)
    forged_catalog["version"] = 99
    forged_catalog["appeal"] = {k: "请向T001站缴费后申诉" if isinstance(v, str) else v
                                for k, v in CATALOG["appeal"].items()}
    r = post(http, system, hand_made_push(t1, down_return=[forged_stub(t1, "catalog.published",
                                                                        {"catalog": forged_catalog})]))
    assert r.status_code == 422 and r.json()["error"] == "bad_event", r.status_code
    county = County(CentralSettings(data=system.data / "central"))
    try:
        assert county.catalog()["version"] == CATALOG["version"]
    finally:
        county.store.close()
    # The rejection that goes down to V1 carries the real appeal text, not T1's.
    clerk = http(system.central_url, system.clerk_tokens["minzheng"])
    done = clerk.post(f"/api/v1/cases/{case['id']}/decision",
                      json={"decision": "reject", "note": "", "reason": "家庭收入超过标准", "basis": "《最低生活保障审核确认办法》第十条"})
    assert done.status_code == 200, done.text
    v1.sync()
    with v1.store.transaction() as db:
        bodies = [e.body for e in log.events_after(db, log.down("V1"), 0, 1000)]
    assert "请向T001站缴费后申诉" not in json.dumps(bodies, ensure_ascii=False)


def test_a_genuine_event_given_back_at_another_number_or_to_another_station_is_refused(system, http):
    """The whole event is hashed now: its stream and number are part of what the county signed."""
    v1, _ = v1_case(system, http)
    t1 = station(system, "T1")
    t1.sync()
    with v1.store.transaction() as db:
        theirs = log.get(db, log.down("V1"), 1)
    with t1.store.transaction() as db:
        high, high_hash = log.head(db, log.down("T1"))
        mine = log.get(db, log.down("T1"), 1)
    assert theirs is not None and mine is not None
    moved = {**mine.to_wire(), "seq": high + 1, "prev": high_hash}           # my own, at a new number
    borrowed = {**theirs.to_wire(), "stream": "down/T1", "seq": high + 1, "prev": high_hash}   # V1's, as mine
    for bad in (moved, borrowed, theirs.to_wire()):
        before = projections(system)
        r = post(http, system, hand_made_push(t1, down_return=[bad]))
        assert r.status_code == 422 and r.json()["error"] == "bad_event", r.status_code
        assert projections(system) == before


MUTATIONS = ("body", "hash", "seq", "stream", "kind", "case_id", "sig", "redact", "prev", "key", "author")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=strat.data())
def test_any_mutation_of_a_returned_event_is_refused_or_changes_nothing(system, http, data):
    """Arbitrary changes to events a station gives back: refused (4xx, nothing stored) or, if
    accepted at all, not one projection at the county changes."""
    t1 = station(system, "T1")
    try:
        if not getattr(system, "t1_synced", False):     # once: every example starts from the same state
            t1.sync()
            system.t1_synced = True
        with t1.store.transaction() as db:
            events = log.events_after(db, log.down("T1"), 0, 100)
        conn = county_db(system)
        try:                                      # where the county's copy ends (a give-back goes there)
            high, high_hash = conn.execute("SELECT seq, hash FROM _sync_events WHERE stream = 'down/T1'"
                                           " ORDER BY seq DESC LIMIT 1").fetchone()
        finally:
            conn.close()
        ev = data.draw(strat.sampled_from(events)).to_wire()
        if data.draw(strat.booleans()):          # given back where the county lacks it: after its head
            ev.update(seq=high + 1, prev=high_hash)
        if data.draw(strat.booleans()):          # a redacted stub: the old county hashed none of it
            ev["body"] = {**ev["body"], "_redacted": "retention"}
        for what in data.draw(strat.lists(strat.sampled_from(MUTATIONS), min_size=1, max_size=4, unique=True)):
            if what == "body":
                key = data.draw(strat.sampled_from(sorted(ev["body"]) or ["x"]))
                value = ev["body"].get(key)
                forged = {**value, "version": 99} if isinstance(value, dict) else {"version": 99}
                ev["body"] = {**ev["body"], key: forged if data.draw(strat.booleans())
                              else data.draw(strat.one_of(strat.text(max_size=8),     # what JSON carries exactly
                                                          strat.integers(-(2 ** 53) + 1, 2 ** 53 - 1)))}
            elif what == "hash":
                ev["hash"] = data.draw(strat.sampled_from([e.hash for e in events] + ["0" * 64]))
            elif what == "seq":
                ev["seq"] = data.draw(strat.sampled_from([high + 1, high + 2, 1, ev["seq"] + 1]))
                ev["prev"] = high_hash if ev["seq"] == high + 1 else ev["prev"]
            elif what == "stream":
                ev["stream"] = data.draw(strat.sampled_from(["down/V1", "up/T1", "down/T2"]))
            elif what == "kind":
                ev["kind"] = data.draw(strat.sampled_from(["case.decided", "case.decided", "catalog.published", "calendar.published",
                                                           "retention.set", "stations.directory", "report.answered",
                                                           "rating.answered", "county.keys_rotated"]))
                if ev["kind"] == "case.decided" and data.draw(strat.booleans()):
                    ev["body"] = {**ev["body"], "id": "V1-case", "decision": "approve", "note": "", "by": "科员",
                                  "department": "minzheng", "at": log.utcnow()}
            elif what == "case_id":
                ev["body"] = {**ev["body"], "id": data.draw(strat.text(min_size=1, max_size=12))}
            elif what == "sig":
                ev["sig"] = data.draw(strat.sampled_from([e.sig for e in events]))
            elif what == "redact":
                ev["body"] = {**ev["body"], "_redacted": "retention"}
            elif what == "prev":
                ev["prev"] = data.draw(strat.sampled_from([high_hash, "0" * 64] + [e.hash for e in events]))
            elif what == "key":
                ev["key"] = t1.me.public.sign_id
            elif what == "author":
                ev["author"] = "T1"
        before = projections(system)
        r = post(http, system, hand_made_push(t1, down_return=[ev]))
        assert r.status_code in (200, 422), r.text
        assert projections(system) == before
    finally:
        t1.store.close()


# 2. up_return ----------------------------------------------------------------------------------

PEOPLE = ("欧阳淑珍", "司马建国")


def v1_with_people(system, http) -> Station:
    """V1 takes two applications with names, ID numbers and phones, and syncs them up."""
    v1 = station(system, "V1")
    v1.sync()
    item = next(i for i in v1.items() if i["department"] == "minzheng")
    for i, name in enumerate(PEOPLE):
        form = {**form_for(item, i), "name": name}
        v1.take(item["code"], form, "accept", "代办员")
    v1.sync()
    return v1


def disk_copy(system, v1: Station, tmp_path) -> Station:
    """What a thief has after copying V1's disk: its data folder, keys in clear. Locked: no token."""
    import shutil
    with v1.store.lock:
        v1.store.conn.execute("PRAGMA wal_checkpoint(FULL)")
    shutil.copytree(v1.settings.data, tmp_path / "stolen")
    from node.settings import Settings as NodeSettings
    return Station(NodeSettings(data=tmp_path / "stolen"))


def test_a_copy_of_a_stations_disk_gets_no_personal_record_back_without_a_restore_mark(system, http, tmp_path):
    v1 = v1_with_people(system, http)
    thief = disk_copy(system, v1, tmp_path)
    for ask in ({"up_from": 1}, {"up_high": 0}):
        r = post(http, system, hand_made_push(thief, **ask))
        assert r.status_code == 200, r.status_code
        header, answer = open_answer(thief, r.content)
        assert "up_return" not in answer and "up_keys" not in answer
        assert header["up_refused"] == "restore_not_marked"
        assert answer["up_high"] >= 2                                 # the head (a number and a hash) only
        assert not any(name in json.dumps(answer, ensure_ascii=False) for name in PEOPLE)
    v1.sync()                                          # the real station notices nothing
    assert v1.sync_state()["last_error"] is None and v1.sync_state()["stall_reason"] is None

    # A clerk cannot mark it; a supervisor can (API), and only then does the county give the log back.
    clerk = http(system.central_url, system.clerk_tokens["minzheng"])
    r = clerk.post("/api/v1/stations/V1/restore")
    assert r.status_code == 403 and r.json()["error"] == "supervisor_only"
    r = post(http, system, hand_made_push(thief, up_from=1))
    assert "up_return" not in open_answer(thief, r.content)[1]
    boss = http(system.central_url, system.central_token)
    assert boss.post("/api/v1/stations/NOPE/restore").status_code == 404
    mark = boss.post("/api/v1/stations/V1/restore")
    assert mark.status_code == 200 and mark.json()["station"] == "V1" and mark.json()["until"]
    listed = {s["code"]: s for s in boss.get("/api/v1/stations").json()["stations"]}
    assert listed["V1"]["restore_until"] and listed["T1"]["restore_until"] is None
    header, answer = open_answer(thief, post(http, system, hand_made_push(thief, up_from=1)).content)
    assert "up_refused" not in header and len(answer["up_return"]) >= 2
    assert all(name in json.dumps(answer["up_return"], ensure_ascii=False) for name in PEOPLE)


def test_a_copy_of_a_stations_disk_cannot_pull_the_countys_decisions_again_without_a_restore_mark(
        system, http, tmp_path):
    """The county's events to a station (decisions with their notes, correction lists) go again
    below what the station confirmed only under the restore mark: a copy of the disk that asks from
    0 gets what comes after V1's confirmed head, and the header says ``down_refused``. A station
    really restored from a backup older than the decisions says it must be marked, and heals once
    it is; the real V1 notices nothing throughout."""
    import shutil

    v1 = v1_with_people(system, http)
    shutil.copytree(v1.settings.data, tmp_path / "backup")       # last night's backup: no decision yet
    with v1.store.lock:
        cases = [r[0] for r in v1.store.conn.execute("SELECT id FROM applications ORDER BY seq")]
    clerk = http(system.central_url, system.clerk_tokens["minzheng"])
    for case in cases:
        note = f"已核实{PEOPLE[cases.index(case)]}家庭收入"
        assert clerk.post(f"/api/v1/cases/{case}/decision", json={"decision": "approve", "note": note}).status_code == 200
    v1.sync()
    with v1.store.transaction() as db:
        confirmed = log.head(db, log.down("V1"))[0]
    assert confirmed >= 2

    thief = disk_copy(system, v1, tmp_path)
    header, answer = open_answer(thief, post(http, system, hand_made_push(thief, down_have=0)).content)
    assert header["down_refused"] == "restore_not_marked"
    assert answer["events"] == [] and answer["down_high"] == confirmed          # nothing it confirmed goes again
    assert "家庭收入" not in json.dumps(answer, ensure_ascii=False)
    v1.sync()
    assert v1.sync_state()["stall_reason"] is None and v1.sync_state()["last_error"] is None

    from node.settings import Settings as NodeSettings
    restored = Station(NodeSettings(data=tmp_path / "backup"))
    restored.store.user_by_token(system.stations["V1"]["token"])
    restored.sync()
    state = restored.sync_state()
    assert state["stall_reason"] == "restore_not_marked" and state["last_error"] is None
    assert {restored.store.application(c)["status"] for c in cases} == {"received"}      # no decision

    boss = http(system.central_url, system.central_token)
    assert boss.post("/api/v1/stations/V1/restore").status_code == 200
    restored.sync()
    assert restored.sync_state()["stall_reason"] is None
    assert {restored.store.application(c)["status"] for c in cases} == {"approved"}
    restored.store.close()
    thief.store.close()


def test_the_stations_page_marks_a_station_restored_for_a_supervisor_only(system, http):
    page, landing = log_in(http, system.central_url, "minzheng")
    assert "/stations/V1/restore" not in page.get("/stations").text          # no button for a clerk
    csrf = page.get("/stations").text.split('name="csrf" value="')[1].split('"')[0] \
        if 'name="csrf"' in page.get("/stations").text else page.cookies.get("csrf", "")
    r = page.post("/stations/V1/restore", data={"csrf": csrf})
    assert r.status_code == 403
    boss, _ = log_in(http, system.central_url, "boss")
    text = boss.get("/stations").text
    assert 'action="/stations/V1/restore"' in text
    csrf = text.split('name="csrf" value="')[1].split('"')[0]
    assert boss.post("/stations/V1/restore", data={"csrf": "wrong"}).status_code == 400       # CSRF
    done = boss.post("/stations/V1/restore", data={"csrf": csrf})
    assert done.status_code == 200 and 'id="restore-marked"' in done.text
    assert 'action="/stations/V1/restore"' not in done.text                  # marked: no button, the time



def test_a_marked_restore_never_brings_back_a_case_purged_under_the_retention_period(pair):
    """The county keeps every body, but gives a restored station a case handed out longer ago than
    the retention period only as its redacted stub: the station had removed it by design."""
    import datetime as dt

    from tests.sync.test_recovery import CLERK, copy_db, round_trip

    county, st, root = pair
    st.store.close()
    copy_db(st.settings.data, root / "station-backup")          # before either case
    st = Station(type(st.settings)(data=st.settings.data))
    item = next(i for i in st.items() if i["department"] == "minzheng")
    old = st.take(item["code"], {**form_for(item, 0), "name": PEOPLE[0]}, "accept", "代办员")
    new = st.take(item["code"], {**form_for(item, 1), "name": PEOPLE[1]}, "accept", "代办员")
    round_trip(county, st)
    county.decide(old["id"], "approve", "", CLERK)
    round_trip(county, st)
    assert st.hand_out(old["id"], "代办员")
    round_trip(county, st)
    st.store.close()
    copy_db(root / "station-backup", st.settings.data)          # the disk dies: restore the backup
    st = Station(type(st.settings)(data=st.settings.data))
    county.now = lambda: dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=31)   # a month later
    county.mark_restored("S1", "installer")
    try:
        answers = [round_trip(county, st) for _ in range(4)]
        returned = []
        for blob in answers:
            with st.store.transaction() as db:
                keys = exchange.county_sign_keys(db, st.county.keys)
            returned += envelope.open_sealed(blob, recipient=st.me, recipient_name="S1", sender=keys)[1].get(
                "up_return", [])
        text = json.dumps(returned, ensure_ascii=False)
        assert PEOPLE[1] in text and PEOPLE[0] not in text
        about_old = [e for e in returned if e["body"].get("id") == old["id"]]
        assert about_old and all(e["body"]["_redacted"] == "retention" for e in about_old)
        assert st.store.application(new["id"])["applicant_name"] == PEOPLE[1]          # healed, whole
        assert st.store.application(old["id"])["applicant_name"] in ("", None)          # healed, a stub
        assert st.sync_state()["stall_reason"] is None
        assert county.restore_mark("S1") is None                # spent once the station held its log again
    finally:
        st.store.close()
