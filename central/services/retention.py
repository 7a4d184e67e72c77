"""The county's retention period for personal data at the stations: set it (CLI and API), send it
down to every station as ``retention.set`` (like the calendar, central/services/calendar.py), and to a
station just enrolled. The station purges by it (node/retention.py, sync/law/retention.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from typing import TYPE_CHECKING, Any

from sync import log
from sync.law import facts, retention
from sync.log import Event

if TYPE_CHECKING:
    from central.services.context import Context

logger = logging.getLogger("lastmile.central")
META = "retention_days"


def current(county: Context) -> dict[str, Any]:
    """The period in force (the default until the county sets one) and when and by whom it was set."""
    raw = county.store.meta(META)
    if not raw:
        return {"retention_days": retention.DEFAULT_DAYS, "set_at": None, "set_by": None, "default": True}
    held = json.loads(raw)
    return {"retention_days": held["retention_days"], "set_at": held["at"], "set_by": held["by"], "default": False}


def publish(county: Context, days: Any, by: str) -> dict[str, Any]:
    """Set the period (ValueError for anything but a whole number of days in range) and send it to
    every active station; returns the ``retention.set`` body."""
    import json
    n = retention.days_of(days)
    body = facts.SPECS[retention.RETENTION_SET].to_body(retention_days=n, at=log.utcnow(), by=by)
    with county.store.transaction() as db:
        county.store.set_meta(db, META, json.dumps(body))
        for code in county.store.active_station_codes(db):
            county.record(db, code, facts.Fact(retention.RETENTION_SET, body))
    logger.info("retention period set to %d days by %s", n, by)
    return body


def send_all(county: Context, db: Any, station: str) -> None:
    """The period on record, to a station just enrolled (inside the enrolment transaction); none
    while the county keeps the default (the station's default is the same)."""
    import json
    row = db.execute("SELECT value FROM meta WHERE name = ?", (META,)).fetchone()
    if row and row[0]:
        county.record(db, station, facts.Fact(retention.RETENTION_SET, json.loads(row[0])))


def purged_at_station(county: Context, db: Any, ev: Event, now: dt.datetime | None = None) -> bool:
    """Whether the station has removed (or is about to remove) the personal data of the case or
    report ``ev`` names: the case was handed out, or the report answered, more than the retention
    period ago (the station's rule, sync/law/retention.py; the county counts from the time the station
    wrote on the hand-out, a day early, so a station clock running slow does not let one through)."""
    ref = ev.body.get("id") if isinstance(ev.body, dict) else None
    if not isinstance(ref, str):
        return False
    row = db.execute("SELECT handed_out_at FROM cases WHERE id = ?", (ref,)).fetchone()
    if row is None:
        row = db.execute("SELECT answered_at FROM reports WHERE id = ?", (ref,)).fetchone()
    if row is None or not row[0]:
        return False
    try:
        since = dt.datetime.fromisoformat(str(row[0]).replace("Z", "+00:00"))
    except ValueError:
        return False
    if since.tzinfo is None:
        since = since.replace(tzinfo=dt.timezone.utc)
    days = current(county)["retention_days"]
    now = now or county.now()
    return since <= now - dt.timedelta(days=days - 1)


def as_returned(county: Context, db: Any, ev: Event) -> Event:
    """A station's own event as the county gives it back (``up_return``, PROTOCOL.md §8.5): whole,
    unless it names a case or report purged at the station under the retention period: then its
    redacted stub (hash and signature kept, §8.7). The county keeps every body; it never hands
    back personal data the station has removed by design."""
    if retention.is_redacted(ev.body) or not purged_at_station(county, db, ev):
        return ev
    return dataclasses.replace(ev, body=retention.redact(ev.body))
