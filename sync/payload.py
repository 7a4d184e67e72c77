"""The top-level keys a push or an answer payload may carry, and their types: the one list.

A receiver refuses a payload with a key not listed here, a required key missing, or a value of
the wrong type (``bad_event``, PROTOCOL.md §6), so a field a second implementation invents is
noticed at once instead of silently ignored. To add a field to the protocol, add it here (and to
PROTOCOL.md §6); both ends check through ``check``.
"""

from __future__ import annotations

from typing import Any

from sync.errors import BadEvent
from sync.verify import MAX_TEXT

# key -> (accepted Python type(s) after canonical decoding, required). bool is not an int here.
PUSH_FIELDS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "events": (list, True),
    "down_have": (int, True),
    "up_high": (int, False),
    "station_time": (str, False),
    "confirm": (list, False),        # [[seq, "repair"|"fork"], ...] reports recorded (PROTOCOL.md §6)
    "down_return": (list, False),    # down/<station> events the county lost, given back (PROTOCOL.md §6)
    "up_from": (int, False),         # self-heal: send me your copies of up/<station> from this seq (§8.5)
    "qr_texts": (dict, False),       # seq of a document event of this push -> its QR text (§6, §11)
    "applied": (dict, False),        # what the station has applied of down/<station> and the catalogue (§6)
}
MAX_QR_TEXT = MAX_TEXT              # characters of one QR text: the longest sync/verify reads

ANSWER_FIELDS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "ack": (int, True),
    "events": (list, True),
    "down_high": (int, False),
    "forks": (list, False),
    "repairs": (list, False),
    "server_time": (str, False),
    "more": (bool, False),
    "in_reply_to": (str, False),     # the envelope id of the push this answers (PROTOCOL.md §6)
    "up_high": (int, False),         # the county's head of up/<station> ... (§8.5, self-heal)
    "up_hash": (str, False),         # ... and that event's hash
    "up_return": (list, False),      # the county's copies of up/<station> events the station lacks (§8.5)
    "up_keys": (dict, False),        # the station's key history: key id -> sign key, to verify up_return
    "down_keys": (dict, False),      # the county's sign keys by id, for events signed before a key it holds (§10)
    "down_hash": (str, False),       # the hash of the county's event at down_high
    "down_from": (int, False),       # a restored county asks for the station's copy of down/<station> from here
}

FIELDS = {"push": PUSH_FIELDS, "answer": ANSWER_FIELDS}


def check(kind: str, payload: Any) -> dict[str, Any]:
    """Return ``payload`` if it is an object with only known keys of the right types; else BadEvent."""
    if not isinstance(payload, dict):
        raise BadEvent(f"{kind} payload is not an object")
    fields = FIELDS[kind]
    unknown = sorted(set(payload) - set(fields))
    if unknown:
        raise BadEvent(f"{kind} payload has unknown fields: {', '.join(unknown)[:200]}")
    for name, (typ, required) in fields.items():
        if name not in payload:
            if required:
                raise BadEvent(f"{kind} payload lacks {name!r}")
            continue
        value = payload[name]
        if not isinstance(value, typ) or (isinstance(value, bool) and typ is int):
            raise BadEvent(f"{kind} payload field {name!r} has the wrong type")
    return payload


def qr_texts(payload: dict[str, Any]) -> dict[int, str]:
    """A push's ``qr_texts`` (PROTOCOL.md §6), as seq -> text; {} if absent. BadEvent unless it is an
    object of at most as many entries as the push has events, each key the decimal seq (no sign, no
    leading zero) of an event in the push's ``events``, each value a string of 1 to MAX_QR_TEXT
    characters. Whether a text is right for its event is not checked here (the county does, and
    keeps or ignores each entry: a wrong text is not a malformed push)."""
    texts = payload.get("qr_texts")
    if texts is None:
        return {}
    if not isinstance(texts, dict):
        raise BadEvent("push payload field 'qr_texts' has the wrong type")
    events = payload.get("events")
    events = events if isinstance(events, list) else []
    if len(texts) > len(events):
        raise BadEvent(f"push payload field 'qr_texts' has {len(texts)} entries for {len(events)} events")
    seqs = {str(e["seq"]): e["seq"] for e in events
            if isinstance(e, dict) and type(e.get("seq")) is int and e["seq"] >= 1}
    out: dict[int, str] = {}
    for key, text in texts.items():
        if key not in seqs:
            raise BadEvent(f"push payload field 'qr_texts': {key[:40]!r} is not the seq of an event in this push")
        if not isinstance(text, str) or not 1 <= len(text) <= MAX_QR_TEXT:
            raise BadEvent(f"push payload field 'qr_texts': the text for {key} is not a string of 1 to"
                           f" {MAX_QR_TEXT} characters")
        out[seqs[key]] = text
    return out


APPLIED_FIELDS = {"down": int, "catalog": int, "locked": bool}


def applied(payload: dict[str, Any]) -> dict[str, Any] | None:
    """A push's ``applied`` (PROTOCOL.md §6): ``{"down", "catalog", "locked"}``, or None if absent.
    BadEvent unless it has exactly those keys, ``down`` and ``catalog`` integers >= 0 (not booleans),
    ``down`` at most the push's ``down_have``, and ``locked`` a boolean."""
    value = payload.get("applied")
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != set(APPLIED_FIELDS):
        raise BadEvent("push payload field 'applied' must have exactly down, catalog and locked")
    for name, typ in APPLIED_FIELDS.items():
        v = value[name]
        if not isinstance(v, typ) or (typ is int and (isinstance(v, bool) or v < 0)):
            raise BadEvent(f"push payload field 'applied': {name} has the wrong type or is negative")
    if value["down"] > payload.get("down_have", 0):
        raise BadEvent("push payload field 'applied': down is beyond down_have")
    return dict(value)


def heal_numbers(payload: dict[str, Any]) -> None:
    """BadEvent unless a push's ``up_high`` (when present) is ≥ 0, and its ``up_from`` (when present)
    is ≥ 1 in a push whose ``events`` are empty: a station healing from the county's copy sends none
    of its own events (PROTOCOL.md §6, §8.5), so a push with both is no push a station makes."""
    up_high, up_from = payload.get("up_high"), payload.get("up_from")
    if up_high is not None and up_high < 0:
        raise BadEvent("push payload field 'up_high' must not be negative")
    if up_from is not None:
        if up_from < 1:
            raise BadEvent("push payload field 'up_from' must be at least 1")
        if payload.get("events"):
            raise BadEvent("a push that asks for its own log back (up_from) carries no events")
