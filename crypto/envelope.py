"""Sealed envelopes: how a batch travels between a station and the county, over HTTP or on a USB stick.

Layout (all integers big-endian)::

    magic   4 bytes  b"LMSE"
    version 1 byte   1
    hlen    4 bytes  length of header
    header  hlen     canonical JSON (crypto.canonical), see PROTOCOL.md
    clen    4 bytes  length of ciphertext
    ct      clen     HPKE single-shot (X25519, HKDF-SHA256, ChaCha20-Poly1305) of zstd(payload),
                     info = b"lastmile-envelope/1|" + header   (binds the header into the encryption)
    sig     64 bytes Ed25519 by the sender over every byte before it

HPKE alone is sender-anonymous, so the sender signs; the receiver checks size, shape and
signature before it spends anything on decryption or decompression.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import x25519

from crypto import canonical
from crypto.errors import (BadEncoding, BadSignature, DecryptionFailed, EnvelopeTooLarge,
                           MalformedEnvelope, WrongRecipient)
from crypto.keys import Identity, PublicKeys, unb64, verify

MAGIC = b"LMSE"
VERSION = 1
INFO_PREFIX = b"lastmile-envelope/1|"
SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
SIG_LEN = 64
MAX_ENVELOPE = 16 * 1024 * 1024     # bytes on the wire
MAX_PAYLOAD = 16 * 1024 * 1024      # bytes after decompression
MAX_HEADER = 4096
MAX_WINDOW = 1 << 23                # zstd window a receiver allocates at most (windowLog 23, level <= 19)
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
FEED = 512                          # compressed bytes per decompression step (<= 16 MiB out per step)
REQUIRED_HEADER = {"v": int, "kind": str, "from": str, "to": str, "from_key": str, "to_key": str,
                   "comp": str, "id": str}


@dataclass(frozen=True, slots=True)
class Parsed:
    header: dict[str, Any]
    signed: bytes       # magic .. ct, what the signature covers
    header_bytes: bytes
    ciphertext: bytes
    signature: bytes


def seal(payload: Any, *, sender: Identity, sender_name: str, recipient: PublicKeys,
         recipient_name: str, kind: str, extra: dict[str, Any] | None = None, level: int = 9) -> bytes:
    """Compress (zstd ``level``), encrypt to ``recipient`` and sign ``payload`` (canonical JSON)."""
    header: dict[str, Any] = {
        "v": VERSION, "kind": kind, "from": sender_name, "to": recipient_name,
        "from_key": sender.public.sign_id, "to_key": recipient.enc_id, "comp": "zstd",
        "id": os.urandom(12).hex(), **(extra or {}),
    }
    header_bytes = canonical.dumps(header)
    if len(header_bytes) > MAX_HEADER:
        raise EnvelopeTooLarge("header too large")
    compressed = zstandard.ZstdCompressor(level=level).compress(canonical.dumps(payload))
    blob = seal_parts(header_bytes, compressed, sender=sender, recipient=recipient)
    if len(blob) > MAX_ENVELOPE:
        raise EnvelopeTooLarge(f"envelope of {len(blob)} bytes exceeds {MAX_ENVELOPE}")
    return blob


def seal_parts(header_bytes: bytes, compressed: bytes, *, sender: Identity, recipient: PublicKeys) -> bytes:
    """Encrypt ``compressed`` with ``header_bytes`` bound in and sign the whole, checking nothing.

    ``seal`` builds every real envelope through this; tests and bench/fuzz_wire.py use it alone to
    make well-signed envelopes around bytes a correct sender would never produce."""
    pub = x25519.X25519PublicKey.from_public_bytes(unb64(recipient.enc))
    ct = SUITE.encrypt(compressed, pub, info=INFO_PREFIX + header_bytes)
    signed = MAGIC + bytes([VERSION]) + struct.pack(">I", len(header_bytes)) + header_bytes \
        + struct.pack(">I", len(ct)) + ct
    return signed + sender.sign(signed)


def _header(raw: bytes) -> dict[str, Any]:
    """The header of an envelope from its canonical bytes; MalformedEnvelope unless it is an object
    with every required field of its type, this version and zstd."""
    try:
        header = canonical.loads(raw)
    except BadEncoding as exc:
        raise MalformedEnvelope(f"unreadable header: {exc}") from exc
    if not isinstance(header, dict):
        raise MalformedEnvelope("header is not an object")
    for name, typ in REQUIRED_HEADER.items():
        if type(header.get(name)) is not typ:
            raise MalformedEnvelope(f"header field {name!r} missing or of the wrong type")
    if header["v"] != VERSION or header["comp"] != "zstd":
        raise MalformedEnvelope("unsupported header version or compression")
    return header


def parse_head(prefix: bytes, *, max_size: int = MAX_ENVELOPE) -> tuple[dict[str, Any], int] | None:
    """The (not yet authenticated) header and the whole envelope's length, read from its first
    bytes as they arrive; None until the header is complete. The checks of ``parse`` that need no
    more than the header, so that a receiver refuses a bad or oversized envelope before it holds
    the rest of it (PROTOCOL.md §5, §7)."""
    if prefix[:4] != MAGIC[:len(prefix[:4])]:
        raise MalformedEnvelope("not a lastmile envelope (bad magic)")
    if len(prefix) >= 5 and prefix[4] != VERSION:
        raise MalformedEnvelope(f"unsupported envelope version {prefix[4]}")
    if len(prefix) < 9:
        return None
    (hlen,) = struct.unpack(">I", prefix[5:9])
    if hlen > MAX_HEADER:
        raise MalformedEnvelope("header length out of range")
    if len(prefix) < 13 + hlen:
        return None
    (clen,) = struct.unpack(">I", prefix[9 + hlen:13 + hlen])
    total = 13 + hlen + clen + SIG_LEN
    if total > max_size:
        raise EnvelopeTooLarge(f"envelope of {total} bytes exceeds {max_size}")
    return _header(prefix[9:9 + hlen]), total


def parse(blob: bytes, *, max_size: int = MAX_ENVELOPE) -> Parsed:
    """Check the outer shape and read the (not yet authenticated) header."""
    if len(blob) > max_size:
        raise EnvelopeTooLarge(f"envelope of {len(blob)} bytes exceeds {max_size}")
    if len(blob) < 4 + 1 + 4 + 4 + SIG_LEN or blob[:4] != MAGIC:
        raise MalformedEnvelope("not a lastmile envelope (bad magic or too short)")
    if blob[4] != VERSION:
        raise MalformedEnvelope(f"unsupported envelope version {blob[4]}")
    (hlen,) = struct.unpack(">I", blob[5:9])
    if hlen > MAX_HEADER or 9 + hlen + 4 > len(blob):
        raise MalformedEnvelope("header length out of range (truncated?)")
    header_bytes = blob[9:9 + hlen]
    (clen,) = struct.unpack(">I", blob[9 + hlen:13 + hlen])
    end = 13 + hlen + clen
    if end + SIG_LEN != len(blob):
        raise MalformedEnvelope("ciphertext length does not match the envelope size (truncated?)")
    return Parsed(_header(header_bytes), blob[:end], header_bytes, blob[13 + hlen:end], blob[end:])


def open_sealed(blob: bytes, *, recipient: Identity | Sequence[Identity], recipient_name: str,
                sender: PublicKeys | Mapping[str, str], max_size: int = MAX_ENVELOPE,
                max_payload: int = MAX_PAYLOAD) -> tuple[dict[str, Any], Any]:
    """Verify, decrypt and decompress; return (header, payload). Raises an EnvelopeError subclass.

    ``recipient``: our identity, or every identity we still hold (current and retired keys): the one
    whose X25519 key id is the header's ``to_key`` opens it (WrongRecipient if none).
    ``sender``: the sender's one key set, or its sign keys by key id (its key history): the header's
    ``from_key`` must name one of them (BadSignature otherwise)."""
    p = parse(blob, max_size=max_size)
    mine = [recipient] if isinstance(recipient, Identity) else list(recipient)
    me = next((i for i in mine if i.public.enc_id == p.header["to_key"]), None)
    if p.header["to"] != recipient_name or me is None:
        raise WrongRecipient(f"envelope is for {p.header['to']!r} key {p.header['to_key']!r},"
                             f" not {recipient_name!r} or a key it holds")
    if isinstance(sender, PublicKeys):
        if p.header["from_key"] != sender.sign_id:
            raise BadSignature("envelope is signed with a key that is not the sender's current key")
        sign_key = sender.sign
    else:
        found = sender.get(p.header["from_key"])
        if found is None:
            raise BadSignature("envelope is signed with a key the sender never announced")
        sign_key = found
    verify(sign_key, p.signature, p.signed)
    try:
        compressed = SUITE.decrypt(p.ciphertext, me.enc_key, info=INFO_PREFIX + p.header_bytes)
    except (InvalidTag, ValueError) as exc:
        raise DecryptionFailed("envelope failed authentication") from exc
    raw = decompress(compressed, max_payload)
    try:
        return p.header, canonical.loads(raw)
    except BadEncoding as exc:
        raise MalformedEnvelope(f"payload is not canonical JSON: {exc}") from exc


def decompress(data: bytes, limit: int) -> bytes:
    """zstd-decompress exactly one frame to at most ``limit`` bytes; more is a compression bomb.

    The frame is fed in small pieces so no single step can expand past the limit by much (a 4-byte
    block may stand for 128 KiB). Anything after the frame (a second frame, a skippable frame,
    stray bytes) is refused, and the frame's window may not exceed MAX_WINDOW, so a hostile frame
    cannot make us allocate more. Linear in ``len(data)`` whatever the frame holds."""
    if data[:4] != ZSTD_MAGIC:
        raise MalformedEnvelope("payload is not a zstd frame")
    dobj = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW).decompressobj()
    out, size = [], 0
    try:
        for at in range(0, len(data), FEED):
            piece = dobj.decompress(data[at:at + FEED])
            size += len(piece)
            if size > limit:
                raise EnvelopeTooLarge(f"payload decompresses to more than {limit} bytes")
            out.append(piece)
            if dobj.eof:
                if dobj.unused_data or at + FEED < len(data):
                    raise MalformedEnvelope("compressed payload is not exactly one zstd frame "
                                            "(bytes after the frame)")
                break
    except zstandard.ZstdError as exc:
        raise MalformedEnvelope(f"payload does not decompress: {exc}") from exc
    if not dobj.eof:
        raise MalformedEnvelope("zstd frame is truncated")
    return b"".join(out)


BLOB_INFO = b"lastmile-blob/1|"
BLOB_OVERHEAD = 32 + 16      # X25519 encapsulated key + ChaCha20-Poly1305 tag


def seal_blob(data: bytes, *, recipient: PublicKeys, digest: str) -> bytes:
    """Encrypt a scan to the county; its SHA-256 (hex, of the plaintext) is bound in as HPKE info."""
    pub = x25519.X25519PublicKey.from_public_bytes(unb64(recipient.enc))
    return SUITE.encrypt(data, pub, info=BLOB_INFO + digest.encode())


def open_blob(sealed: bytes, *, recipient: Identity | Sequence[Identity], digest: str) -> bytes:
    """Decrypt a scan and check it is the one its hash names; raise DecryptionFailed otherwise.

    A sealed scan names no key: with several identities (current and retired keys) each is tried,
    current first; only the right one authenticates (ChaCha20-Poly1305)."""
    data = None
    for me in [recipient] if isinstance(recipient, Identity) else list(recipient):
        try:
            data = SUITE.decrypt(sealed, me.enc_key, info=BLOB_INFO + digest.encode())
            break
        except (InvalidTag, ValueError):
            continue
    if data is None:
        raise DecryptionFailed("scan failed authentication")
    if hashlib.sha256(data).hexdigest() != digest:
        raise DecryptionFailed("scan does not match its hash")
    return data
