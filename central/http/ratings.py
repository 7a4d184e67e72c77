"""Thin handlers of the ratings list and the follow-up answers (整改反馈); the work is in
central/services/ratings.py, who may see and answer what in central/services/permissions.py."""

from __future__ import annotations

import logging
from typing import Any, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from central.services import ratings
from central.http.errors import refusal
from central.county import County
from central.errors import CountyError
from central.http.pages import api_user, clerk, county, form_of
from templates import gettext_for, locale_of, render
from templates.web import json_object

logger = logging.getLogger("lastmile.central")


async def ratings_page(request: Request, status: int = 200, error: str | None = None,
                       failed: str | None = None) -> Response:
    user = clerk(request)
    rows = await run_in_threadpool(ratings.listing, county(request), user)
    return render(request, "central/ratings.html", status, ratings=rows, error=error, failed=failed,
                  flash=request.query_params.get("m"))


async def answer_page(request: Request) -> Response:
    user = clerk(request)
    form = await form_of(request)
    case_id = request.path_params["case_id"]
    try:
        await run_in_threadpool(ratings.answer, county(request), case_id, str(form.get("answer", "")), user)
    except CountyError as exc:
        logger.info("answer to the rating of %s refused: %s", case_id, exc.code)
        return await ratings_page(request, exc.status, gettext_for(locale_of(request))(str(exc)), case_id)
    return RedirectResponse("/ratings?m=answered", 303)


async def api_ratings(request: Request) -> Response:
    """``GET /api/v1/ratings`` (``?open=1``: open follow-ups only): what the caller may read."""
    user = await api_user(request)
    open_only = request.query_params.get("open") in ("1", "true")
    rows = await run_in_threadpool(ratings.listing, county(request), user, open_only=open_only)
    return JSONResponse({"ratings": rows, "open": sum(1 for r in rows if r["open"])})


async def api_answer(request: Request) -> Response:
    """``POST /api/v1/ratings/{case_id}/answer`` ``{"answer": "..."}``."""
    user = await api_user(request)
    body = await json_object(request)
    case_id = request.path_params["case_id"]
    try:
        rating = await run_in_threadpool(ratings.answer, county(request), case_id, body.get("answer"), user)
    except CountyError as exc:
        logger.info("answer to the rating of %s refused over the API: %s", case_id, exc.code)
        return refusal(request, exc)
    return JSONResponse(rating)


class OpenFollowUps:
    """ASGI middleware: on a logged-in page request, put the number of open follow-ups the user may
    answer in ``scope["lastmile.open_followups"]`` for the navigation (counted in a worker thread)."""

    def __init__(self, app: Any, county: Callable[[], County]) -> None:
        self.app, self.county = app, county

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("method") == "GET" and not scope["path"].startswith(
                ("/api/", "/sync/", "/static/", "/enroll/")):
            user = scope.get("session", {}).get("user") if isinstance(scope.get("session"), dict) else None
            if user and scope.get("lastmile.session_checked"):
                scope["lastmile.open_followups"] = await run_in_threadpool(ratings.open_count, self.county(), user)
        await self.app(scope, receive, send)
