"""``GET``/``PUT /api/v1/settings/retention``: the personal-data retention period of the stations
(central/services/retention.py). Thin: the work runs in a worker thread."""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from central.services import permissions, retention
from central.http.pages import api_user, county
from sync.law import retention as rules
from templates import N_
from templates.web import api_error, json_object

logger = logging.getLogger("lastmile.central")


async def api_retention(request: Request) -> Response:
    """GET: the period in force; PUT (supervisors) ``{"retention_days": N}``: set it and send it to
    every station."""
    user = await api_user(request)
    c = county(request)
    if request.method == "GET":
        return JSONResponse(await run_in_threadpool(retention.current, c))
    if not permissions.is_supervisor(user):
        logger.warning("retention period refused: %s is not a supervisor", user["username"])
        raise permissions.Forbidden(N_("Only a supervisor may set the retention period."), "supervisor_only")
    body = await json_object(request)
    unknown = sorted(set(body) - {"retention_days"})
    days = body.get("retention_days")
    if unknown or type(days) is not int or not rules.MIN_DAYS <= days <= rules.MAX_DAYS:
        logger.warning("retention period refused for %s: %r", user["username"], body)
        return api_error(422, "invalid_retention", f"The body must be {{\"retention_days\": N}}, N a whole number "
                         f"of days from {rules.MIN_DAYS} to {rules.MAX_DAYS}.",
                         {"field": "retention_days", "unknown": unknown})
    await run_in_threadpool(retention.publish, c, days, user["username"])
    return JSONResponse(await run_in_threadpool(retention.current, c))
