"""What the station's handlers share: the station and the user of a request, an intake form's guard
and scans, an application as the API's JSON, the QR of a printed document, the start page's lists."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from node.services import cases, documents, idem, reports, scans
from node.services import sittings
from node.services import verify as doc_verify
from node.station import Station
from node.store import AccountDisabled
from sync.law.transitions import Status
from templates import N_, check_csrf, csrf_token, gettext_for, locale_of, qr_svg
from templates.web import api_error, bearer_user, checked_form, session_user

logger = logging.getLogger("lastmile.node")



def station(request: Request) -> Station:
    return request.app.state.station  # type: ignore[no-any-return]


agent = session_user


form_of = checked_form


def authenticate(request: Request, username: str, password: str) -> dict[str, Any] | None:
    try:
        return station(request).store.login(username, password)
    except AccountDisabled as exc:      # the right password: say why, plainly
        logger.info("login of the disabled account %r refused", username)
        raise HTTPException(403, N_("This account is disabled. Ask the station's administrator to enable it "
                                    "again.")) from exc


def accounts(request: Request) -> Any:
    """Where the session plumbing looks up agents and ends their sessions: the station's store."""
    return station(request).store


DUE_WITHIN = 3      # working days: a case this close to its promised date is listed on the start page


def today_lists(st: Station) -> dict[str, Any]:
    """What needs the agent today: results to hand out, cases waiting for the citizen, and open cases
    near or past their promised date (by the station's calendar, suspensions counted)."""
    def having(statuses: tuple[str, ...], limit: int = 100) -> list[dict[str, Any]]:
        return st.store.applications("status IN (" + ", ".join("?" for _ in statuses) + ")", statuses, limit=limit)
    due = []
    for app in having((Status.ACCEPTED, Status.RECEIVED), limit=2000):
        life = st.life(app)
        if life["days_left"] is not None and life["days_left"] <= DUE_WITHIN:
            due.append((app, life))
    due.sort(key=lambda pair: pair[1]["days_left"])
    return {"results": having(Status.RESULTS), "waiting": having(Status.WAITING), "due": due,
            "open_reports": reports.open_reports(st.store)}


async def form_submission(request: Request, st: Station, user: dict[str, Any], form: Any
                          ) -> tuple[str, dict[str, Any] | None]:
    """The guard of an intake form (the item form and the sitting form): the CSRF token, then the form's
    one-time ``submit_token``, which must have been issued in this session (400 with a plain sentence
    otherwise). Returns the token and what its first submission recorded, if there was one (a double
    click, the back button): the caller shows that instead of taking a second case."""
    if not check_csrf(request, form):
        raise HTTPException(400, N_("The page expired; please go back, reload and try again."))
    token = str(form.get("submit_token", ""))
    if not idem.form_token_ok(csrf_token(request), token):
        raise HTTPException(400, N_("This form was not issued to you in this session; open it again from "
                                    "the start page."))
    return token, await run_in_threadpool(idem.find, st.store, FORM + user["username"], token)


async def form_scans(form: Any) -> list[scans.Scan]:
    """The scans of an intake or supplement form (``scan_<material>`` file fields), checked and
    prepared off the event loop; cases.IntakeError naming the field of a refused one."""
    attached = []
    for key, value in form.multi_items():
        if key.startswith("scan_") and isinstance(value, UploadFile) and value.filename:
            raw = await value.read(scans.MAX_UPLOAD + 1)
            try:
                attached.append(await run_in_threadpool(scans.prepare, key[5:], value.filename, raw))
            except scans.ScanError as exc:
                raise cases.IntakeError({key: str(exc)}) from exc
    return attached


async def api_scans(request: Request, payload: dict[str, Any]) -> list[scans.Scan] | Response:
    """The scans of an API body (``scans``: ``[{material, name, data_base64}]``), prepared off the
    event loop, or the 422 answer naming the first refused one."""
    attached = []
    for i, scan in enumerate(payload.get("scans") if isinstance(payload.get("scans"), list) else []):
        try:
            raw = base64.b64decode(str(scan.get("data_base64", "")), validate=True)
            attached.append(await run_in_threadpool(scans.prepare, str(scan.get("material", "")),
                                                    str(scan.get("name", "")), raw))
        except (ValueError, AttributeError, binascii.Error):
            return api_error(422, "invalid", f"scans[{i}] needs material, name and data_base64",
                             {f"scans[{i}]": "needs material, name and data_base64 (strings)"})
        except scans.ScanError as exc:
            return api_error(422, "invalid", gettext_for(locale_of(request))(str(exc)), {f"scans[{i}]": str(exc)})
    return attached


FORM = "form:"      # scope of the intake form's tokens in idempotency_keys, per agent; the API's is "api:"


async def application_of(request: Request) -> tuple[Station, dict[str, Any]]:
    """The station and the application the path names, for a logged-in agent; else 303/404."""
    agent(request)
    st = station(request)
    app = await run_in_threadpool(st.store.application, request.path_params["id"])
    if app is None:
        raise HTTPException(404, N_("No such application at this station."))
    return st, app


def verify_check(request: Request, text: Any) -> dict[str, Any]:
    """Check a document's QR text or typed code here (node/services/verify.py). Blocking."""
    return doc_verify.check(station(request), text)


def decision_qr(st: Station, app: dict[str, Any]) -> dict[str, str | None]:
    """``qr`` (the SVG), ``qr_text`` and ``verify_code`` of the county's written decision on ``app``
    as the station prints it (材料补正通知书, 办结通知书, 不予批准决定书). Blocking."""
    return printed_qr(doc_verify.decision_printed(st, app, documents.decision_event(st, app)))


def printed_qr(printed: dict[str, str | None]) -> dict[str, str | None]:
    """A document's ``qr_text`` and ``verify_code`` with ``qr``, its SVG (None without a text)."""
    return {**printed, "qr": qr_svg(printed["qr_text"]) if printed["qr_text"] else None}


def verification_text(st: Station, app: dict[str, Any]) -> str:
    """What the QR code on a document carries: readable lines and the signed token (node/services/verify.py)."""
    return doc_verify.qr_text(st, app) or app["receipt_no"]


# JSON API ----------------------------------------------------------------------
def _api_user(request: Request) -> dict[str, Any]:
    return bearer_user(request, station(request).store.user_by_token)


async def api_user(request: Request) -> dict[str, Any]:
    """The API user of the bearer token (looked up in a worker thread), or 401."""
    return await run_in_threadpool(_api_user, request)


def app_json(st: Station, app: dict[str, Any]) -> dict[str, Any]:
    body = app["body"] if isinstance(app["body"], dict) else {}
    return {"id": app["id"], "receipt_no": app["receipt_no"], "status": app["status"], "item_code": app["item_code"],
            "item_name": app["item_name"], "applicant_name": app["applicant_name"], "created_at": app["created_at"],
            "promised_date": app["promised_date"] or None, "missing": body.get("missing", []),
            "promised_provisional": st.calendar().promised_provisional(app["created_at"], app["promised_date"]),
            "county_received_at": app["county_received_at"],
            "decision": documents.decision_json(st, app), "documents": documents.listing(st, app),
            "handed_out_at": app["handed_out_at"],
            "qr_text": doc_verify.qr_text(st, app), "verify_code": doc_verify.verify_code(app),
            "scans": [{"sha256": x["sha256"], "material": x["material"], "name": x["name"], "size": x["size"],
                       "uploaded": bool(x["done"])} for x in st.store.scans_of(app["id"])],
            **sittings.link_json(body),
            **st.life(app)}


def replayed(request: Request, st: Station, first: dict[str, Any], fingerprint: str) -> Response:
    """The answer to a repeat of an Idempotency-Key: the first answer, or 422 if the request differs."""
    if first["fingerprint"] != fingerprint:
        return api_error(422, "idempotency_key_reused", gettext_for(locale_of(request))(N_(
            "This Idempotency-Key was already used for a different application; use a new key for a new one.")),
            {"id": first["app_id"]})
    app = st.store.application(first["app_id"])
    body = json.loads(first["response"]) if first["response"] else app_json(st, app) if app else None
    if body is None:
        return api_error(404, "not_found", "No such application at this station.")
    return JSONResponse(body, 201, headers={"idempotent-replayed": "true"})
