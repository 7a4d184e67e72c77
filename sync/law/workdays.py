"""Working days: the State Council's schedule of public holidays and make-up working days, per year.

One value, :class:`WorkCalendar`, answers the station and the county alike, so both count the
same days. For each year, in this order:

1. ``county``: the schedule the county entered (``lastmile central calendar set``, ``PUT
   /api/v1/calendar/{year}``) and sent to every station as a ``calendar.published`` fact;
2. ``library``: the Python package ``chinesecalendar``, for the years it ships;
3. ``weekends``: Monday to Friday. A date counted on such a year is **provisional** (暂定): the
   pages, the receipt and the JSON say so, and the county is warned to enter the year.

A year's schedule is ``{"holidays": [...], "workdays": [...]}`` with ``YYYY-MM-DD`` strings:
``holidays`` are days off (on any day of the week), ``workdays`` make-up working days (weekend
days only). Pure code apart from ``stored_years`` / ``store_year``, which read and write the
``meta`` table both apps have (rows ``calendar:<year>``, the canonical JSON of the published body).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import chinese_calendar

from sync.law.errors import N_, RuleError

COUNTY, LIBRARY, WEEKENDS = "county", "library", "weekends"
META_PREFIX = "calendar:"
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MIN_YEAR, MAX_YEAR = 2000, 2100
MAX_DATES = 366
#: from this month of a year on, the county is warned if next year has no schedule
WARN_FROM_MONTH = 11


class ScheduleError(RuleError, ValueError):
    """A schedule the county may not enter: a ``RuleError`` (message id and parameters, formatted
    the same way) that also names ``field``, the body field at fault (``year``, ``holidays``,
    ``workdays``, ``file``), and is a ValueError to callers that parse input."""

    def __init__(self, message: str, where: str = "", **params: Any) -> None:
        self.field = where
        super().__init__(message, **params)


def library_knows(year: int) -> bool:
    """``chinesecalendar`` ships the State Council's schedule of ``year``."""
    try:
        chinese_calendar.is_workday(dt.date(year, 6, 1))
    except NotImplementedError:
        return False
    return True


def _weekend(day: dt.date) -> bool:
    return day.weekday() >= 5


def check_schedule(year: Any, holidays: Any, workdays: Any) -> tuple[list[str], list[str]]:
    """The sorted, de-duplicated lists of a valid schedule for ``year``; ScheduleError otherwise:
    every entry a real ``YYYY-MM-DD`` date in that year, no date in both lists, every make-up
    working day a Saturday or Sunday."""
    if type(year) is not int or not MIN_YEAR <= year <= MAX_YEAR:
        raise ScheduleError(N_("The year must be a whole number from %(low)s to %(high)s."), "year",
                            low=MIN_YEAR, high=MAX_YEAR)
    out: dict[str, list[str]] = {}
    for name, values in (("holidays", holidays), ("workdays", workdays)):
        if not isinstance(values, list) or len(values) > MAX_DATES:
            raise ScheduleError(N_("%(field)s must be a list of at most 366 dates."), name, field=name)
        days: set[str] = set()
        for value in values:
            day = _day(value)
            if day is None:
                raise ScheduleError(N_("%(value)s in %(field)s is not a date written YYYY-MM-DD."), name,
                                    value=str(value)[:40], field=name)
            if day.year != year:
                raise ScheduleError(N_("%(value)s in %(field)s is not in %(year)s."), name, value=value,
                                    field=name, year=year)
            if name == "workdays" and not _weekend(day):
                raise ScheduleError(N_("%(value)s is a make-up working day but not a Saturday or Sunday."), name,
                                    value=value)
            days.add(value)
        out[name] = sorted(days)
    both = sorted(set(out["holidays"]) & set(out["workdays"]))
    if both:
        raise ScheduleError(N_("%(value)s is both a holiday and a make-up working day."), "workdays", value=both[0])
    return out["holidays"], out["workdays"]


def _day(value: Any) -> dt.date | None:
    if not isinstance(value, str) or not DAY.fullmatch(value):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def _as_date(value: dt.date | str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


@dataclass(frozen=True)
class WorkCalendar:
    """The working days the county entered (``years``: year -> (holidays, workdays) as date sets),
    falling back to the library, then to weekends only (provisional)."""
    years: Mapping[int, tuple[frozenset[dt.date], frozenset[dt.date]]]

    @classmethod
    def of(cls, entered: Mapping[int, Mapping[str, Iterable[str]]] | None = None) -> WorkCalendar:
        """From ``{year: {"holidays": [...], "workdays": [...]}}`` (each year checked)."""
        years = {}
        for year, sched in (entered or {}).items():
            holidays, workdays = check_schedule(int(year), list(sched.get("holidays", [])),
                                                list(sched.get("workdays", [])))
            years[int(year)] = (frozenset(map(dt.date.fromisoformat, holidays)),
                                frozenset(map(dt.date.fromisoformat, workdays)))
        return cls(years)

    def source(self, year: int) -> str:
        """Where ``year``'s schedule comes from: ``county``, ``library`` or ``weekends``."""
        if year in self.years:
            return COUNTY
        return LIBRARY if library_knows(year) else WEEKENDS

    def is_workday(self, day: dt.date) -> bool:
        entered = self.years.get(day.year)
        if entered is not None:
            holidays, workdays = entered
            return day in workdays or (not _weekend(day) and day not in holidays)
        try:
            return bool(chinese_calendar.is_workday(day))
        except NotImplementedError:
            return not _weekend(day)

    def add_working_days(self, start: dt.date, days: int) -> dt.date:
        """The date by which ``days`` working days after ``start`` have passed (``start`` not counted);
        ``start`` itself for 0 or fewer."""
        day, left = start, days
        while left > 0:
            day += dt.timedelta(days=1)
            if self.is_workday(day):
                left -= 1
        return day

    def working_days_between(self, start: dt.date, end: dt.date) -> int:
        """The working days in (start, end]: the days used from acceptance to ``end``; negative
        (the days left, counted back) when ``end`` is before ``start``."""
        if end < start:
            return -self.working_days_between(end, start)
        count, day = 0, start
        while day < end:
            day += dt.timedelta(days=1)
            count += self.is_workday(day)
        return count

    def provisional(self, day_or_range: Any) -> bool:
        """True if a day (a date or ``YYYY-MM-DD…`` string), or any day of a ``(first, last)``
        range, falls in a year counted on weekends alone."""
        if isinstance(day_or_range, (tuple, list)):
            first, last = (_as_date(d) for d in day_or_range)
        else:
            first = last = _as_date(day_or_range)
        if last < first:
            first, last = last, first
        return any(self.source(y) == WEEKENDS for y in range(first.year, last.year + 1))

    def promised_provisional(self, accepted: Any, promised: Any) -> bool:
        """A promised date (``YYYY-MM-DD``, or empty: no date, not provisional) counted from the
        acceptance time is provisional; tolerant of junk (not provisional)."""
        try:
            return bool(promised) and self.provisional((accepted, promised))
        except (TypeError, ValueError):
            return False

    def schedule(self, year: int) -> dict[str, Any]:
        """The effective schedule of ``year``: source, provisional, and the holidays (weekdays off,
        or every day the county listed) and make-up working days."""
        source = self.source(year)
        if source == COUNTY:
            holidays, workdays = self.years[year]
        else:
            days = [dt.date(year, 1, 1) + dt.timedelta(n) for n in range((dt.date(year + 1, 1, 1) - dt.date(year, 1, 1)).days)]
            holidays = frozenset(d for d in days if not _weekend(d) and not self.is_workday(d))
            workdays = frozenset(d for d in days if _weekend(d) and self.is_workday(d))
        return {"year": year, "source": source, "provisional": source == WEEKENDS,
                "holidays": sorted(d.isoformat() for d in holidays),
                "workdays": sorted(d.isoformat() for d in workdays)}

    def missing_year(self, today: dt.date) -> int | None:
        """The year the county should enter now: this year, or from 1 November next year, when
        neither the county nor the library has its schedule; None if nothing is missing."""
        wanted = [today.year] + ([today.year + 1] if today.month >= WARN_FROM_MONTH else [])
        return next((y for y in wanted if self.source(y) == WEEKENDS), None)


#: No county schedule: the library, then weekends (what ``clock.is_workday`` counts).
LIBRARY_ONLY = WorkCalendar({})


# --- stored schedules: the ``meta`` rows both apps keep ----------------------------------------

def stored_years(conn: Any) -> dict[int, dict[str, Any]]:
    """Every published body on record, by year: ``{year: {"year", "holidays", "workdays", "at", "by"}}``."""
    rows = conn.execute("SELECT name, value FROM meta WHERE name >= ? AND name < ?",
                        (META_PREFIX, META_PREFIX[:-1] + ";")).fetchall()
    out = {}
    for name, value in rows:
        year = name[len(META_PREFIX):]
        if year.isdigit():
            out[int(year)] = json.loads(value)
    return out


def calendar_from(conn: Any) -> WorkCalendar:
    return WorkCalendar.of(stored_years(conn))


def store_year(conn: Any, body: Mapping[str, Any]) -> bool:
    """Keep a ``calendar.published`` body as its year's schedule, replacing an earlier one; a body
    older (by ``at``) than the one held is ignored. True if stored."""
    name = f"{META_PREFIX}{int(body['year'])}"
    held = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    if held is not None and str(json.loads(held[0]).get("at", "")) > str(body.get("at", "")):
        return False
    value = json.dumps(dict(body), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    conn.execute("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                 (name, value))
    return True


def check_body(body: Any) -> tuple[int, list[str], list[str]]:
    """A ``calendar.published`` body: exactly ``year`` (int), ``holidays``, ``workdays`` (sorted,
    unique date lists of a valid schedule), ``at`` and ``by`` (non-blank strings)."""
    if not isinstance(body, dict) or set(body) != {"year", "holidays", "workdays", "at", "by"}:
        raise ScheduleError(N_("A calendar publication has exactly the fields year, holidays, workdays, at and by."))
    holidays, workdays = check_schedule(body["year"], body["holidays"], body["workdays"])
    if holidays != body["holidays"] or workdays != body["workdays"]:
        raise ScheduleError(N_("The dates of a calendar publication must be sorted and each listed once."))
    for name in ("at", "by"):
        if not isinstance(body[name], str) or not body[name].strip():
            raise ScheduleError(N_("A calendar publication needs %(field)s."), name, field=name)
    return body["year"], holidays, workdays
