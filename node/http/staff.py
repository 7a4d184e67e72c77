"""The station's account pages (/staff) and API (/api/v1/staff): parse, check that the user is an
admin (``require_admin``, the one permission check the page and the API share), call
node/services/staff.py, render."""

from __future__ import annotations

import logging
from urllib.parse import quote
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from node.services.staff import (ACTIONS, StaffError, account, add, generate_password, listing, reset_password, set_active,
                                 unlock)
from node.store import Store
from templates import N_, gettext_for, locale_of, render
from templates.web import api_error, bearer_user, checked_form, json_object, session_user

logger = logging.getLogger("lastmile.node.staff")


class Forbidden(HTTPException):
    """403 with the API error code ``forbidden``."""

    def __init__(self, message: str) -> None:
        super().__init__(403, message)
        self.code = "forbidden"


def require_admin(user: dict[str, Any]) -> None:
    """The one check of page and API: only an active station admin manages accounts."""
    if user.get("role") != "admin":
        logger.warning("%r (%s) refused: only the station's admin manages accounts", user.get("username"),
                       user.get("role"))
        raise Forbidden(N_("Only the station's administrator can manage accounts."))


# web: page and API ----------------------------------------------------------------
def _store(request: Request) -> Store:
    return request.app.state.station.store  # type: ignore[no-any-return]


def _admin(request: Request) -> dict[str, Any]:
    user = session_user(request)
    require_admin(user)
    return user


async def _page(request: Request, status: int = 200, **context: Any) -> Response:
    staff = await run_in_threadpool(listing, _store(request))
    values = {"error": None, "form": {}, "shown": None, **context}
    return render(request, "node/staff.html", status, st=request.app.state.station, staff=staff,
                  flash=request.query_params.get("m"), who=request.query_params.get("u", ""), **values)


async def staff_page(request: Request) -> Response:
    _admin(request)
    return await _page(request)


def _new_password(form: Any) -> tuple[str, bool]:
    """(the password, whether it was generated) from a form with password, password2, generate."""
    if form.get("generate") == "1":
        return generate_password(), True
    password = str(form.get("password", ""))
    if password != str(form.get("password2", "")):
        raise StaffError(422, "invalid", N_("The two passwords differ; type the same password twice."), "password")
    return password, False


async def staff_add(request: Request) -> Response:
    user = _admin(request)
    form = await checked_form(request)
    values = {k: str(form.get(k, "")).strip() for k in ("username", "name", "role")}
    values["role"] = values["role"] or "agent"
    try:
        password, generated = _new_password(form)
        token = await run_in_threadpool(add, _store(request), user["username"], values["username"], values["name"],
                                        values["role"], password)
    except StaffError as exc:
        logger.info("%r could not add the account %r: %s", user["username"], values["username"], exc.message)
        return await _page(request, exc.status, error=exc.message, form=values)
    return await _page(request, shown={"username": values["username"], "token": token,
                                            "password": password if generated else None})


async def staff_change(request: Request) -> Response:
    """POST /staff/{username}/disable | enable | password | unlock."""
    user = _admin(request)
    form = await checked_form(request)
    username, action = request.path_params["username"], request.path_params["action"]
    if action not in ACTIONS:
        raise HTTPException(404, N_("There is no such account at this station."))
    try:
        if action == "password":
            password, generated = _new_password(form)
            await run_in_threadpool(reset_password, _store(request), user["username"], username, password)
            if generated:
                return await _page(request, shown={"username": username, "password": password, "token": None})
        elif action == "unlock":
            await run_in_threadpool(unlock, _store(request), user["username"], username)
        else:
            await run_in_threadpool(set_active, _store(request), user["username"], username, action == "enable")
    except StaffError as exc:
        logger.info("%r could not %s the account %r: %s", user["username"], action, username, exc.message)
        return await _page(request, exc.status, error=exc.message)
    return RedirectResponse(f"/staff?m={action}&u={quote(username, safe='')}", 303)


async def _api_admin(request: Request) -> dict[str, Any]:
    user = await run_in_threadpool(bearer_user, request, _store(request).user_by_token)
    require_admin(user)
    return user


def _refusal(request: Request, exc: StaffError) -> Response:
    message = gettext_for(locale_of(request))(exc.message)
    return api_error(exc.status, exc.code, message, {exc.field: message} if exc.field else None)


async def api_staff(request: Request) -> Response:
    """``GET /api/v1/staff``: every account of the station."""
    await _api_admin(request)
    return JSONResponse({"staff": await run_in_threadpool(listing, _store(request))})


async def api_staff_add(request: Request) -> Response:
    """``POST /api/v1/staff`` ``{"username", "name", "role", "password"}`` → 201 the account and
    its API token (shown this once)."""
    user = await _api_admin(request)
    payload = await json_object(request)
    values = {k: payload.get(k, "agent" if k == "role" else "") for k in ("username", "name", "role", "password")}
    bad = [k for k, v in values.items() if not isinstance(v, str)]
    if bad:
        return api_error(422, "invalid", "username, name, role and password are strings", {k: "string" for k in bad})
    try:
        token = await run_in_threadpool(add, _store(request), user["username"], values["username"],
                                        values["name"].strip(), values["role"], values["password"])
    except StaffError as exc:
        logger.info("%r could not add the account %r: %s", user["username"], values["username"], exc.message)
        return _refusal(request, exc)
    added = await run_in_threadpool(account, _store(request), values["username"])
    return JSONResponse({**(added or {}), "token": token}, 201)


async def api_staff_change(request: Request) -> Response:
    """``POST /api/v1/staff/{username}/disable | enable | password`` (``{"password"}``) | unlock."""
    user = await _api_admin(request)
    username, action = request.path_params["username"], request.path_params["action"]
    if action not in ACTIONS:
        return api_error(404, "not_found", "POST /api/v1/staff/{username}/disable, /enable, /password or /unlock")
    try:
        if action == "password":
            payload = await json_object(request)
            password = payload.get("password")
            if not isinstance(password, str):
                return api_error(422, "invalid", "password is a string", {"password": "string"})
            await run_in_threadpool(reset_password, _store(request), user["username"], username, password)
        elif action == "unlock":
            await run_in_threadpool(unlock, _store(request), user["username"], username)
        else:
            await run_in_threadpool(set_active, _store(request), user["username"], username, action == "enable")
    except StaffError as exc:
        logger.info("%r could not %s the account %r: %s", user["username"], action, username, exc.message)
        return _refusal(request, exc)
    return JSONResponse(await run_in_threadpool(account, _store(request), username))
