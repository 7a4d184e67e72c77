"""Reports kept until confirmed, and a county's own downstream events given back after a restore.

Reports: the county lists every upstream event of a station that it set aside for repair or saw
forked, in every answer, until the station confirms it has recorded it (``confirm`` in a push). So
a lost answer loses no report.

Giving back: a county restored from an old backup has fewer ``down/<station>`` events than the
station holds. Those events are county-signed, so the station sends them back (``down_return``);
the county checks its own signature, stores them again and re-projects them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from crypto import canonical
from crypto.keys import Identity
from sync import inbox, log
from sync.errors import BadEvent
from sync.inbox import Apply
from sync.law import retention
from sync.log import Conn, Event

logger = logging.getLogger("lastmile.sync")
MAX_REPORTS = 200          # reports per answer; the rest follow once these are confirmed
FORK_REASON = "The county holds a different event with this number (a fork); call the county."
KINDS = ("repair", "fork")


# county side ---------------------------------------------------------------------------------

def take_confirm(db: Conn, stream: str, confirm: Any) -> int:
    """Mark the reports a station confirms as recorded; BadEvent for a malformed list."""
    if confirm is None:
        return 0
    if not isinstance(confirm, list) or len(confirm) > 10 * MAX_REPORTS:
        raise BadEvent("confirm must be a list of [seq, kind]")
    n = 0
    for item in confirm:
        if (not isinstance(item, list) or len(item) != 2 or type(item[0]) is not int or item[0] < 1
                or item[1] not in KINDS):
            raise BadEvent("confirm must be a list of [seq, kind], kind 'repair' or 'fork'")
        db.execute("INSERT INTO _sync_confirmed (stream, seq, kind, at) VALUES (?, ?, ?, ?)"
                   " ON CONFLICT (stream, seq, kind) DO NOTHING", (stream, item[0], item[1], log.utcnow()))
        n += 1
    return n


def open_reports(db: Conn, stream: str) -> tuple[list[list[Any]], list[int]]:
    """(repairs as [seq, reason], fork seqs) of ``stream`` that the station has not confirmed."""
    repairs = [[int(r[0]), str(r[1])] for r in db.execute(
        "SELECT r.seq, r.reason FROM _sync_repairs r WHERE r.stream = ? AND NOT EXISTS (SELECT 1 FROM"
        " _sync_confirmed c WHERE c.stream = r.stream AND c.seq = r.seq AND c.kind = 'repair')"
        " ORDER BY r.seq LIMIT ?", (stream, MAX_REPORTS)).fetchall()]
    forks = [int(r[0]) for r in db.execute(
        "SELECT DISTINCT f.seq FROM _sync_forks f WHERE f.stream = ? AND NOT EXISTS (SELECT 1 FROM"
        " _sync_confirmed c WHERE c.stream = f.stream AND c.seq = f.seq AND c.kind = 'fork')"
        " ORDER BY f.seq LIMIT ?", (stream, MAX_REPORTS)).fetchall()]
    return repairs, forks


def confirmed(db: Conn, stream: str) -> set[tuple[int, str]]:
    return {(int(r[0]), str(r[1])) for r in
            db.execute("SELECT seq, kind FROM _sync_confirmed WHERE stream = ?", (stream,)).fetchall()}


# station side --------------------------------------------------------------------------------

def record_reports(db: Conn, stream: str, repairs: Any, forks: Any) -> list[list[Any]]:
    """Record what the county reports (kept for the sync panel) and remember it for ``confirm``.

    Returns the reports as [seq, reason] (forks with FORK_REASON)."""
    listed: list[list[Any]] = []
    shown: list[list[Any]] = []
    for item in repairs if isinstance(repairs, list) else []:
        if isinstance(item, list) and len(item) == 2 and type(item[0]) is int and isinstance(item[1], str):
            listed.append([item[0], "repair"])
            shown.append([item[0], item[1]])
    for seq in forks if isinstance(forks, list) else []:
        if type(seq) is int:
            listed.append([seq, "fork"])
            shown.append([seq, FORK_REASON])
    now = log.utcnow()
    for seq, reason in shown:
        db.execute("INSERT INTO _sync_reported (stream, seq, reason, at) VALUES (?, ?, ?, ?)"
                   " ON CONFLICT (stream, seq) DO NOTHING", (stream, seq, reason[:1000], now))
    log.set_status(db, "confirm", json.dumps(listed[:10 * MAX_REPORTS]))
    return shown


def to_confirm(db: Conn) -> list[list[Any]]:
    """The reports of the last answer taken, which the next push confirms."""
    raw = log.get_status(db, "confirm")
    try:
        value = json.loads(raw) if raw else []
    except ValueError:
        return []
    return value if isinstance(value, list) else []


# a county restored from an old backup -------------------------------------------------------

MAX_RETURN = 500


def returned_chain(events: list[Any], what: str, *, stream: str, author: str, keys: Any,
                   stubs: bool = True) -> list[Event]:
    """Events the other side gives back (``what``: ``down_return`` or ``up_return``), in seq order:
    each of ``stream`` by ``author`` and signed by a key of ``keys``, all one contiguous chain;
    else BadEvent, and nothing is stored.

    ``stubs=False`` (the county taking back its own events, ``down_return``): a redacted stub is
    refused too, and every event's hash is recomputed from its whole content (stream, seq, prev,
    kind, body ...) and must be the hash the county signed. A stub's body is not hashed, so with a
    stub a station could pair any hash the county ever signed with a body of its own (issue 15)."""
    parsed = sorted((Event.from_wire(e) for e in events), key=lambda e: e.seq)
    for ev in parsed:
        if ev.stream != stream or ev.author != author:
            raise BadEvent(f"event {ev.stream}#{ev.seq} in {what} is not {author}'s on {stream}")
        if not stubs:
            if retention.is_redacted(ev.body) or retention.REDACTED_KEY in ev.body:
                raise BadEvent(f"event {ev.stream}#{ev.seq} in {what} is a redacted stub: the county takes"
                               " back only whole events whose body hashes to the hash it signed")
            ev.check(keys)                      # the hash recomputed from the content, then the signature
            continue
        log.check_event(ev, keys)         # a redacted stub: its signature (§8.7)
    if any(b.seq != a.seq + 1 or b.prev != a.hash for a, b in zip(parsed, parsed[1:])):
        raise BadEvent(f"{what} is not one contiguous chain")
    return parsed

def note_county_down(db: Conn, stream: str, county_high: Any, county_from: Any = None, county_hash: Any = None,
                     diverged_at: int | None = None) -> None:
    """Station: remember from which seq the county lacks its own downstream events, or holds others
    (restored from a backup, it wrote new ones at those numbers), or that it lacks none.

    ``county_from`` (the answer's ``down_from``): the county asks from there. ``diverged_at``: the
    county's events did not extend ours from there. ``county_hash``: its hash at ``county_high``."""
    mine, _ = log.head(db, stream)
    if type(county_from) is int and county_from >= 1:
        start: int | None = county_from
    elif diverged_at is not None:
        start = max(1, min(diverged_at, mine))
    elif type(county_high) is not int:
        return
    elif county_high < mine:
        start = county_high + 1
    elif county_high >= 1 and county_high <= mine and isinstance(county_hash, str) \
            and not _holds(db, stream, county_high, county_hash):
        start = county_high
    else:
        start = None
    log.set_status(db, "down_return_from", str(start) if start else "")


def to_return(db: Conn, stream: str, max_bytes: int) -> list[Event]:
    """Station: the county's events to give back in the next push (none unless the county lacks some)."""
    start = log.get_status(db, "down_return_from")
    if not start:
        return []
    events = log.events_after(db, stream, int(start) - 1, MAX_RETURN, max(64 * 1024, max_bytes))
    # The county takes back only whole events (a stub's body no longer hashes to its signed hash):
    # give back those before the first the retention purge redacted here (PROTOCOL.md §8.5, §8.7).
    for i, ev in enumerate(events):
        if retention.is_redacted(ev.body):
            if i == 0:
                logger.warning("%s: the county lacks #%d, which this station holds only redacted (purged after"
                               " the retention period): it cannot be given back", stream, ev.seq)
            return events[:i]
    return events


def take_back(db: Conn, stream: str, county_name: str, county_sign_key: str, events: Any,
              reproject: Apply | None, me: Identity | None = None) -> tuple[int, int | None]:
    """County: store again its own events a station gives back, after checking its own signature on
    each (BadEvent, nothing stored, otherwise), and re-project them. Returns (how many were stored,
    the seq to ask the station for next, or None).

    A county restored from an old backup may have written *new* events for the station since, at
    numbers the returned ones hold: those of its own are taken out, the returned ones stored in their
    place, and its own appended again after them, re-signed with the same kind and body (``me``), so
    the station gets them as new events. If the first returned event does not chain onto the county's
    event before it, the county asks for the station's copy from further back (``down_from``)."""
    if events is None:
        return 0, None
    if not isinstance(events, list) or len(events) > MAX_RETURN * 2:
        raise BadEvent("down_return must be a list of events")
    if not events:
        return 0, None
    parsed = returned_chain(events, "down_return", stream=stream, author=county_name, keys=county_sign_key,
                            stubs=False)
    before, _ = log.head(db, stream)
    first = parsed[0]
    if first.seq > before + 1:
        return 0, before + 1                      # they start beyond our head: ask from it
    if not _chains(db, stream, first):
        return 0, max(1, first.seq - 50)          # ours differ before them too: ask from further back
    ours: list[Event] = []
    for ev in parsed:
        mine = log.get(db, stream, ev.seq)
        if mine is not None and mine.hash != ev.hash:
            ours = log.remove_from(db, stream, ev.seq)     # written after the restore: re-appended below
            logger.warning("%s: %d events the county wrote after its restore are re-appended after the"
                           " %d the station gave back", stream, len(ours), len(parsed))
            break
    got = inbox.accept(db, stream=stream, author=county_name, author_sign_key=county_sign_key, events=events,
                       apply=reproject or (lambda _db, _ev: None))
    if got.stored:
        logger.warning("%s: the station gave back %d downstream events the county had lost (%d..%d);"
                       " restored from an old backup?", stream, got.stored, got.high - got.stored + 1, got.high)
        _note(db, stream, "down_returned", got.high - got.stored + 1, got.high)
    again: list[tuple[int, int]] = []
    for old in ours:
        if me is None:
            raise BadEvent("cannot re-append the county's own events without its key")
        if db.execute("SELECT 1 FROM _sync_events WHERE stream = ? AND kind = ? AND body = ?",
                      (stream, old.kind, canonical.dumps(old.body).decode())).fetchone():
            continue
        new = log.append(db, me, stream=stream, author=county_name, kind=old.kind, body=old.body)
        again.append((old.seq, new.seq))
    if again:
        _note(db, stream, "down_resequenced", again[0][1], again[-1][1])
    return got.stored, None


# a station restored from a backup, or a new PC: self-heal from the county's copy ------------

HEAL_BYTES = 2 * 1024 * 1024


def up_return(db: Conn, stream: str, start: int | None) -> list[Event]:
    """County: its copies of a station's own events from ``start`` (a batch), for the station to heal."""
    if start is None or start < 1:
        return []
    return log.events_after(db, stream, start - 1, MAX_RETURN, HEAL_BYTES)


def heal_from(db: Conn) -> int | None:
    """Station: the seq from which it asks the county for its own events (``up_from``), if healing."""
    raw = log.get_status(db, "up_heal_from")
    return int(raw) if raw and raw.isdigit() else None


def healing(db: Conn) -> bool:
    return heal_from(db) is not None or bool(db.execute("SELECT 1 FROM _sync_displaced LIMIT 1").fetchone())


@dataclass(slots=True)
class Healed:
    consistent: bool = True     # the station holds the county's head of its log, with the same hash
    stored: int = 0             # county copies stored
    displaced: int = 0          # own events set aside (the county holds others at their numbers)
    resequenced: list[tuple[int, int]] = field(default_factory=list)    # (old seq, new seq)


def heal(db: Conn, *, me: Identity, station: str, county_high: Any, county_hash: Any, returned: Any,
         keys: Mapping[str, str], on_own: Apply, on_displace: Apply,
         on_resequence: Callable[[Conn, Event, Event], None]) -> Healed:
    """Station: compare its upstream log with the county's head (``up_high``/``up_hash``) and heal.

    Behind (a backup, a new PC) or diverged (after a restore it wrote other events at numbers the
    county already holds): store the county's copies (``returned``; station-signed, checked with
    ``keys``, the station's key history), setting aside each own event the county holds another at
    (``_sync_displaced``), and ask for the next batch (``up_from``). Once the station holds the
    county's head, its set-aside events are appended again after it, re-signed under new numbers
    with the same kind and body (same application, same receipt number), none twice."""
    out = Healed()
    stream = log.up(station)
    if type(county_high) is not int or county_high < 0 or not isinstance(county_hash, str):
        return out                           # an answer without the county's head: nothing to compare
    if not _holds(db, stream, county_high, county_hash):
        out.consistent = False
        events = returned if isinstance(returned, list) else []
        if len(events) > 2 * MAX_RETURN:
            raise BadEvent("up_return must be a list of at most 1000 events")
        parsed = returned_chain(events, "up_return", stream=stream, author=station, keys=keys)
        if parsed and not _chains(db, stream, parsed[0]):
            # Our event before the batch differs too: ask from further back (what we once had
            # confirmed, or the start).
            acked = log.acked(db, stream)
            log.set_status(db, "up_heal_from", str(acked + 1 if acked + 1 < parsed[0].seq else 1))
            return out
        for ev in parsed:
            mine = log.get(db, stream, ev.seq)
            if mine is not None and mine.hash == ev.hash:
                continue
            if mine is not None:
                out.displaced += _displace(db, stream, ev.seq, on_displace)
            log.store(db, ev)
            on_own(db, ev)
            out.stored += 1
        if parsed:
            log.set_acked(db, stream, parsed[-1].seq)          # the county holds these: confirmed
            if out.stored:
                _note(db, stream, "up_healed", parsed[0].seq, parsed[-1].seq)
        out.consistent = _holds(db, stream, county_high, county_hash)
        if not out.consistent:
            nxt = parsed[-1].seq + 1 if parsed else min(log.acked(db, stream) + 1, max(county_high, 1))
            log.set_status(db, "up_heal_from", str(nxt))
            return out
    log.set_status(db, "up_heal_from", "")
    out.resequenced = _reappend(db, me, station, on_resequence)
    return out


def _hash_at(db: Conn, stream: str, seq: int) -> str | None:
    """The hash of our event at ``seq`` (read alone: a station's encrypted bodies stay closed)."""
    row = db.execute("SELECT hash FROM _sync_events WHERE stream = ? AND seq = ?", (stream, seq)).fetchone()
    return str(row[0]) if row else None


def _holds(db: Conn, stream: str, seq: int, hash_: str) -> bool:
    return seq == 0 or _hash_at(db, stream, seq) == hash_


def _chains(db: Conn, stream: str, first: Event) -> bool:
    if first.seq == 1:
        return first.prev == log.GENESIS
    return _hash_at(db, stream, first.seq - 1) == first.prev


def _displace(db: Conn, stream: str, seq: int, on_displace: Apply) -> int:
    taken = log.remove_from(db, stream, seq)
    now = log.utcnow()
    for ev in taken:
        db.execute("INSERT INTO _sync_displaced (stream, seq, hash, event, at) VALUES (?, ?, ?, ?, ?)"
                   " ON CONFLICT (stream, hash) DO NOTHING",
                   (stream, ev.seq, ev.hash, canonical.dumps(ev.to_wire()).decode(), now))
        on_displace(db, ev)
    if log.acked(db, stream) >= seq:
        log.rewind_acked(db, stream, seq - 1)
    logger.warning("%s: the county holds other events from #%d; %d own events set aside to be re-appended",
                   stream, seq, len(taken))
    return len(taken)


def _reappend(db: Conn, me: Identity, station: str,
              on_resequence: Callable[[Conn, Event, Event], None]) -> list[tuple[int, int]]:
    stream = log.up(station)
    rows = db.execute("SELECT event FROM _sync_displaced WHERE stream = ? ORDER BY seq, at", (stream,)).fetchall()
    done: list[tuple[int, int]] = []
    for (raw,) in rows:
        old = Event.from_wire(canonical.loads(raw.encode()))
        body = canonical.dumps(old.body).decode()
        if not db.execute("SELECT 1 FROM _sync_events WHERE stream = ? AND kind = ? AND body = ?",
                          (stream, old.kind, body)).fetchone():
            new = log.append(db, me, stream=stream, author=station, kind=old.kind, body=old.body)
            db.execute("INSERT INTO _sync_resequenced (stream, old_seq, new_seq, kind, ref, at)"
                       " VALUES (?, ?, ?, ?, ?, ?)", (stream, old.seq, new.seq, old.kind,
                                                      str(old.body.get("receipt_no") or old.body.get("id") or ""),
                                                      log.utcnow()))
            on_resequence(db, old, new)
            done.append((old.seq, new.seq))
        db.execute("DELETE FROM _sync_displaced WHERE stream = ? AND hash = ?", (stream, old.hash))
    if done:
        _note(db, stream, "resequenced", done[0][1], done[-1][1])
        logger.warning("%s: %d own events re-appended under new numbers %d..%d", stream, len(done),
                       done[0][1], done[-1][1])
    return done


def _note(db: Conn, stream: str, what: str, first: int, last: int) -> None:
    db.execute("INSERT INTO _sync_recoveries (stream, at, what, first, last) VALUES (?, ?, ?, ?, ?)",
               (stream, log.utcnow(), what, first, last))


def resequenced(db: Conn, stream: str) -> list[dict[str, Any]]:
    cols = ("old_seq", "new_seq", "kind", "ref", "at")
    return [dict(zip(cols, r)) for r in db.execute(
        "SELECT old_seq, new_seq, kind, ref, at FROM _sync_resequenced WHERE stream = ? ORDER BY at DESC, new_seq"
        " LIMIT 200", (stream,)).fetchall()]


def recoveries(db: Conn, stream: str | None = None) -> list[dict[str, Any]]:
    cols = ("stream", "at", "what", "first", "last")
    sql = f"SELECT {', '.join(cols)} FROM _sync_recoveries"
    rows = db.execute(sql + (" WHERE stream = ?" if stream else "") + " ORDER BY at DESC LIMIT 100",
                      (stream,) if stream else ()).fetchall()
    return [dict(zip(cols, r)) for r in rows]
