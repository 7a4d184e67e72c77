"""One exchange = one sealed push from a station and one sealed answer from the county.

The push carries the station's upstream events beyond what the county confirmed, and how far
the station holds the downstream log. The answer carries the county's cumulative ack of the
upstream log and the downstream events beyond what the station holds. Both are envelopes
(crypto.envelope), so the same bytes can travel over HTTP or on a USB stick.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from crypto import envelope
from crypto.keys import Identity, PublicKeys
from sync import inbox, log
from sync.errors import BadEvent, CursorAhead
from sync.inbox import Apply
from sync.log import Conn

BATCH_EVENTS = 500


@dataclass(frozen=True, slots=True)
class Push:
    blob: bytes
    first: int
    last: int          # 0 when the push carries no events (a pull)


@dataclass(slots=True)
class StationResult:
    sent: int = 0
    acked: int = 0
    received: int = 0
    forks: list[int] = field(default_factory=list)
    repairs: list[list[Any]] = field(default_factory=list)
    more: bool = False
    server_time: str | None = None


def build_push(db: Conn, *, me: Identity, station: str, county: PublicKeys, county_name: str,
               limit: int = BATCH_EVENTS, max_bytes: int = 4 * 1024 * 1024, after: int | None = None) -> Push:
    """Seal the upstream events after ``after`` (default: after the county's last ack)."""
    stream = log.up(station)
    start = log.acked(db, stream) if after is None else after
    events = log.events_after(db, stream, start, limit, max_bytes)
    down_have, _ = log.head(db, log.down(station))
    first, last = (events[0].seq, events[-1].seq) if events else (0, 0)
    payload = {"events": [e.to_wire() for e in events], "down_have": down_have,
               "up_high": log.head(db, stream)[0], "station_time": log.utcnow()}
    # The link, not the CPU, is a station's bottleneck: compress as hard as zstd goes.
    blob = envelope.seal(payload, sender=me, sender_name=station, recipient=county, recipient_name=county_name,
                         kind="push", extra={"first": first, "last": last}, level=19)
    return Push(blob, first, last)


def apply_answer(db: Conn, blob: bytes, *, me: Identity, station: str, county: PublicKeys,
                 county_name: str, apply: Apply, fresh: bool = False) -> StationResult:
    """Open the county's answer, move the upstream cursor, and take the downstream events.

    ``fresh`` says the answer comes straight back from the push just sent (HTTP), not from a
    USB stick that may be old: only a fresh answer may move the cursor back."""
    header, payload = envelope.open_sealed(blob, recipient=me, recipient_name=station, sender=county)
    if header["kind"] != "answer" or header["from"] != county_name or not isinstance(payload, dict):
        raise BadEvent("not an answer from our county")
    ack, events = payload.get("ack"), payload.get("events")
    if type(ack) is not int or ack < 0 or not isinstance(events, list):
        raise BadEvent("answer lacks ack or events")
    up_stream = log.up(station)
    high, _ = log.head(db, up_stream)
    if ack > high:
        raise CursorAhead(f"county confirms {ack} events but this station wrote only {high}")
    before = log.acked(db, up_stream)
    if fresh and ack < before:
        # The county answering this very push holds less than it once confirmed: it was restored
        # from a backup. Send the rest again (the county takes repeats as no-ops).
        log.rewind_acked(db, up_stream, ack)
        log.set_status(db, "county_rewound", f"{before}->{ack} at {log.utcnow()}")
    log.set_acked(db, up_stream, ack)
    got = inbox.accept(db, stream=log.down(station), author=county_name, author_sign_key=county.sign,
                       events=events, apply=apply)
    down_high = payload.get("down_high", 0)
    repairs = payload.get("repairs") if isinstance(payload.get("repairs"), list) else []
    county_forks = payload.get("forks") if isinstance(payload.get("forks"), list) else []
    repairs = repairs + [[s, "the county holds a different event with this number (fork)"]
                         for s in county_forks if type(s) is int]
    server_time = payload.get("server_time") if isinstance(payload.get("server_time"), str) else None
    return StationResult(acked=max(0, ack - before), received=got.stored, forks=got.forks, repairs=repairs,
                         more=bool(payload.get("more")) or (isinstance(down_high, int) and down_high > got.high),
                         server_time=server_time)


def answer_push(db: Conn, blob: bytes, *, me: Identity, county_name: str,
                station_keys: Callable[[str], PublicKeys], apply: Apply,
                limit: int = BATCH_EVENTS, max_size: int = envelope.MAX_ENVELOPE) -> tuple[bytes, dict[str, Any]]:
    """County side: verify and take a push, return (sealed answer, summary for logs and status).

    Raises EnvelopeError or a sync Rejected before anything is stored if the push is not
    well-formed, not for us, or not from a known, active station."""
    parsed = envelope.parse(blob, max_size=max_size)
    station = parsed.header["from"]
    keys = station_keys(station)           # raises UnknownStation / RevokedStation
    header, payload = envelope.open_sealed(blob, recipient=me, recipient_name=county_name, sender=keys,
                                           max_size=max_size)
    if header["kind"] != "push" or not isinstance(payload, dict):
        raise BadEvent("not a push")
    events, down_have = payload.get("events"), payload.get("down_have")
    if not isinstance(events, list) or type(down_have) is not int or down_have < 0:
        raise BadEvent("push lacks events or down_have")
    got = inbox.accept(db, stream=log.up(station), author=station, author_sign_key=keys.sign,
                       events=events, apply=apply)
    down_stream = log.down(station)
    down_high, _ = log.head(db, down_stream)
    if down_have > down_high:
        raise CursorAhead(f"station {station} holds {down_have} downstream events, county wrote {down_high}")
    log.set_acked(db, down_stream, down_have)
    out = log.events_after(db, down_stream, down_have, limit)
    answer = {"ack": got.high, "events": [e.to_wire() for e in out], "down_high": down_high,
              "forks": got.forks, "repairs": [[s, r] for s, r in got.repairs], "server_time": log.utcnow(),
              "more": bool(out) and out[-1].seq < down_high}
    sealed = envelope.seal(answer, sender=me, sender_name=county_name, recipient=keys,
                           recipient_name=station, kind="answer",
                           extra={"ack": got.high, "first": out[0].seq if out else 0,
                                  "last": out[-1].seq if out else 0})
    up_high = payload.get("up_high")
    summary = {"station": station, "station_time": payload.get("station_time"), "stored": got.stored,
               "duplicates": got.duplicates, "ack": got.high, "forks": got.forks, "repairs": got.repairs,
               "sent_down": len(out), "gap_at": got.gap_at,
               "up_waiting": max(0, up_high - got.high) if type(up_high) is int else None}
    return sealed, summary

