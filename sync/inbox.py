"""Receiving a stream: store every well-formed, well-signed event in order, idempotently.

Storing is apart from processing. ``apply`` (the owner's domain callback) runs inside a
savepoint; if it fails, the event stays stored and acknowledged and goes on the repair list,
and the events behind it flow on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from crypto import canonical
from sync import log
from sync.errors import BadEvent
from sync.law.errors import N_, RuleError
from sync.log import Conn, Event

logger = logging.getLogger("lastmile.sync")

Apply = Callable[[Conn, Event], None]


@dataclass(slots=True)
class Accepted:
    stored: int = 0
    duplicates: int = 0
    forks: list[int] = field(default_factory=list)
    repairs: list[tuple[int, str]] = field(default_factory=list)
    gap_at: int | None = None
    high: int = 0
    diverged_at: int | None = None    # diverge="stop": the first event that does not extend our copy


def accept(db: Conn, *, stream: str, author: str, author_sign_key: str | Mapping[str, str], events: list[Any],
           apply: Apply, diverge: str = "fork") -> Accepted:
    """Take ``events`` (wire dicts) for ``stream``. Raises BadEvent, storing nothing, if any event
    is malformed, belongs to another stream or author, or is not signed by the author (with its one
    key, or with the key its ``key`` id names in the author's key history, a mapping id -> key).

    ``diverge="stop"`` (the county taking a station's upstream log): an event that does not extend
    our copy (same seq, other content, or a broken chain) is not a fork but a station that lost
    events and wrote others at their numbers: stop there, store none of it, and say where
    (``diverged_at``); the station heals from our copy and re-sequences its own (PROTOCOL.md §8.5)."""
    parsed = [Event.from_wire(e) for e in events]
    for ev in parsed:
        if ev.stream != stream or ev.author != author:
            raise BadEvent(f"event {ev.stream}#{ev.seq} does not belong to stream {stream}")
        log.check_event(ev, author_sign_key)    # a redacted stub: its signature (§8.7)

    result = Accepted()
    high, high_hash = log.head(db, stream)
    for ev in sorted(parsed, key=lambda e: e.seq):
        if ev.seq <= high:
            mine = log.get(db, stream, ev.seq)
            if mine is not None and mine.hash == ev.hash:
                result.duplicates += 1
            elif diverge == "stop":
                result.diverged_at = ev.seq
                break
            else:
                _fork(db, ev, "same sequence number, different content")
                result.forks.append(ev.seq)
            continue
        if ev.seq > high + 1:
            result.gap_at = high + 1     # out of order: wait for the missing one
            break
        if ev.prev != high_hash and diverge == "stop":
            result.diverged_at = ev.seq
            break
        if ev.prev != high_hash:
            _fork(db, ev, "does not chain onto the event before it")
            result.forks.append(ev.seq)
            break
        log.store(db, ev)
        high, high_hash = ev.seq, ev.hash
        result.stored += 1
        db.execute("SAVEPOINT lastmile_apply")
        try:
            apply(db, ev)
        except Exception as exc:  # noqa: BLE001 - any failure sets the event aside, never blocks
            db.execute("ROLLBACK TO SAVEPOINT lastmile_apply")
            reason = repair_reason(exc)
            if isinstance(exc, RuleError):
                logger.warning("event %s#%d set aside for repair: %s", stream, ev.seq, exc.english())
            else:
                logger.error("event %s#%d set aside for repair after an internal error: %s: %s",
                             stream, ev.seq, type(exc).__name__, exc)
            db.execute("INSERT INTO _sync_repairs (stream, seq, reason, at) VALUES (?, ?, ?, ?)",
                       (stream, ev.seq, reason[:1000], log.utcnow()))
            result.repairs.append((ev.seq, reason))
        db.execute("RELEASE SAVEPOINT lastmile_apply")
    result.high = high
    return result


def repair_reason(exc: Exception) -> str:
    """The reason stored and reported for an event set aside: ``{"m": message id, "a": {params}}``
    as JSON, shown in the reader's language by templates.reason_text. A rule broken
    (RuleError) says which; anything else is a bug, whose text stays in the log only."""
    if isinstance(exc, RuleError):
        return exc.reason()
    return RuleError(N_("This event could not be processed because of an internal error; "
                        "it is in the log for repair.")).reason()


def _fork(db: Conn, ev: Event, reason: str) -> None:
    logger.error("FORK on %s#%d: %s", ev.stream, ev.seq, reason)
    if not db.execute("SELECT 1 FROM _sync_forks WHERE stream = ? AND seq = ? AND hash = ?",
                      (ev.stream, ev.seq, ev.hash)).fetchone():
        db.execute("INSERT INTO _sync_forks (stream, seq, hash, event, reason, seen_at) VALUES (?, ?, ?, ?, ?, ?)",
                   (ev.stream, ev.seq, ev.hash, canonical.dumps(ev.to_wire()).decode(), reason, log.utcnow()))


def forks(db: Conn, stream: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT stream, seq, reason, seen_at FROM _sync_forks"
    rows = db.execute(sql + (" WHERE stream = ?" if stream else "") + " ORDER BY seen_at",
                      (stream,) if stream else ()).fetchall()
    return [{"stream": r[0], "seq": r[1], "reason": r[2], "seen_at": r[3]} for r in rows]


def repairs(db: Conn, stream: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT stream, seq, reason, at FROM _sync_repairs"
    rows = db.execute(sql + (" WHERE stream = ?" if stream else "") + " ORDER BY at",
                      (stream,) if stream else ()).fetchall()
    return [{"stream": r[0], "seq": r[1], "reason": r[2], "at": r[3]} for r in rows]
