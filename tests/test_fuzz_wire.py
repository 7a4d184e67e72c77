"""A short fuzz in the test suite: whatever bytes arrive, the wire parsers answer with success or one
of our defined errors, never anything else (bench/fuzz_wire.py runs the same generators 1,000,000
times). Real keys, a real county with an enrolled station on a scratch SQLite."""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from bench import fuzz_wire
from crypto import canonical, envelope
from crypto.errors import BadEncoding


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    h = fuzz_wire.Harness(tmp_path_factory.mktemp("fuzz"))
    logging.disable(logging.CRITICAL)
    yield h
    logging.disable(logging.NOTSET)
    h.county.store.close()
    h.station.store.close()


def outcome(target, call):
    try:
        call()
        return "ok"
    except fuzz_wire.ALLOWED[target] as exc:
        code = getattr(exc, "code", "?")
        assert not (target == "county" and code in fuzz_wire.GENERIC_CODES), f"generic code {code}: {exc}"
        return type(exc).__name__


@given(seed=st.integers(min_value=0, max_value=2**40))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_generated_inputs_end_in_success_or_a_defined_error(harness, seed):
    target, call = harness.one(seed)
    outcome(target, call)


@given(data=st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_any_bytes_are_json_or_bad_encoding(data):
    try:
        value = canonical.loads(data)
    except BadEncoding:
        return
    assert canonical.dumps(value) == data          # what is accepted is exactly canonical


@given(data=st.binary(max_size=400), prefix=st.booleans())
@settings(max_examples=300, deadline=None)
def test_any_bytes_are_an_envelope_or_malformed(data, prefix):
    blob = (b"LMSE\x01" + data) if prefix else data
    outcome("parse", lambda: envelope.parse(blob))


def test_the_county_still_takes_the_real_push_after_the_fuzz(harness):
    harness.county.answer(harness.push)              # nothing the fuzz sent broke the county's state
