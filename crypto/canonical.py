"""Canonical JSON: the one byte form of a value that is hashed and signed.

UTF-8, keys sorted by code point, no insignificant white space, no floats (amounts are
integers in the smallest unit), strings as they are (no \\u escapes for non-ASCII).
The same value always gives the same bytes, so a signature made today verifies in ten years.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from crypto.errors import BadEncoding

MAX_DEPTH = 32              # no value deeper than this below the top-level value
MAX_INT_CHARS = 17          # "-9007199254740991": longer integer literals are refused unparsed
MAX_ITEMS = 500_000         # "[", "{" and "," outside strings: bounds the objects a decode builds
# A JSON string, or an unterminated one running to the end: a match never fails once started, so the
# scan is linear (a pattern that could fail would retry from every later quote: quadratic).
_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.S)


_LIMIT = 2**53
_SCALARS = (str, bool, type(None))


def _check(value: Any, depth: int = 0) -> None:
    """Raise BadEncoding unless ``value`` has a canonical form (strings are checked by _encode).

    Hot path (every event is checked when hashed and every payload when sent or received): exact
    types are tested first and scalar members inline, without a call each."""
    t = type(value)
    if t in _SCALARS:
        return
    if t is int:
        if not -_LIMIT < value < _LIMIT:
            raise BadEncoding("integer outside the exactly representable range")
        return
    if t is dict:
        if value and depth >= MAX_DEPTH:
            raise BadEncoding("value nested too deeply")
        for k, v in value.items():
            if type(k) is not str:
                raise BadEncoding("object keys must be strings")
            tv = type(v)
            if tv in _SCALARS or (tv is int and -_LIMIT < v < _LIMIT):
                continue
            _check(v, depth + 1)
        return
    if t is list:
        if value and depth >= MAX_DEPTH:
            raise BadEncoding("value nested too deeply")
        for v in value:
            tv = type(v)
            if tv in _SCALARS or (tv is int and -_LIMIT < v < _LIMIT):
                continue
            _check(v, depth + 1)
        return
    # Subclasses (an IntEnum, an OrderedDict) and what has no JSON form at all.
    if isinstance(value, bool) or isinstance(value, str):
        return
    if isinstance(value, int):
        return _check(int(value), depth)
    if isinstance(value, float):
        raise BadEncoding("floats are not allowed in canonical JSON")
    if isinstance(value, dict):
        return _check(dict(value), depth)
    if isinstance(value, (list, tuple)):
        return _check(list(value), depth)
    raise BadEncoding(f"type {type(value).__name__} cannot be encoded")


def _encode(value: Any) -> bytes:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except UnicodeEncodeError as exc:       # a lone surrogate such as "\ud800" has no UTF-8 form
        raise BadEncoding("string is not valid Unicode") from exc


def dumps(value: Any) -> bytes:
    """Encode ``value`` canonically; raise BadEncoding for what has no canonical form."""
    _check(value)
    return _encode(value)


def loads(data: bytes, *, strict: bool = True) -> Any:
    """Decode JSON bytes, refusing floats, NaN, duplicate keys and anything past the limits.

    ``strict`` (the default, and what every receiver uses) also refuses bytes that are not exactly
    the canonical encoding of the value they decode to. Raises only BadEncoding, for any input:
    memory and time are bounded by the length of ``data`` (at most MAX_ITEMS containers and
    separators, integer literals of at most MAX_INT_CHARS characters, MAX_DEPTH levels)."""
    if not isinstance(data, (bytes, bytearray)):
        raise BadEncoding("canonical JSON is bytes")
    data = bytes(data)
    skeleton = _STRING.sub(b"", data)
    items = skeleton.count(b"[") + skeleton.count(b"{") + skeleton.count(b",")
    if items > MAX_ITEMS:
        raise BadEncoding(f"too many values ({items} containers and separators, at most {MAX_ITEMS})")

    def no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise BadEncoding(f"duplicate key {k!r}")
            out[k] = v
        return out

    def no_float(s: str) -> Any:
        raise BadEncoding("floats are not allowed")

    def bounded_int(s: str) -> int:
        # Refuse before int() sees it: Python's digit limit would raise ValueError, and a long
        # literal is outside the range anyway.
        if len(s) > MAX_INT_CHARS:
            raise BadEncoding(f"integer of {len(s)} characters is outside the exactly representable range")
        return int(s)

    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=no_dupes, parse_int=bounded_int,
                           parse_float=no_float, parse_constant=no_float)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:   # JSONDecodeError is a ValueError
        raise BadEncoding(f"not valid JSON: {exc}") from exc
    _check(value)
    if _encode(value) != data and strict:
        raise BadEncoding("bytes are not the canonical encoding of their value "
                          "(key order, white space, escapes or number form)")
    return value


def digest(value: Any) -> str:
    """SHA-256 of the canonical bytes, as lowercase hex."""
    return hashlib.sha256(dumps(value)).hexdigest()
