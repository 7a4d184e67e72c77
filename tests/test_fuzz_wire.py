"""A short fuzz in the test suite: whatever bytes arrive, the wire parsers answer with success or one
of our defined errors, never anything else (bench/fuzz_wire.py runs the same generators 1,000,000
times). Real keys, a real county with an enrolled station on a scratch SQLite."""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

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


QR_KEYS = st.sampled_from(["1", "2", "3", "4", "0", "01", "-1", "", "1.0", " 1", "99999999999999999999"]) | st.text(max_size=5)
QR_VALUES = (st.text(max_size=30) | st.sampled_from(["", "x" * 2000, "x" * 2001]) | st.integers(-2**53 + 1, 2**53 - 1)
             | st.none() | st.booleans() | st.lists(st.text(max_size=3), max_size=2))


SEQS, TEXTS = st.sampled_from(["1", "2", "3"]), st.text(min_size=1, max_size=30)    # the push's events: 1 to 3


@given(texts=st.dictionaries(SEQS, TEXTS, max_size=3) | st.dictionaries(SEQS | QR_KEYS, TEXTS | QR_VALUES, max_size=5)
       | QR_VALUES, genuine=st.booleans())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_push_s_qr_texts_are_taken_exactly_when_well_formed_and_only_right_texts_are_kept(harness, texts,
                                                                                            genuine):
    """Any ``qr_texts`` beside the real events (PROTOCOL.md §6): the county answers when it is a map of
    at most as many entries as the push has events, each key the seq of one of them, each value a
    string of 1 to 2000 characters; anything else is ``bad_event``, and nothing of it is stored.
    Whatever it answers, the county keeps only the QR texts the station prints for those events."""
    from sync import log
    _, payload = envelope.open_sealed(harness.push, recipient=harness.county.me, recipient_name=harness.county.name,
                                      sender=harness.station.me.public)
    events = payload["events"]
    if genuine and isinstance(texts, dict):
        texts = {**payload["qr_texts"], **texts}          # real entries among the hostile ones
    payload["qr_texts"] = texts
    seqs = {str(e["seq"]) for e in events}
    well_formed = isinstance(texts, dict) and len(texts) <= len(events) and all(
        k in seqs and isinstance(v, str) and 1 <= len(v) <= 2000 for k, v in texts.items())
    blob = envelope.seal(payload, sender=harness.station.me, sender_name=harness.station.code,
                         recipient=harness.county.me.public, recipient_name=harness.county.name, kind="push",
                         extra={"first": events[0]["seq"], "last": events[-1]["seq"]})
    try:
        harness.county.answer(blob)
        outcome = "ok"
    except fuzz_wire.ALLOWED["county"] as exc:
        outcome = getattr(exc, "code", "?")
    event(outcome)
    assert outcome == ("ok" if well_formed else "bad_event"), (texts, outcome)
    with harness.station.store.lock:
        printed = {e.hash: harness.station.qr_texts([e])[e.seq] for e in (
            log.get(harness.station.store.conn, "up/S1", int(k)) for k in seqs)}
    with harness.county.store.lock:
        kept = dict(harness.county.store.conn.execute("SELECT event_hash, qr_text FROM document_qr").fetchall())
    assert kept == printed                  # the genuine ones came with the real push; nothing else ever


def test_the_county_still_takes_the_real_push_after_the_fuzz(harness):
    harness.county.answer(harness.push)              # nothing the fuzz sent broke the county's state
