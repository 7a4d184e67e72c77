"""A case's clock: its time limit in working days, suspended while the case waits on the citizen
(中止计时), as both apps show it. Counts by the working-day calendar (sync/law/workdays.py)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sync.law import workdays
from sync.law.transitions import Status


def is_workday(day: dt.date) -> bool:
    """Chinese working day by the library's schedule, Monday to Friday past it (provisional).
    A thin wrapper: the county's entered years are in ``sync.law.workdays.WorkCalendar``."""
    return workdays.LIBRARY_ONLY.is_workday(day)


def add_working_days(start: dt.date, days: int, calendar: workdays.WorkCalendar | None = None) -> dt.date:
    """The date by which ``days`` working days after ``start`` have passed (the day itself not counted),
    by ``calendar`` (the station's: the county's entered years first), else the library's."""
    return (calendar or workdays.LIBRARY_ONLY).add_working_days(start, days)


def time_limit(limit_days: int, accepted_on: dt.date, suspensions: list[tuple[dt.date, dt.date | None]],
               today: dt.date, workday: Any = None) -> dict[str, Any]:
    """Days used and left of a case's time limit on ``today``, and the promised date.

    Working days after the acceptance count, except those inside a suspension ``(start, end]``:
    from the day the case began to wait on the citizen (that day still counts) to the day of the
    supplement (not counted; the clock runs again from the next working day). While a suspension
    is open (``end`` None) the promised date is unknown (None) and ``suspended`` is true.
    ``workday``: the calendar's ``is_workday`` (default: the library's)."""
    is_work = workday or is_workday

    def suspended(day: dt.date) -> bool:
        return any(start < day and (end is None or day <= end) for start, end in suspensions)

    used, day = 0, accepted_on
    while day < today:
        day += dt.timedelta(days=1)
        if is_work(day) and not suspended(day):
            used += 1
    open_now = any(end is None for _, end in suspensions)
    promised: dt.date | None = None
    if not open_now:
        counted, day = 0, accepted_on
        while counted < limit_days:
            day += dt.timedelta(days=1)
            if is_work(day) and not suspended(day):
                counted += 1
        promised = day
    return {"days_used": used, "days_left": limit_days - used, "promised_date": promised.isoformat() if promised else None,
            "suspended": open_now}


def china_day(timestamp: str) -> str:
    """The date in China (UTC+8) of an ISO timestamp (the county writes UTC, stations China time)."""
    when = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone(dt.timedelta(hours=8))).date().isoformat()


def suspensions_of(raw: str | None) -> list[tuple[dt.date, dt.date | None]]:
    """The stored form (JSON ``[[start, end or null], ...]``) as dates."""
    out: list[tuple[dt.date, dt.date | None]] = []
    for start, end in json.loads(raw or "[]"):
        out.append((dt.date.fromisoformat(start), dt.date.fromisoformat(end) if end else None))
    return out


def suspend(raw: str | None, on: str) -> str:
    """Open a suspension on day ``on`` (YYYY-MM-DD) unless one is open."""
    rounds = json.loads(raw or "[]")
    if not rounds or rounds[-1][1] is not None:
        rounds.append([on, None])
    return json.dumps(rounds)


def resume(raw: str | None, on: str) -> str:
    """Close the open suspension on day ``on``."""
    rounds = json.loads(raw or "[]")
    if rounds and rounds[-1][1] is None:
        rounds[-1][1] = max(on, rounds[-1][0])
    return json.dumps(rounds)


def case_clock(*, time_limit_days: Any, accepted_at: str | None, suspensions: str | None, status: str | None,
               decided_at: str | None, today: dt.date, workday: Any = None) -> dict[str, Any] | None:
    """The time limit of a case as both apps show it: ``days_used``, ``days_left``, the
    ``promised_date`` moved by every suspension, and ``suspended`` (waiting on the citizen). The
    clock stops at an approval or a rejection. None for a case without a time limit (a correction
    notice or a refusal at the station)."""
    if type(time_limit_days) is not int or not accepted_at or status in (Status.CORRECTION_NOTICE, Status.REFUSED):
        return None
    end = today
    if status in (Status.APPROVED, Status.REJECTED, Status.HANDED_OUT) and decided_at:
        end = min(today, dt.date.fromisoformat(china_day(decided_at)))
    return time_limit(time_limit_days, dt.date.fromisoformat(accepted_at[:10]), suspensions_of(suspensions), end,
                      workday)
