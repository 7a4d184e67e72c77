"""Envelopes on a USB stick: a bundle file is a small header and a sequence of length-prefixed envelopes.

Layout (PROTOCOL.md §7, USB bundles): magic ``b"LMBNDL2\\n"``, a 4-byte big-endian header length,
the header (canonical JSON: ``id``, ``kind`` and, in an answer bundle, ``in_reply_to``: the id of the
bundle it answers), then per envelope a 4-byte big-endian length and the envelope bytes
(crypto.envelope, unchanged). A push bundle goes from a station to the county; an answer bundle
comes back. Everything that matters in it is sealed and signed (each answer envelope names the push
envelope it answers), so the stick may be lost or copied; the header lets a station refuse, before
opening anything, an answer file to a bundle it never exported.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from crypto import canonical, envelope
from crypto.errors import BadEncoding, EnvelopeTooLarge, MalformedEnvelope

MAGIC = b"LMBNDL2\n"
OLD_MAGIC = b"LMBNDL1\n"
MAX_ENVELOPES = 10_000
MAX_HEADER = 4096
_ID = re.compile(r"[0-9a-f]{24}")


@dataclass(frozen=True, slots=True)
class Bundle:
    id: str
    kind: str                     # "push" or "answer"
    in_reply_to: str | None       # answer bundles: the id of the push bundle answered
    envelopes: list[bytes]


def new_id() -> str:
    return os.urandom(12).hex()


def write(path: Path, envelopes: list[bytes], *, kind: str = "push", bundle_id: str | None = None,
          in_reply_to: str | None = None) -> int:
    """Write atomically (temporary file, fsync, rename) so a pulled stick never holds half a bundle."""
    header: dict[str, str] = {"id": bundle_id or new_id(), "kind": kind}
    if in_reply_to is not None:
        header["in_reply_to"] = in_reply_to
    head = canonical.dumps(header)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack(">I", len(head)))
        f.write(head)
        for blob in envelopes:
            f.write(struct.pack(">I", len(blob)))
            f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path.stat().st_size


def read(path: Path) -> Bundle:
    """Return the bundle; raise MalformedEnvelope for a file that is not one (as a whole)."""
    data = path.read_bytes()
    if data.startswith(OLD_MAGIC):
        raise MalformedEnvelope(f"{path} is a bundle of an older version (no bundle id); export it again")
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise MalformedEnvelope(f"{path} is not a lastmile bundle")
    pos = len(MAGIC)
    (hlen,) = struct.unpack(">I", data[pos:pos + 4])
    if hlen > MAX_HEADER or pos + 4 + hlen > len(data):
        raise MalformedEnvelope(f"{path}: bundle header length out of range (truncated?)")
    try:
        header = canonical.loads(data[pos + 4:pos + 4 + hlen])
    except (BadEncoding, ValueError, RecursionError) as exc:
        raise MalformedEnvelope(f"{path}: unreadable bundle header") from exc
    if not isinstance(header, dict) or set(header) - {"id", "kind", "in_reply_to"}:
        raise MalformedEnvelope(f"{path}: bundle header is not an object of id, kind, in_reply_to")
    kind, bid, reply = header.get("kind"), header.get("id"), header.get("in_reply_to")
    if kind not in ("push", "answer") or not isinstance(bid, str) or not _ID.fullmatch(bid):
        raise MalformedEnvelope(f"{path}: bundle header lacks a valid id or kind")
    if (kind == "answer") != isinstance(reply, str) or (reply is not None and not _ID.fullmatch(str(reply))):
        raise MalformedEnvelope(f"{path}: an answer bundle, and only one, names the bundle it answers")
    out: list[bytes] = []
    pos += 4 + hlen
    while pos < len(data):
        if pos + 4 > len(data):
            raise MalformedEnvelope(f"{path} is truncated")
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        if n > envelope.MAX_ENVELOPE:
            raise EnvelopeTooLarge(f"{path} holds an envelope of {n} bytes")
        if pos + 4 + n > len(data):
            raise MalformedEnvelope(f"{path} is truncated")
        out.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
        if len(out) > MAX_ENVELOPES:
            raise MalformedEnvelope(f"{path} holds too many envelopes")
    return Bundle(bid, kind, reply, out)
