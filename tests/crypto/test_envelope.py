from __future__ import annotations

import struct

import pytest
import zstandard
from hypothesis import given, settings, strategies as st

from crypto import canonical, envelope
from crypto.errors import (BadSignature, DecryptionFailed, EnvelopeTooLarge, MalformedEnvelope,
                           WrongRecipient)
from crypto.keys import Identity

STATION, COUNTY, OTHER = Identity.generate(), Identity.generate(), Identity.generate()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)


def seal(payload, sender=STATION, to=COUNTY, to_name="county"):
    return envelope.seal(payload, sender=sender, sender_name="S001", recipient=to.public,
                         recipient_name=to_name, kind="push", extra={"first": 1, "last": 2})


def open_(blob, recipient=COUNTY, sender=STATION, **kw):
    return envelope.open_sealed(blob, recipient=recipient, recipient_name="county",
                                sender=sender.public, **kw)


@given(json_values)
@settings(max_examples=60, deadline=None)
def test_seal_open_round_trip(payload):
    header, out = open_(seal(payload))
    assert out == payload
    assert header["from"] == "S001" and header["first"] == 1


@given(json_values)
def test_canonical_is_stable(value):
    assert canonical.dumps(canonical.loads(canonical.dumps(value))) == canonical.dumps(value)


def test_payload_is_unreadable_on_the_wire():
    blob = seal({"name": "张三丰", "id": "110101199003077777"})
    assert "张三丰".encode() not in blob and b"110101199003077777" not in blob


def test_wrong_key_is_refused():
    blob = seal({"a": 1})
    with pytest.raises(WrongRecipient):
        open_(blob, recipient=OTHER)


def test_forged_sender_is_refused():
    forged = envelope.seal({"a": 1}, sender=OTHER, sender_name="S001", recipient=COUNTY.public,
                           recipient_name="county", kind="push")
    with pytest.raises(BadSignature):
        open_(forged)


@given(st.integers(min_value=0), st.integers(min_value=1, max_value=255))
@settings(max_examples=60, deadline=None)
def test_any_flipped_byte_is_refused(pos, flip):
    blob = bytearray(seal({"events": [1, 2, 3]}))
    blob[pos % len(blob)] ^= flip
    with pytest.raises((MalformedEnvelope, BadSignature, WrongRecipient)):
        open_(bytes(blob))


@given(st.integers(min_value=0))
@settings(max_examples=40, deadline=None)
def test_truncated_is_refused(cut):
    blob = seal({"x": "y" * 50})
    with pytest.raises(MalformedEnvelope):
        open_(blob[: cut % len(blob)])


def test_header_cannot_be_swapped_even_with_a_fresh_signature():
    # An attacker who could re-sign (a stolen station key) still cannot move a ciphertext
    # under another header: the header is bound into HPKE.
    blob = seal({"a": 1})
    p = envelope.parse(blob)
    h2 = dict(p.header, last=99)
    hb = canonical.dumps(h2)
    signed = envelope.MAGIC + bytes([1]) + struct.pack(">I", len(hb)) + hb + struct.pack(">I", len(p.ciphertext)) + p.ciphertext
    with pytest.raises(DecryptionFailed):
        open_(signed + STATION.sign(signed))


def test_oversized_is_refused_before_work():
    with pytest.raises(EnvelopeTooLarge):
        open_(b"LMSE" + b"\0" * 2000, max_size=1000)


def test_compression_bomb_is_refused():
    with pytest.raises(EnvelopeTooLarge):
        open_(seal({"pad": "0" * 3_000_000}), max_payload=1_000_000)
    bomb = zstandard.ZstdCompressor().compress(b"\0" * 10_000_000)
    with pytest.raises(EnvelopeTooLarge):
        envelope.decompress(bomb, 1_000_000)


def test_canonical_refuses_floats_and_duplicate_keys():
    with pytest.raises(Exception):
        canonical.dumps({"a": 1.5})
    with pytest.raises(Exception):
        canonical.loads(b'{"a":1,"a":2}')


def test_lone_surrogates_and_boolean_versions_are_refused():
    with pytest.raises(Exception):
        canonical.loads(b'{"name":"\\ud800"}')
    blob = seal({"a": 1})
    p = envelope.parse(blob)
    hb = canonical.dumps(dict(p.header, v=True))
    forged = envelope.MAGIC + bytes([1]) + struct.pack(">I", len(hb)) + hb + struct.pack(">I", len(p.ciphertext)) + p.ciphertext
    with pytest.raises(MalformedEnvelope):
        envelope.parse(forged + STATION.sign(forged))
