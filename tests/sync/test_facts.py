"""The seams of the fact registry: every kind has one spec, and one projection at the end that
receives it; the station and the county follow the same transition table."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from central.services import projections as county_projections
from node.services import projections as station_projections
from sync.law import facts, transitions
from sync.law.errors import RuleError
from sync.law.facts import Status


def test_every_kind_has_a_spec_and_a_projection_at_the_right_end():
    assert set(facts.UPSTREAM) | set(facts.DOWNSTREAM) == set(facts.SPECS)
    assert set(facts.UPSTREAM) & set(facts.DOWNSTREAM) == set()
    # the county receives every upstream fact; the station writes (and projects) each of them
    assert set(county_projections.UP) == set(facts.UPSTREAM)
    assert set(station_projections.UP) == set(facts.UPSTREAM)
    # the station receives every downstream fact; the county projects its own (except key rotations)
    assert set(station_projections.DOWN) == set(facts.DOWNSTREAM)
    assert set(county_projections.DOWN) | county_projections.NOT_PROJECTED == set(facts.DOWNSTREAM)
    for kind, spec in facts.SPECS.items():
        assert spec.kind == kind and spec.author in (facts.STATION, facts.COUNTY)


def test_an_unknown_kind_is_refused_in_words():
    with pytest.raises(RuleError) as exc:
        facts.spec("application.from_the_future")
    assert exc.value.message == "Unknown event kind %(kind)s."


def test_to_body_is_the_wire_body_and_names_every_field():
    spec = facts.SPECS[facts.HAND_OUT]
    body = spec.to_body(id="x", by="Li", at="2026-01-05T10:00:00+08:00", identity_checked=True)
    assert body == {"id": "x", "by": "Li", "at": "2026-01-05T10:00:00+08:00", "identity_checked": True}
    with pytest.raises(ValueError):
        spec.to_body(id="x", by="Li")
    with pytest.raises(ValueError):
        spec.to_body(id="x", by="Li", at="t", identity_checked=True, extra=1)


def test_every_status_the_table_names_is_defined_once_and_labelled():
    named = {s for (s, _), t in transitions.TRANSITIONS.items() for s in (s, t) if s is not None}
    assert named <= set(Status.ALL)
    assert set(transitions.STATE_LABELS) == set(Status.ALL) - {Status.ACCEPTED}
    assert set(facts.DECISIONS.values()) == set(Status.DECIDED)


# one case, random facts: both ends walk the same table ------------------------------------------

EVENTS = [*facts.APPLICATION_KINDS, facts.HAND_OUT, facts.SUPPLEMENTED, *(facts.decided(d) for d in facts.DECISIONS)]


def county_walk(events: list[str]) -> tuple[str | None, list[int]]:
    """The county's state after each fact, and the indexes of the facts it refuses (repairs)."""
    state, refused = facts.NEW, []
    for n, event in enumerate(events):
        try:
            state = facts.next_state(state, event, case_id="c")
        except RuleError as exc:
            assert exc.reason()          # a refusal says which rule it broke, in words
            refused.append(n)
    return state, refused


def station_walk(events: list[str]) -> tuple[str | None, list[int]]:
    """The station's view: it takes an application (status ``accepted`` until the county acks it),
    takes decisions as they come, and may hand out only what the table allows."""
    state: str | None = None
    refused = []
    for n, event in enumerate(events):
        if event in facts.APPLICATION_KINDS:
            completing = state == Status.CORRECTION_NOTICE and event != facts.CORRECTION_NOTICE
            if state is not None and not completing:
                refused.append(n)        # a case id is used once, or completed once after a correction notice
                continue
            state = station_projections.TAKEN_STATUS[event]
            if event == facts.ACCEPTED:
                state = Status.RECEIVED  # acked
        elif event == facts.SUPPLEMENTED:
            if state != Status.CORRECTION_REQUESTED:     # Station.supplement's guard
                refused.append(n)
                continue
            state = Status.RECEIVED      # acked
        elif event == facts.HAND_OUT:
            if not station_projections.may_hand_out(state):
                refused.append(n)
                continue
            state = Status.HANDED_OUT
        else:
            try:
                state = facts.next_state(facts.county_state(state), event, case_id="c")
            except RuleError:
                refused.append(n)
    return state, refused


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(EVENTS), max_size=8))
def test_station_and_county_agree_on_state_and_refusals(events):
    assert station_walk(events) == county_walk(events)


@given(st.sampled_from([None, *Status.ALL]))
def test_the_station_hands_out_exactly_what_the_county_accepts(status):
    try:
        facts.next_state(facts.county_state(status), facts.HAND_OUT)
        allowed = True
    except RuleError:
        allowed = False
    assert station_projections.may_hand_out(status) is allowed
    assert allowed is (status in Status.RESULTS)
