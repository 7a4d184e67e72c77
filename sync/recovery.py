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
from typing import Any

from sync import inbox, log
from sync.errors import BadEvent
from sync.inbox import Apply
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


def note_county_down(db: Conn, stream: str, county_high: Any) -> None:
    """Station: remember from which seq the county lacks its own downstream events (or that it lacks none)."""
    if type(county_high) is not int:
        return
    mine, _ = log.head(db, stream)
    log.set_status(db, "down_return_from", str(county_high + 1) if county_high < mine else "")


def to_return(db: Conn, stream: str, max_bytes: int) -> list[Event]:
    """Station: the county's events to give back in the next push (none unless the county lacks some)."""
    start = log.get_status(db, "down_return_from")
    if not start:
        return []
    return log.events_after(db, stream, int(start) - 1, MAX_RETURN, max(64 * 1024, max_bytes))


def take_back(db: Conn, stream: str, county_name: str, county_sign_key: str, events: Any,
              reproject: Apply | None) -> int:
    """County: store again its own events a station gives back, after checking its own signature on
    each (BadEvent, nothing stored, otherwise), and re-project them. Returns how many were stored."""
    if events is None:
        return 0
    if not isinstance(events, list) or len(events) > MAX_RETURN * 2:
        raise BadEvent("down_return must be a list of events")
    if not events:
        return 0
    before, _ = log.head(db, stream)
    got = inbox.accept(db, stream=stream, author=county_name, author_sign_key=county_sign_key, events=events,
                       apply=reproject or (lambda _db, _ev: None))
    if got.stored:
        logger.warning("%s: the station gave back %d downstream events the county had lost (%d..%d);"
                       " restored from an old backup?", stream, got.stored, before + 1, got.high)
        db.execute("INSERT INTO _sync_recoveries (stream, at, what, first, last) VALUES (?, ?, ?, ?, ?)",
                   (stream, log.utcnow(), "down_returned", before + 1, got.high))
    return got.stored
