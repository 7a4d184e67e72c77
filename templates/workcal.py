"""The working-day calendar for the pages of both apps: which promised dates are provisional
(暂定, counted on weekends alone) and, for the county's supervisors, which year's schedule is missing.

A pure ASGI middleware, so no page handler has to load it: on a page request (GET, not the API,
sync, enrolment or static files) by a logged-in user it loads the calendar in a worker thread and
leaves it in ``request.state.workcal``; for a user whose role is in ``warn_roles`` also
``request.state.calendar_missing`` (the year to enter, or None). The templates read them
(templates/node/_cal.html, templates/central/_cal.html, templates/central/_cal_banner.html).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable

from starlette.concurrency import run_in_threadpool

from sync.law.workdays import WorkCalendar

CHINA = dt.timezone(dt.timedelta(hours=8))
SKIP = ("/api/", "/sync/", "/enroll/", "/static/", "/login", "/logout")


class WorkCalendarState:
    def __init__(self, app: Any, load: Callable[[], WorkCalendar], today: dt.date | None = None,
                 warn_roles: tuple[str, ...] = ()) -> None:
        self.app, self.load, self.today, self.warn_roles = app, load, today, warn_roles

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope["path"].startswith(SKIP):
            user = (scope.get("session") or {}).get("user")
            if isinstance(user, dict):
                cal = await run_in_threadpool(self.load)
                state = scope.setdefault("state", {})
                state["workcal"] = cal
                if user.get("role") in self.warn_roles:
                    state["calendar_missing"] = cal.missing_year(self.today or dt.datetime.now(CHINA).date())
        await self.app(scope, receive, send)
