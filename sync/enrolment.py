"""Enrolment proofs: both sides show they know the one-time code without ever sending it.

The code (16 hex digits, 64 bits) is stretched with scrypt, salted by the station code, into a
32-byte MAC key. The station MACs its request (its code, its keys and the county keys it checked
against the installer's fingerprint); the county MACs its answer over the same keys. A proxy in the
middle that swaps any key breaks a MAC it cannot recompute, and a captured MAC costs one scrypt per
guess of a 64-bit code. See PROTOCOL.md §7, ``/enroll/v2``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

from crypto import canonical

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 15, 8, 1
REQUEST_CONTEXT = b"lastmile-enrol-request/2|"
ANSWER_CONTEXT = b"lastmile-enrol-answer/2|"
SALT_CONTEXT = b"lastmile-enrol/2|"
_CODE = re.compile(r"[0-9A-F]{16}")


def normalise(code: str) -> str:
    """The one-time code as the KDF sees it: dashes and spaces removed, upper case; ValueError if
    it is not 16 hex digits."""
    text = code.replace("-", "").replace(" ", "").upper()
    if not _CODE.fullmatch(text):
        raise ValueError("the enrolment code is 16 hex digits, like 1A2B-3C4D-5E6F-7A8B")
    return text


def mac_key(code: str, station: str) -> bytes:
    """scrypt(N=2^15, r=8, p=1) of the normalised code, salted by the station code: 32 bytes."""
    return hashlib.scrypt(normalise(code).encode("ascii"), salt=SALT_CONTEXT + station.encode("utf-8"),
                          n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=64 * 1024 * 1024, dklen=32)


def request_mac(key: bytes, *, station: str, station_keys: dict[str, str], county_name: str,
                county_keys: dict[str, str]) -> str:
    """HMAC-SHA256 over the request context and the canonical JSON of what the station commits to."""
    fields = {"county_keys": county_keys, "county_name": county_name, "station": station,
              "station_keys": station_keys}
    return _mac(key, REQUEST_CONTEXT, fields)


def answer_mac(key: bytes, *, station: str, station_keys: dict[str, str], county_name: str,
               county_keys: dict[str, str], station_name: str, station_level: str) -> str:
    fields = {"county_keys": county_keys, "county_name": county_name, "station": station,
              "station_keys": station_keys, "station_level": station_level, "station_name": station_name}
    return _mac(key, ANSWER_CONTEXT, fields)


def _mac(key: bytes, context: bytes, fields: dict[str, Any]) -> str:
    return hmac.new(key, context + canonical.dumps(fields), hashlib.sha256).hexdigest()


def same(a: str, b: object) -> bool:
    return isinstance(b, str) and hmac.compare_digest(a.encode(), b.encode("utf-8", "replace"))
