"""Thin handlers of the ratings list and the follow-up answers (整改反馈); the work is in
central/services/ratings.py, who may see and answer what in central/services/permissions.py."""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from central.services import ratings
from central.http.errors import refusal
from central.county import CountyError
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
