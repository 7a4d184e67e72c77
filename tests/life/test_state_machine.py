"""The transition table at work in the real apps: any sequence of facts on one case, with lost
answers, duplicated pushes and facts a hostile station or county signs anyway. Each end refuses
exactly what the table forbids (the station before it signs, the county on arrival; the station
also checks the county's decisions), and once synced both ends hold the case in the same state.

Real County and Station objects on real SQLite files; the exchange is the real one, in process."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from central.errors import CountyError
from node.services import cases
from sync import inbox, log
from sync.law import facts
from sync.law.errors import RuleError
from sync.law.facts import Status
from tests.sync.test_protocol_machine import form_for, make_pair
from tests.sync.test_recovery import round_trip

CLERK = {"name": "科员", "role": "supervisor", "department": None}
OPS = ("accept", "notice", "refuse", "complete", "approve", "reject", "correction", "supplement", "hand_out",
       "forge_supplement", "forge_hand_out", "forge_accept", "hostile_decision", "sync", "lost_answer", "duplicate")


def county_status(county, case_id):
    case = county.store.case(case_id)
    return case["status"] if case else facts.NEW


def station_status(station, case_id):
    app = station.store.application(case_id)
    return facts.county_state(app["status"]) if app else facts.NEW


def allowed(state, kind) -> bool:
    try:
        facts.next_state(state, kind)
        return True
    except RuleError:
        return False


def settle(county, station):
    for _ in range(3):
        round_trip(county, station)


def repairs(conn, stream):
    return {r["seq"] for r in inbox.repairs(conn, stream)}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(OPS), min_size=1, max_size=14))
def test_any_sequence_of_facts_leaves_both_ends_agreeing(ops):
    root = Path(tempfile.mkdtemp(prefix="lm-life-"))
    county, station = make_pair(root)
    try:
        round_trip(county, station)                                   # the catalogue comes down
        item = next(i for i in station.items() if len(i["materials"]) >= 2)
        form = form_for(item, 1)
        case_id = None
        for op in ops:
            before = station_status(station, case_id) if case_id else facts.NEW
            if op in ("accept", "notice", "refuse", "complete"):
                decision = {"accept": "accept", "notice": "correction", "refuse": "refuse", "complete": "accept"}[op]
                if (op != "complete") == (case_id is not None):
                    continue                                          # one case per test; complete needs it
                f = {**form, "materials": [] if op == "notice" else form["materials"], "reason": "理由"}
                kind = cases.KIND_OF[decision]
                try:
                    app = station.take(item["code"], f, decision, "代办员",
                                       case_id=case_id if op == "complete" else None)
                    case_id = app["id"]
                    assert op != "complete" or (before == Status.CORRECTION_NOTICE and allowed(before, kind))
                except cases.IntakeError:
                    assert op == "complete" and before != Status.CORRECTION_NOTICE
            elif op in ("approve", "reject", "correction") and case_id:
                before_county = county_status(county, case_id)
                try:
                    county.decide(case_id, op, "说明", CLERK,
                                  **({"reason": "不符合条件", "basis": "《办法》第五条"} if op == "reject" else {}))
                    assert allowed(before_county, facts.decided(op))
                except CountyError as exc:
                    assert exc.status == (404 if before_county is None else 409)
                    assert not allowed(before_county, facts.decided(op))
            elif op == "supplement" and case_id:
                try:
                    station.supplement(case_id, [item["materials"][0]["code"]], [], "补交", "代办员")
                    assert allowed(before, facts.SUPPLEMENTED) and before == Status.CORRECTION_REQUESTED
                except cases.IntakeError:
                    assert not allowed(before, facts.SUPPLEMENTED)
            elif op == "hand_out" and case_id:
                try:
                    station.hand_out(case_id, "代办员")
                    assert allowed(before, facts.HAND_OUT)
                except cases.IntakeError:
                    assert not allowed(before, facts.HAND_OUT)
            elif op.startswith("forge_") and case_id:
                # a hostile station signs a fact its own guards would refuse, and syncs it at once
                settle(county, station)
                state = county_status(county, case_id)
                kind, body = {
                    "forge_supplement": (facts.SUPPLEMENTED, {"id": case_id, "by": "x", "at": "2026-11-28T10:00:00+08:00",
                                                              "materials": [item["materials"][0]["code"]], "note": ""}),
                    "forge_hand_out": (facts.HAND_OUT, {"id": case_id, "by": "x", "at": "2026-11-28T10:00:00+08:00",
                                                        "identity_checked": True}),
                    "forge_accept": (facts.ACCEPTED, dict(station.store.application(case_id)["body"])),
                }[op]
                if op == "forge_accept" and "promised_date" not in body:
                    continue
                with station.store.transaction() as db:
                    seq = log.append(db, station.me, stream=log.up(station.code), author=station.code, kind=kind,
                                     body=body).seq
                round_trip(county, station)
                with county.store.transaction() as db:
                    set_aside = seq in repairs(db, log.up(station.code))
                assert set_aside is not allowed(state, kind), (op, state)
                if set_aside:
                    assert county_status(county, case_id) == state      # nothing changed
                else:                                                   # a legal fact the station skipped its guards for
                    return                                              # (its own projection was bypassed): stop here
            elif op == "hostile_decision" and case_id:
                # a county key signs a decision on a case that is not waiting for one: the station sets it aside
                settle(county, station)
                state = station_status(station, case_id)
                if allowed(state, facts.decided("approve")):
                    continue
                with county.store.transaction() as db:
                    ev = county._send_down(db, station.code, facts.CASE_DECIDED, {
                        "id": case_id, "decision": "approve", "note": "", "by": "x", "department": item["department"],
                        "at": log.utcnow()})
                round_trip(county, station)
                with station.store.transaction() as db:
                    assert ev.seq in repairs(db, log.down(station.code))
                assert station_status(station, case_id) == state
                return                                                  # the county's own row now disagrees by design
            elif op == "sync":
                round_trip(county, station)
            elif op == "lost_answer":
                round_trip(county, station, take_answer=False)
            elif op == "duplicate":
                with station.store.transaction() as db:
                    from sync import exchange
                    push = exchange.build_push(db, me=station.me, station=station.code, county=station.county.keys,
                                               county_name=station.county.name)
                county.answer(push.blob)
                county.answer(push.blob)                                # the same push twice: stored once
        if case_id is None:
            return
        settle(county, station)
        assert station_status(station, case_id) == county_status(county, case_id)
        assert len(county.store._all("SELECT id FROM cases")) == 1
    finally:
        county.store.close()
        station.store.close()
        shutil.rmtree(root, ignore_errors=True)
