"""A station with a valid key may still be wrong or hostile: the county re-checks every upstream fact.

Hostile events are signed with the real station's key (``sync.log.append`` into the station's own
database) and pushed by its real sync; the county must store and ack them (PROTOCOL §8.3), set them
aside with a reason a clerk can read in their language, and change nothing else.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import sqlite3
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from central.county import County, Settings as CentralSettings
from crypto.keys import Identity
from node.services import cases
from node.station import Station
from sync import inbox, log, schema
from sync.law import transitions
from sync.law.errors import RuleError
from sync.law.intake import check_application, check_hand_out
from tests.conftest import log_in
from tests.sync.test_protocol_machine import form_for

CHINA = dt.timezone(dt.timedelta(hours=8))
BOSS = {"name": "督办", "role": "supervisor", "department": None}


@pytest.fixture
def v1(system):
    s = Station(system.stations["V1"]["settings"])
    s.store.user_by_token(system.stations["V1"]["token"])   # unlocks (node/vault.py)
    s.sync()
    yield s
    s.store.close()


@pytest.fixture
def t1(system):
    s = Station(system.stations["T1"]["settings"])
    s.store.user_by_token(system.stations["T1"]["token"])   # unlocks (node/vault.py)
    s.sync()
    yield s
    s.store.close()


def county(system) -> County:
    return County(CentralSettings(data=system.data / "central"))


def case_of(system, case_id: str) -> dict[str, Any] | None:
    c = county(system)
    try:
        return c.store.case(case_id)
    finally:
        c.store.close()


def decide(system, case_id: str, decision: str = "approve") -> None:
    c = county(system)
    try:
        c.decide(case_id, decision, "" if decision == "approve" else "请补充材料", BOSS)
    finally:
        c.store.close()


def county_repairs(system, station: str) -> dict[int, dict[str, Any]]:
    conn = sqlite3.connect(system.data / "central" / "central.db")
    try:
        return {r["seq"]: json.loads(r["reason"]) for r in inbox.repairs(conn, log.up(station))}
    finally:
        conn.close()


def forge(s: Station, kind: str, body: Any) -> int:
    """Sign ``body`` with the station's real key as its next upstream event, as a hostile node would."""
    with s.store.transaction() as db:
        return log.append(db, s.me, stream=log.up(s.code), author=s.code, kind=kind, body=body).seq


def take(s: Station, code: str = "RS-001", decision: str = "accept") -> dict[str, Any]:
    item = s.item(code)
    form = form_for(item, 3)
    if decision != "accept":
        form["reason"] = "测试"
    return s.take(code, form, decision, "代办员")


def good_body(s: Station, code: str = "RS-001", level: str | None = None, **changes: Any) -> dict[str, Any]:
    """What the station's own intake code would sign for a fresh application, then ``changes``."""
    now = dt.datetime.now(CHINA)
    item = s.item(code)
    with s.store.transaction() as db:
        seq = log.head(db, log.up(s.code))[0] + 1
    intake = cases.take(item, form_for(item, 5), decision="accept", station=s.code, agent="代办员",
                        catalog_version=int(s.store.catalog()["version"]), now=now,
                        receipt_no=f"{s.code}-{now:%Y%m%d}-{seq:05d}", level=level or s.level)
    return {**copy.deepcopy(intake.body), **changes}


def hand_out_body(case_id: str) -> dict[str, Any]:
    return {"id": case_id, "by": "代办员", "at": dt.datetime.now(CHINA).isoformat(timespec="seconds"),
            "identity_checked": True}


# 1. ownership and state ------------------------------------------------------------------------


def test_a_station_cannot_hand_out_another_stations_case(system, v1, t1, http):
    theirs = take(t1)["id"]
    t1.sync()
    decide(system, theirs)
    seq = forge(v1, "application.handed_out", hand_out_body(theirs))
    v1.sync()

    assert case_of(system, theirs)["status"] == "approved"          # not handed out by a stranger
    assert v1.sync_state()["up_waiting"] == 0                        # stored and acked all the same
    reason = county_repairs(system, "V1")[seq]
    assert reason["m"] == "Station %(author)s sent %(fact)s for case %(id)s, which belongs to station %(owner)s."
    page, _ = log_in(http, system.central_url, "boss")
    problems = page.get("/stations").text.split('id="problems"')[1]
    assert f"站点 V1 提交了属于站点 T1 的办件 {theirs} 的出件" in problems
    node, _ = log_in(http, system.stations["V1"]["url"], "agent")
    assert "站点 V1 提交了属于站点 T1 的办件" in node.get("/").text.split('id="reported"')[1]

    t1.sync()                                                        # the owner still hands it out
    assert t1.hand_out(theirs, "代办员")
    t1.sync()
    assert case_of(system, theirs)["status"] == "handed_out"


def test_a_case_is_handed_out_only_once_decided_and_only_once(system, v1):
    mine = take(v1)["id"]
    v1.sync()
    early = forge(v1, "application.handed_out", hand_out_body(mine))
    unknown = forge(v1, "application.handed_out", hand_out_body("0f5b2a9e-3c4d-4e8f-9a1b-2c3d4e5f6a7b"))
    v1.sync()
    assert case_of(system, mine)["status"] == "received"
    repairs = county_repairs(system, "V1")
    assert repairs[early]["a"]["state"] == "Waiting for decision"
    assert repairs[unknown]["m"] == "%(fact)s names case %(id)s, which the county does not hold."

    decide(system, mine, "correction")
    v1.sync()
    waiting = forge(v1, "application.handed_out", hand_out_body(mine))    # waits for the citizen: nothing to hand out
    v1.sync()
    assert county_repairs(system, "V1")[waiting]["a"]["state"] == "Correction requested"
    v1.supplement(mine, ["id_card"], [], "补交", "代办员")
    v1.sync()
    decide(system, mine, "approve")
    v1.sync()
    assert v1.hand_out(mine, "代办员")["status"] == "handed_out"
    again = forge(v1, "application.handed_out", hand_out_body(mine))
    v1.sync()
    case = case_of(system, mine)
    assert case["status"] == "handed_out"
    assert county_repairs(system, "V1")[again]["a"]["state"] == "Handed out"


def test_an_application_needs_a_new_case_id_and_its_own_station(system, v1, t1):
    theirs = take(t1)
    t1.sync()
    reused = forge(v1, "application.accepted", good_body(v1, id=theirs["id"]))
    named = forge(v1, "application.accepted", good_body(v1, station="T1"))
    fine = forge(v1, "application.accepted", good_body(v1))
    v1.sync()
    repairs = county_repairs(system, "V1")
    assert repairs[reused]["m"].startswith("Case id %(id)s is already held by the county")
    assert repairs[named]["m"].startswith("The application names station %(named)s")
    assert fine not in repairs                                        # nothing behind them is held up
    case = case_of(system, theirs["id"])
    assert case["station"] == "T1" and case["receipt_no"] == theirs["receipt_no"]


# 2. catalogue rules, with the station's own code -------------------------------------------------


def _bad_bodies(s: Station) -> list[tuple[str, Any, str]]:
    """(kind, body, the message id the county must give) for each rule a station can break."""
    acc = "application.accepted"
    b = good_body

    def mutate(fn) -> dict[str, Any]:
        body = good_body(s)
        fn(body)
        return body

    def missing_material(body: dict[str, Any]) -> None:
        body["materials"][0]["received"] = False
        body["missing"] = [body["materials"][0]["code"]]

    def scan(**kw: Any) -> dict[str, Any]:
        return b(s, scans=[{"sha256": "ab" * 32, "size": 1000, "name": "id.jpg", "mime": "image/jpeg",
                            "material": "id_card", **kw}])

    today = dt.datetime.now(CHINA).date()
    valid_id = good_body(s)["applicant"]["id_number"]
    typo_id = valid_id[:-1] + ("0" if valid_id[-1] != "0" else "1")
    return [
        (acc, b(s, item_code="XX-999"), "Item %(code)s is not in catalogue version %(version)s."),
        (acc, b(s, catalog_version=7), "Catalogue version %(version)s was never published."),
        (acc, b(s, "GA-001", level="township"), "Item %(code)s may not be accepted at a station of level %(level)s."),
        (acc, mutate(missing_material), "Required materials are missing: issue a correction notice instead."),
        (acc, mutate(lambda x: x.pop("promised_date")), "An acceptance needs a promised date as YYYY-MM-DD."),
        (acc, b(s, promised_date="2026/12/01"), "An acceptance needs a promised date as YYYY-MM-DD."),
        (acc, b(s, promised_date=(today - dt.timedelta(days=3)).isoformat()),
         "The promised date %(date)s is before the acceptance date."),
        (acc, b(s, time_limit_days=1), "The time limit %(got)s differs from the item's %(want)s working days."),
        (acc, b(s, id="not-a-uuid"), "The case id %(id)s is not a UUID."),
        (acc, b(s, receipt_no="V1-1"), "The receipt number %(receipt)s is not of the form %(station)s-YYYYMMDD-00001."),
        (acc, b(s, receipt_no="T1-20261120-00001"),
         "The receipt number %(receipt)s is not of the form %(station)s-YYYYMMDD-00001."),
        (acc, mutate(lambda x: x["applicant"].update(id_number=typo_id)), "Applicant's %(field)s: %(problem)s"),
        (acc, scan(sha256="AB" * 32), "Scan %(n)s: its SHA-256 is not 64 lowercase hex characters."),
        (acc, scan(sha256="ab" * 31), "Scan %(n)s: its SHA-256 is not 64 lowercase hex characters."),
        (acc, scan(mime="text/html"), "Scan %(n)s: only JPEG images and PDF files are taken."),
        (acc, scan(size=-5), "Scan %(n)s: its size must be a whole number of bytes, at most 4 MiB."),
        (acc, scan(material="passport"), "Scan %(n)s is attached to a material this item does not ask for."),
        (acc, b(s, department="gongan"),
         "The department %(department)s is not the one catalogue version %(version)s names for item %(code)s."),
        (acc, b(s, item_name="假事项"), "The item name %(name)s differs from catalogue version %(version)s."),
        (acc, mutate(lambda x: x["fields"].update(contribution_grade=300)), "Form field %(field)s: %(problem)s"),
        (acc, mutate(lambda x: x["fields"].update(secret="x")), "Form field %(field)s: %(problem)s"),
        (acc, b(s, applicant="王秀英"), "The application's field %(field)s has the wrong type."),
        (acc, mutate(lambda x: x.pop("applicant")), "The application lacks the field %(field)s."),
        (acc, mutate(lambda x: x["applicant"].update(name=["王"])), "Applicant's %(field)s: %(problem)s"),
        (acc, b(s, materials=["id_card"]),
         "The materials list differs from the one catalogue version %(version)s gives for item %(code)s."),
        (acc, b(s, catalog_version=True), "The application's field %(field)s has the wrong type."),
        ("application.refused", b(s, reason=""), "Give the reason for refusing."),
        ("application.handed_out", {"id": 5}, "The hand-out does not name a case id."),
        ("application.from_the_future", {}, "Unknown event kind %(kind)s."),
    ]


def test_the_county_applies_the_stations_intake_rules_to_every_application(system, v1, caplog):
    bad = _bad_bodies(v1)
    seqs = [forge(v1, kind, body) for kind, body, _ in bad]
    fine = good_body(v1)
    fine_seq = forge(v1, "application.accepted", fine)
    with caplog.at_level(logging.WARNING, logger="lastmile.sync"):
        v1.sync()

    repairs = county_repairs(system, "V1")
    got = {seq: repairs.get(seq, {}).get("m") for seq in seqs}
    assert got == {seq: want for seq, (_, _, want) in zip(seqs, bad)}
    assert fine_seq not in repairs and case_of(system, fine["id"])["status"] == "received"
    c = county(system)
    try:
        held = {case["id"] for case in c.store.cases(station="V1", limit=500)}
    finally:
        c.store.close()
    assert held == {fine["id"]}                   # none of the bad ones became a case
    assert v1.sync_state()["up_waiting"] == 0     # all stored and acked (PROTOCOL §8.3)
    assert "Error" not in json.dumps(list(repairs.values()))   # no Python exception text
    assert "set aside for repair" in caplog.text


def test_the_reason_is_shown_in_the_viewers_language(system, v1, http):
    seq = forge(v1, "application.accepted", good_body(v1, item_code="XX-999"))
    forge(v1, "application.accepted", good_body(v1, item_code="<script>alert(1)</script>"))
    v1.sync()
    page, _ = log_in(http, system.central_url, "boss")
    problems = page.get("/stations").text.split('id="problems"')[1]
    assert f"#{seq}" in problems and "事项 XX-999 不在目录第1版中" in problems
    assert "<script>alert(1)" not in problems and "&lt;script&gt;alert(1)" in problems     # shown, never run
    page.get("/lang/en")
    problems = page.get("/stations").text.split('id="problems"')[1]
    assert "Item XX-999 is not in catalogue version 1." in problems
    node, _ = log_in(http, system.stations["V1"]["url"], "agent")
    assert "事项 XX-999 不在目录第1版中" in node.get("/").text.split('id="reported"')[1]


# 3. bugs stay in the log ---------------------------------------------------------------------------


def test_an_internal_error_gives_a_generic_reason_and_the_details_stay_in_the_log(tmp_path, caplog):
    db = sqlite3.connect(tmp_path / "scratch.db", isolation_level=None)
    schema.create(db)
    author = Identity.generate()
    with sqlite3.connect(tmp_path / "author.db", isolation_level=None) as other:
        schema.create(other)
        ev = log.append(other, author, stream="up/S1", author="S1", kind="application.accepted", body={"id": "x"})

    def buggy(_db: Any, event: Any) -> None:
        return {}["secret-internal-detail"]

    with caplog.at_level(logging.WARNING, logger="lastmile.sync"):
        got = inbox.accept(db, stream="up/S1", author="S1", author_sign_key=author.public.sign,
                           events=[ev.to_wire()], apply=buggy)
    assert got.high == 1 and [s for s, _ in got.repairs] == [1]
    stored = inbox.repairs(db)[0]["reason"]
    assert "secret-internal-detail" not in stored and "KeyError" not in stored
    assert json.loads(stored)["m"].startswith("This event could not be processed because of an internal error")
    assert "KeyError" in caplog.text and "secret-internal-detail" in caplog.text


# 4. no body shape makes the rules raise anything but RuleError --------------------------------------

json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=3), max_leaves=8)
CATALOG = json.loads((__import__("pathlib").Path(__file__).parents[2] / "central" / "catalog_demo.json").read_text())
ITEM = CATALOG["items"][1]          # RS-002: int, date and select fields
NOW = dt.datetime(2026, 11, 20, 9, 0, tzinfo=CHINA)
VALID = cases.take(ITEM, {**form_for(ITEM, 1)}, decision="accept", station="V1", agent="a", catalog_version=1,
                   now=NOW, receipt_no="V1-20261120-00001", level="village").body


def test_the_valid_body_passes():
    assert check_application("application.accepted", VALID, author="V1", level="village",
                             catalog=CATALOG)["code"] == ITEM["code"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(VALID) + ["applicant.name", "applicant.id_number", "fields.retire_month",
                                        "fields.contribution_years", "materials.0", "scans"]),
       json_values, st.sampled_from(list(transitions.APPLICATION_KINDS)))
def test_any_field_of_any_type_is_refused_with_a_reason_never_a_crash(path, value, kind):
    body = copy.deepcopy(VALID)
    target, key = body, path
    if "." in path:
        head, key = path.split(".")
        target = body[head]
        key = int(key) if isinstance(target, list) else key
    target[key] = value
    try:
        check_application(kind, body, author="V1", level="village", catalog=CATALOG)
    except RuleError as exc:
        assert json.loads(exc.reason())["m"]
    try:
        check_hand_out({"id": value, "by": value, "at": value, "identity_checked": value})
    except RuleError:
        pass


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_a_whole_body_of_any_shape_is_refused_with_a_reason(body):
    for kind in (*transitions.APPLICATION_KINDS, transitions.HAND_OUT):
        with pytest.raises(RuleError):
            if kind == transitions.HAND_OUT:
                check_hand_out(body)
            else:
                check_application(kind, body, author="V1", level="village", catalog=CATALOG)


def test_the_transition_table_allows_only_the_cases_life():
    assert transitions.next_state(transitions.NEW, "application.accepted") == "received"
    for decided in ("approved", "rejected"):
        assert transitions.next_state(decided, transitions.HAND_OUT) == "handed_out"
    assert transitions.next_state("correction_requested", transitions.SUPPLEMENTED) == "received"
    assert transitions.next_state("correction_notice", "application.accepted") == "received"
    for state in (transitions.NEW, "received", "handed_out", "refused", "correction_notice", "correction_requested"):
        with pytest.raises(RuleError):
            transitions.next_state(state, transitions.HAND_OUT, case_id="x")
    with pytest.raises(RuleError):
        transitions.next_state("received", "application.accepted", case_id="x")
