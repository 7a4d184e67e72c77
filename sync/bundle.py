"""Envelopes on a USB stick: a bundle file is a sequence of length-prefixed envelopes.

Layout: magic ``b"LMBNDL1\\n"`` then, per envelope, a 4-byte big-endian length and the envelope
bytes (crypto.envelope, unchanged). A push bundle goes from a station to the county; an answer
bundle comes back. Everything in it is sealed and signed, so the stick may be lost or copied.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from crypto import envelope
from crypto.errors import EnvelopeTooLarge, MalformedEnvelope

MAGIC = b"LMBNDL1\n"
MAX_ENVELOPES = 10_000


def write(path: Path, envelopes: list[bytes]) -> int:
    """Write atomically (temporary file, fsync, rename) so a pulled stick never holds half a bundle."""
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        f.write(MAGIC)
        for blob in envelopes:
            f.write(struct.pack(">I", len(blob)))
            f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path.stat().st_size


def read(path: Path) -> list[bytes]:
    """Return the envelopes in the bundle; raise MalformedEnvelope for a file that is not one."""
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise MalformedEnvelope(f"{path} is not a lastmile bundle")
    out, pos = [], len(MAGIC)
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
    return out
