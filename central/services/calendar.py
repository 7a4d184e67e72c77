"""The county's working-day calendar: entering a year's schedule (CLI and API), sending it down to
every station as ``calendar.published``, reading the effective schedule, and warning the county
when next year's schedule is missing (sync/law/workdays.py holds the counting)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from central.errors import CountyError
from sync import log
from sync.law import facts, workdays
from sync.law.errors import N_
from sync.law.workdays import ScheduleError, WorkCalendar

if TYPE_CHECKING:
    from central.services.context import Context

logger = logging.getLogger("lastmile.central")
CHINA = dt.timezone(dt.timedelta(hours=8))


class ScheduleRefused(CountyError):
    """422 ``invalid_schedule``: ``details`` names the field and the value at fault."""

    def __init__(self, exc: ScheduleError) -> None:
        super().__init__(422, "invalid_schedule", exc.english())
        self.message_id, self.params = exc.message, exc.params
        self.details = {"field": exc.field, **{k: v for k, v in exc.params.items() if k != "field"}}


def calendar_of(county: Context) -> WorkCalendar:
    """The county's calendar: the years it entered, then the library, then weekends. Blocking."""
    with county.store.lock:
        return workdays.calendar_from(county.store.conn)


def china_today() -> dt.date:
    return dt.datetime.now(CHINA).date()


def publish(county: Context, year: Any, holidays: Any, workdays_: Any, by: str) -> dict[str, Any]:
    """Enter (or correct) ``year``'s schedule and send it to every active station; returns the
    ``calendar.published`` body. A later publication of a year replaces the earlier one."""
    try:
        days_off, days_on = workdays.check_schedule(year, holidays, workdays_)
    except ScheduleError as exc:
        logger.warning("calendar of %r refused (by %s): %s", year, by, exc)
        raise ScheduleRefused(exc) from exc
    body = facts.SPECS[facts.CALENDAR_PUBLISHED].to_body(year=year, holidays=days_off, workdays=days_on,
                                                         at=log.utcnow(), by=by)
    with county.store.transaction() as db:
        workdays.store_year(db, body)          # on record even with no station enrolled yet
        for code in county.store.active_station_codes(db):
            county.record(db, code, facts.Fact(facts.CALENDAR_PUBLISHED, body))
    logger.info("calendar of %s published by %s: %d holidays, %d make-up working days", year, by,
                len(days_off), len(days_on))
    return body


def send_all(county: Context, db: Any, station: str) -> None:
    """Every year's schedule on record, to a station just enrolled (inside the enrolment transaction)."""
    for year, body in sorted(workdays.stored_years(db).items()):
        county.record(db, station, facts.Fact(facts.CALENDAR_PUBLISHED, body))


def effective(county: Context, year: int) -> dict[str, Any]:
    """``year``'s schedule as the county counts it, with its source (``county``, ``library`` or
    ``weekends``, the last provisional) and, for an entered year, when and by whom. Blocking."""
    with county.store.lock:
        entered = workdays.stored_years(county.store.conn)
    out = WorkCalendar.of(entered).schedule(year)
    held = entered.get(year)
    out.update({"published_at": held["at"], "published_by": held["by"]} if held else
               {"published_at": None, "published_by": None})
    return out


def missing_year(county: Context, today: dt.date | None = None) -> int | None:
    """The year the county must enter now (this year, or from 1 November next year) if neither it
    nor the library has the schedule; None otherwise. Blocking."""
    return calendar_of(county).missing_year(today or china_today())


WARNING = N_("No working-day schedule for %(year)s: promised dates in %(year)s are counted on weekends "
             "alone and marked provisional. Enter the State Council's schedule with "
             "`lastmile central calendar set %(year)s FILE` or PUT /api/v1/calendar/%(year)s.")


# --- the file the CLI reads ------------------------------------------------------------------------

LINE = re.compile(r"^(\d{4}-\d{2}-\d{2})\s+(holiday|workday)$")


def read_file(path: Path) -> tuple[list[Any], list[Any]]:
    """A schedule file: JSON ``{"holidays": [...], "workdays": [...]}``, or text lines
    ``2027-01-01 holiday`` / ``2027-02-07 workday`` (blank lines and ``#`` comments skipped).
    ScheduleError for a file of neither shape."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ScheduleError(N_("The file is not valid JSON: %(problem)s"), "file", problem=str(exc)) from None
        unknown = set(data) - {"holidays", "workdays"}
        if unknown:
            raise ScheduleError(N_("The file has fields other than holidays and workdays: %(fields)s"), "file",
                                fields=", ".join(sorted(unknown)))
        return data.get("holidays", []), data.get("workdays", [])
    holidays, days = [], []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = LINE.fullmatch(line)
        if m is None:
            raise ScheduleError(N_("Line %(n)s is not of the form YYYY-MM-DD holiday or YYYY-MM-DD workday."),
                                "file", n=n)
        (holidays if m[2] == "holiday" else days).append(m[1])
    return holidays, days
