"""A case's life at the station beyond its row, for the pages and the API: the time limit (days
used and left, suspended while the case waits on the citizen), what the county's correction
request lists, and who collected the result. Pure: no SQL, no HTTP."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sync.law.clock import case_clock
from sync.law.transitions import Status

CHINA = dt.timezone(dt.timedelta(hours=8))


def life(app: dict[str, Any], today: dt.date | None = None, calendar: Any = None) -> dict[str, Any]:
    """``days_used``/``days_left``/``due_date`` (None without a time limit), ``suspended``,
    ``waiting`` (on the citizen), ``correction`` (``[{"code", "name", "problem", "text"}]`` or None)
    and ``collector`` (``{"name", "id_number", "relation"}``, None when the applicant collected).
    ``calendar``: the station's working days (sync/law/workdays.py; default the library's)."""
    clock = case_clock(time_limit_days=app.get("time_limit_days"), accepted_at=app.get("created_at"),
                       suspensions=app.get("suspensions"), status=app.get("status"),
                       decided_at=app.get("decided_at"), today=today or dt.datetime.now(CHINA).date(),
                       workday=calendar.is_workday if calendar is not None else None)
    return {"time_limit_days": app.get("time_limit_days"),
            "days_used": clock["days_used"] if clock else None,
            "days_left": clock["days_left"] if clock else None,
            "due_date": clock["promised_date"] if clock else None,
            "suspended": bool(clock and clock["suspended"]),
            "waiting": app.get("status") in Status.WAITING,
            "correction": json.loads(app["correction"]) if app.get("correction") else None,
            "collector": json.loads(app["collector"]) if app.get("collector") else None}
