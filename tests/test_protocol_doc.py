"""docs/PROTOCOL.md stays true: its worked example is exactly what the code makes, and verifies with
the code's own rules."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import zstandard

from bench import protocol_example
from crypto import canonical, envelope
from crypto.keys import key_id, unb64, verify
from sync import payload as payload_fields
from sync.log import SIG_CONTEXT

DOC = (Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")
EXAMPLE = DOC[DOC.index(protocol_example.START):DOC.index(protocol_example.END)]


def test_the_worked_example_is_what_the_code_makes():
    # Regenerate with `.venv/bin/python bench/protocol_example.py --write` after a deliberate change.
    assert EXAMPLE == protocol_example.section()


def test_worked_example_hash_and_signature_verify():
    station_key = re.search(r"\| station sign \| `([A-Za-z0-9_-]{43})` \| `([0-9a-f]{16})` \|", EXAMPLE)
    content = re.search(r"Test vector:.*?```\n(.*?)\n```", EXAMPLE, re.S).group(1)
    doc_hash = re.search(r'"hash": "([0-9a-f]{64})"', EXAMPLE).group(1)
    doc_sig = re.search(r'"sig": "([A-Za-z0-9_-]{86})"', EXAMPLE).group(1)
    assert canonical.loads(content.encode()) is not None      # strict: the bytes are exactly canonical
    assert hashlib.sha256(content.encode()).hexdigest() == doc_hash
    assert key_id(unb64(station_key.group(1))) == station_key.group(2)
    verify(station_key.group(1), unb64(doc_sig), SIG_CONTEXT + doc_hash.encode())
    assert set(canonical.loads(content.encode())) == {"stream", "seq", "prev", "author", "key", "kind", "at", "body"}


def test_the_example_lengths_are_those_of_real_envelopes_and_the_payloads_are_valid():
    x = protocol_example.build()
    station, county = x["station"], x["county"]
    for kind, head, body, level, (hlen, clen, total), sender, to in (
            ("push", x["push_header"], x["push"], 19, x["push_lengths"], station, county),
            ("answer", x["answer_header"], x["answer"], 9, x["answer_lengths"], county, station)):
        compressed = zstandard.ZstdCompressor(level=level).compress(canonical.dumps(body))
        blob = envelope.seal_parts(head.encode(), compressed, sender=sender, recipient=to.public)
        assert (len(head.encode()), len(blob) - 13 - hlen - 64, len(blob)) == (hlen, clen, total)
        assert blob[5:9] == hlen.to_bytes(4, "big")
        said = f"The push envelope is {total} bytes" if kind == "push" else f"answers ({total} bytes, hlen {hlen}"
        assert said in EXAMPLE
        name = "county" if to is county else "V001"
        header, opened = envelope.open_sealed(blob, recipient=to, recipient_name=name, sender=sender.public)
        assert opened == body and header["kind"] == kind
        payload_fields.check(kind, opened)             # only keys the receivers accept


def test_the_example_payloads_have_the_keys_the_code_sends(tmp_path):
    from bench.fuzz_wire import Harness
    h = Harness(tmp_path)             # a real county and station: a real push and its real answer
    try:
        _, answer = envelope.open_sealed(h.answer, recipient=h.station.me, recipient_name="S1",
                                         sender=h.county.me.public)
        x = protocol_example.build()
        assert set(h.payload) == set(x["push"]) and set(answer) == set(x["answer"])
        assert set(envelope.parse(h.push).header) == set(canonical.loads(x["push_header"].encode()))
        assert set(envelope.parse(h.answer).header) == set(canonical.loads(x["answer_header"].encode()))
    finally:
        h.county.store.close()
        h.station.store.close()


def test_the_key_examples_of_section_3_are_what_the_code_computes():
    """§3's example row (issue 17): both public keys printed, so the key ids and the fingerprint can
    be recomputed from the text alone, and the code computes the same."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

    from crypto.keys import PublicKeys, b64
    row = {m.group(1): m.group(2) for m in re.finditer(r"^\| (`sign` / `enc`|key id|fingerprint) \|[^|]*\| (.*) \|$",
                                                         DOC, re.M)}
    sign, enc = re.findall(r"`(?:sign|enc)` `([A-Za-z0-9_-]{43})`", row["`sign` / `enc`"])
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    made = PublicKeys(sign=b64(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32))).public_key()
                               .public_bytes(*raw)),
                      enc=b64(x25519.X25519PrivateKey.from_private_bytes(bytes(range(32, 64))).public_key()
                              .public_bytes(*raw)))
    assert (sign, enc) == (made.sign, made.enc)
    assert re.findall(r"`([0-9a-f]{16})`", row["key id"]) == [key_id(unb64(sign)), key_id(unb64(enc))]
    assert re.findall(r"`([0-9A-F-]{24})`", row["fingerprint"]) == [made.fingerprint()]
