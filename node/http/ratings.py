"""Thin handlers of the rating screen (好差评) and its API; the work is in node/services/ratings.py."""

from __future__ import annotations

import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from node.services import ratings
from node.http.common import agent, api_user, application_of, form_of, station
from templates import gettext_for, locale_of, render
from templates.web import api_error, json_object

logger = logging.getLogger("lastmile.node")
SCORES = sorted(ratings.SCORE_LABELS.items())


async def rate_form(request: Request) -> Response:
    """The screen the citizen uses on the agent's computer: five big buttons and a comment."""
    st, app = await application_of(request)
    if not await run_in_threadpool(ratings.may_rate, st, app):
        raise HTTPException(409, ratings.NOT_RATABLE if app["status"] not in ratings.RATABLE else ratings.ALREADY_RATED)
    return render(request, "node/rate.html", st=st, app=app, scores=SCORES, thanks=False, error=None)


async def rate_submit(request: Request) -> Response:
    user = agent(request)
    form = await form_of(request)
    st, app = await application_of(request)
    score_text = str(form.get("score", ""))
    score: Any = int(score_text) if score_text.isdigit() and len(score_text) == 1 else score_text
    try:
        await run_in_threadpool(ratings.rate, st, app["id"], score, str(form.get("comment", "")), user["name"])
    except ratings.Refused as exc:
        logger.info("rating of %s refused: %s", app["id"], exc.code)
        if exc.status == 422:
            return render(request, "node/rate.html", 422, st=st, app=app, scores=SCORES, thanks=False,
                          error=gettext_for(locale_of(request))(exc.message))
        raise HTTPException(exc.status, exc.message) from None
    return render(request, "node/rate.html", st=st, app=app, scores=SCORES, thanks=True, error=None)


async def api_rate(request: Request) -> Response:
    """``POST /api/v1/applications/{id}/rating`` ``{"score": 1-5, "comment": "..."}``: 201 with the
    rating; 422 bad score or comment, 404 unknown case, 409 not ratable now or already rated."""
    user = await api_user(request)
    body = await json_object(request)
    st = station(request)
    _ = gettext_for(locale_of(request))
    try:
        rating = await run_in_threadpool(ratings.rate, st, request.path_params["id"], body.get("score"),
                                         body.get("comment", ""), user["name"])
    except ratings.Refused as exc:
        logger.info("rating of %s refused over the API: %s", request.path_params["id"], exc.code)
        details = {"score": "a whole number from 1 to 5"} if exc.code == "bad_score" else \
            {"comment": "text of at most 500 characters"} if exc.code == "bad_comment" else None
        return api_error(exc.status, exc.code, _(exc.message), details)
    return JSONResponse(rating, 201)
