"""The wire parser is strict and bounded: whatever arrives, the county answers a clear 4xx,
never a 500, and stores nothing. Real county server, real SQLite, real envelopes."""

from __future__ import annotations


import pytest
import zstandard

from central.county import County, Settings as CentralSettings
from crypto import canonical, envelope
from crypto.errors import BadEncoding, MalformedEnvelope
from crypto.keys import Identity
from node.station import Station
from tests.conftest import stored
from tests.sync.test_protocol_machine import form_for

STATION, COUNTY = Identity.generate(), Identity.generate()


# -- the parser alone ------------------------------------------------------------------------

@pytest.mark.parametrize("raw, why", [
    (b'{"n":' + b"7" * 5000 + b"}", "integer"),                # Python's digit limit: ValueError before
    (b'{"n":-' + b"9" * 20 + b"}", "integer"),
    (b"[" * 100_000 + b"]" * 100_000, "JSON"),                  # deeper than the C parser recurses
    (b"[" * 40 + b"]" * 40, "nested"),
    (b"[" + b"[]," * 600_000 + b"[]]", "too many values"),     # 1.8 MB that would build 600,000 lists
    (b'{"a":1, "b":2}', "canonical"),                           # white space
    (b'{"b":1,"a":2}', "canonical"),                            # key order
    (b'{"a":"\\u00e9"}', "canonical"),                          # escaped non-ASCII
    (b'{"a":-0}', "canonical"),
    (b' {"a":1}', "canonical"),
    (b'{"a":1}\n', "canonical"),
    (b"\xff", "JSON"),
    (b'{"a":1e3}', "floats"),
])
def test_every_bad_input_is_a_bad_encoding_with_a_reason(raw, why):
    with pytest.raises(BadEncoding, match=why):
        canonical.loads(raw)


def test_canonical_bytes_still_pass_and_lenient_mode_exists_for_display():
    value = {"名": "王秀英", "n": -9007199254740991, "l": [True, None, "\u001f/"]}
    assert canonical.loads(canonical.dumps(value)) == value
    assert canonical.loads(b'{"b":1, "a":2}', strict=False) == {"a": 2, "b": 1}


def test_many_values_inside_strings_do_not_count():
    text = "[]," * 600_000
    assert canonical.loads(canonical.dumps({"note": text})) == {"note": text}


def seal_raw(payload_bytes: bytes, *, extra_frame: bytes = b"", header: dict | None = None,
             header_bytes: bytes | None = None) -> bytes:
    compressed = zstandard.ZstdCompressor(level=3).compress(payload_bytes) + extra_frame
    head = header or {"v": 1, "kind": "push", "from": "S1", "to": "county", "from_key": STATION.public.sign_id,
                      "to_key": COUNTY.public.enc_id, "comp": "zstd", "id": "00" * 12}
    hb = header_bytes if header_bytes is not None else canonical.dumps(head)
    return envelope.seal_parts(hb, compressed, sender=STATION, recipient=COUNTY.public)


def open_(blob):
    return envelope.open_sealed(blob, recipient=COUNTY, recipient_name="county", sender=STATION.public)


def test_exactly_one_zstd_frame_is_accepted():
    good = canonical.dumps({"events": [], "down_have": 0})
    assert open_(seal_raw(good))[1] == {"events": [], "down_have": 0}
    second = zstandard.ZstdCompressor().compress(b'{"evil":1}')
    skippable = b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"ab12"
    for extra in (second, b"\0", skippable):
        with pytest.raises(MalformedEnvelope, match="one zstd frame"):
            open_(seal_raw(good, extra_frame=extra))


def test_a_non_canonical_header_is_refused_even_when_signed():
    head = {"v": 1, "kind": "push", "from": "S1", "to": "county", "from_key": STATION.public.sign_id,
            "to_key": COUNTY.public.enc_id, "comp": "zstd", "id": "00" * 12}
    spaced = canonical.dumps(head).replace(b",", b", ")
    with pytest.raises(MalformedEnvelope, match="canonical"):
        envelope.parse(seal_raw(b"{}", header_bytes=spaced))


# -- the county, over HTTP -------------------------------------------------------------------

@pytest.fixture
def v1(system):
    st = Station(system.stations["V1"]["settings"])
    st.store.user_by_token(system.stations["V1"]["token"])   # unlocks (node/vault.py)
    st.sync()
    item = st.items()[0]
    st.take(item["code"], form_for(item, 0), "accept", "代办员")
    yield st
    st.store.close()


def hostile_push(system, st: Station, case: str) -> bytes:
    """A push signed and sealed with the station's real keys, but with bytes a correct sender never makes."""
    county = County(CentralSettings(data=system.data / "central"))
    try:
        from sync import log
        with st.store.transaction() as db:
            events = [e.to_wire() for e in log.events_after(db, log.up("V1"), 0, 10)]
        payload = {"events": events, "down_have": 1}
        raw = canonical.dumps(payload)
        extra = b""
        if case == "huge_int":
            raw = raw.replace(b'"down_have":1', b'"down_have":' + b"1" * 5000)
        elif case == "not_canonical":
            raw = raw.replace(b",", b", ")
        elif case == "second_frame":
            extra = zstandard.ZstdCompressor().compress(b'{"events":[],"down_have":0}')
        elif case == "deep":
            raw = raw[:-1] + b',"x":' + b"[" * 40 + b"]" * 40 + b"}"
        elif case == "unknown_key":
            raw = canonical.dumps({**payload, "zzz_extension": 1})
        elif case == "bool_down_have":
            raw = canonical.dumps({**payload, "down_have": True})
        elif case == "negative_down_have":
            raw = canonical.dumps({**payload, "down_have": -1})
        elif case == "negative_up_high":
            raw = canonical.dumps({**payload, "up_high": -1})
        elif case == "up_from_zero":
            raw = canonical.dumps({**payload, "events": [], "up_from": 0})
        elif case == "up_from_with_events":
            raw = canonical.dumps({**payload, "up_from": 1})
        elif case.startswith("qr_"):             # the QR texts beside the events (PROTOCOL.md §6)
            text = st.qr_texts([log.Event.from_wire(e) for e in events])[1]
            raw = canonical.dumps({**payload, "qr_texts": {
                "qr_not_a_map": [text], "qr_seq_not_in_push": {"2": text}, "qr_seq_leading_zero": {"01": text},
                "qr_seq_zero": {"0": text}, "qr_more_than_events": {"1": text, "2": text},
                "qr_text_not_a_string": {"1": 7}, "qr_text_empty": {"1": ""},
                "qr_text_too_long": {"1": text + "x" * 2000}}[case]})
        elif case.startswith("applied_"):        # what the station applied (PROTOCOL.md §6)
            raw = canonical.dumps({**payload, "applied": {
                "applied_not_a_map": [1, 1, False], "applied_missing_key": {"down": 1, "catalog": 1},
                "applied_extra_key": {"down": 1, "catalog": 1, "locked": False, "x": 1},
                "applied_negative": {"down": -1, "catalog": 1, "locked": False},
                "applied_bool_down": {"down": True, "catalog": 1, "locked": False},
                "applied_locked_not_bool": {"down": 1, "catalog": 1, "locked": 0},
                "applied_beyond_have": {"down": 2, "catalog": 1, "locked": False}}[case]})
        head = {"v": 1, "kind": "push", "from": "V1", "to": county.name, "from_key": st.me.public.sign_id,
                "to_key": county.me.public.enc_id, "comp": "zstd", "id": "ab" * 12, "first": 1, "last": 1}
        compressed = zstandard.ZstdCompressor().compress(raw) + extra
        return envelope.seal_parts(canonical.dumps(head), compressed, sender=st.me, recipient=county.me.public)
    finally:
        county.store.close()


@pytest.mark.parametrize("case, status, code, words", [
    ("huge_int", 400, "malformed_envelope", "integer"),
    ("not_canonical", 400, "malformed_envelope", "canonical"),
    ("second_frame", 400, "malformed_envelope", "one zstd frame"),
    ("deep", 400, "malformed_envelope", "nested"),
    ("unknown_key", 422, "bad_event", "unknown fields: zzz_extension"),
    ("bool_down_have", 422, "bad_event", "down_have"),
    ("negative_down_have", 422, "bad_event", "down_have"),
    ("negative_up_high", 422, "bad_event", "'up_high' must not be negative"),
    ("up_from_zero", 422, "bad_event", "'up_from' must be at least 1"),
    ("up_from_with_events", 422, "bad_event", "asks for its own log back (up_from) carries no events"),
    ("qr_not_a_map", 422, "bad_event", "'qr_texts' has the wrong type"),
    ("qr_seq_not_in_push", 422, "bad_event", "'2' is not the seq of an event in this push"),
    ("qr_seq_leading_zero", 422, "bad_event", "'01' is not the seq of an event in this push"),
    ("qr_seq_zero", 422, "bad_event", "'0' is not the seq of an event in this push"),
    ("qr_more_than_events", 422, "bad_event", "has 2 entries for 1 events"),
    ("qr_text_not_a_string", 422, "bad_event", "the text for 1 is not a string of 1 to 2000 characters"),
    ("qr_text_empty", 422, "bad_event", "the text for 1 is not a string of 1 to 2000 characters"),
    ("qr_text_too_long", 422, "bad_event", "the text for 1 is not a string of 1 to 2000 characters"),
    ("applied_not_a_map", 422, "bad_event", "'applied' has the wrong type"),
    ("applied_missing_key", 422, "bad_event", "'applied' must have exactly down, catalog and locked"),
    ("applied_extra_key", 422, "bad_event", "'applied' must have exactly down, catalog and locked"),
    ("applied_negative", 422, "bad_event", "'applied': down has the wrong type or is negative"),
    ("applied_bool_down", 422, "bad_event", "'applied': down has the wrong type or is negative"),
    ("applied_locked_not_bool", 422, "bad_event", "'applied': locked has the wrong type"),
    ("applied_beyond_have", 422, "bad_event", "'applied': down is beyond down_have"),
])
def test_the_county_refuses_hostile_payloads_with_a_clear_4xx_and_stores_nothing(system, v1, http, case, status,
                                                                                  code, words):
    before = stored(system)
    r = http(system.central_url).post("/sync/v1/exchange", content=hostile_push(system, v1, case),
                                      headers={"content-type": "application/octet-stream"})
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code and words in body["message"] and "details" in body
    assert stored(system) == before
    v1.sync()                                        # the real station is not harmed either
    assert stored(system)[1] == before[1] + 1


def test_an_unterminated_string_of_escaped_quotes_is_refused_in_linear_time():
    import time
    started = time.perf_counter()
    for data in (b'["' + b'\\"' * 200_000, b'["' + b'\\"' * 200_000 + b"\\", b'"' * 400_000):
        with pytest.raises(BadEncoding):
            canonical.loads(data)
    assert time.perf_counter() - started < 2.0      # quadratic scanning took minutes for these


@pytest.mark.parametrize("signed_by_station, to_key, status, code", [
    (False, "wrong", 401, "bad_signature"),      # both wrong: the signature is checked first (§5)
    (True, "wrong", 421, "wrong_recipient"),
    (False, "right", 401, "bad_signature"),
])
def test_the_county_checks_the_signature_before_the_recipient_as_section_5_orders(
        system, v1, http, signed_by_station, to_key, status, code):
    """PROTOCOL.md §5 (issue 17, spec item 1): sender known, then the envelope signature, then
    ``to``/``to_key``; an envelope failing both is refused for its signature (401), never 421."""
    county = County(CentralSettings(data=system.data / "central"))
    try:
        head = {"v": 1, "kind": "push", "from": "V1", "to": county.name, "from_key": v1.me.public.sign_id,
                "to_key": county.me.public.enc_id if to_key == "right" else "0" * 16, "comp": "zstd",
                "id": "cd" * 12, "first": 0, "last": 0}
        compressed = zstandard.ZstdCompressor().compress(canonical.dumps({"events": [], "down_have": 0}))
        blob = envelope.seal_parts(canonical.dumps(head), compressed,
                                   sender=v1.me if signed_by_station else Identity.generate(),
                                   recipient=county.me.public)
    finally:
        county.store.close()
    before = stored(system)
    r = http(system.central_url).post("/sync/v1/exchange", content=blob,
                                      headers={"content-type": "application/octet-stream"})
    assert (r.status_code, r.json()["error"]) == (status, code)
    assert stored(system) == before
