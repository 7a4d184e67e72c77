"""Thin handlers of the county centre: parse, call County, render a page or JSON."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from central.services import bundles, calendar, documents, permissions, ratings, selfcheck
from central.http import documents as docviews
from central.services import reports as county_reports
from central.services import verify as doc_verify
from central.county import County
from central.errors import CountyError
from crypto import envelope
from crypto.errors import (BadEncoding, BadSignature, CryptoError, DecryptionFailed, EnvelopeTooLarge,
                           MalformedEnvelope, WrongRecipient)
from crypto.keys import PublicKeys, verify
from sync import blobs, chain
from sync.law.transitions import Status
from sync.errors import RevokedStation, SyncError, UnknownStation
from templates import N_, gettext_for, locale_of, reason_text, render, throttle
from templates.limits import ByteBudget, OverBudget, over_budget
from templates.web import api_error, bearer_user, checked_form, json_object, session_user, upload_form
from central.http.errors import refusal

logger = logging.getLogger("lastmile.central")

STATUS_OF_ERROR: list[tuple[type[Exception], int]] = [
    (EnvelopeTooLarge, 413), (UnknownStation, 403), (RevokedStation, 403),
    (BadSignature, 401), (WrongRecipient, 421), (DecryptionFailed, 400),
    (CryptoError, 400), (SyncError, 422),
]


def county(request: Request) -> County:
    return request.app.state.county  # type: ignore[no-any-return]


# sync and enrolment ----------------------------------------------------------
async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise EnvelopeTooLarge(f"body of {declared} bytes exceeds {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise EnvelopeTooLarge(f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


SYNC_READ_S = 60.0          # a whole push must arrive within this …
SYNC_MIN_RATE = 4096        # … plus its size at this many bytes per second


def _authentic(c: County, blob: bytes) -> None:
    """The envelope's shape and its station's signature, before it may take a sync slot."""
    p = envelope.parse(blob)
    keys = c.station_keys_for(p.header["from"], p.header["from_key"])   # current, or announced (rotation)
    if p.header["from_key"] != keys.sign_id:
        raise BadSignature("envelope is signed with a key that is not the station's current key")
    verify(keys.sign, p.signature, p.signed)


def _known_sender(c: County, header: dict[str, Any]) -> None:
    """The sender a push's header names is an enrolled, active station, signing with a key the
    county accepts for it (UnknownStation, RevokedStation, BadSignature)."""
    keys = c.station_keys_for(header["from"], header["from_key"])
    if header["from_key"] != keys.sign_id:
        raise BadSignature("envelope is signed with a key that is not the station's current key")


class PushReader:
    """Reads a push as it arrives, each piece counted against the process's budget of
    unauthenticated bytes (``held``: what the caller gives back once the signature is checked).
    As soon as its header is in, the envelope's shape, its total length (≤ 16 MiB, and the one
    ``Content-Length`` declares) and its sender (enrolled, active, a key the county accepts) are
    checked, so that a push from nobody is refused after a few hundred bytes, never buffered whole."""

    def __init__(self, request: Request, c: County) -> None:
        self.request, self.c, self.held = request, c, 0
        self.budget: ByteBudget = request.app.state.unverified

    async def read(self) -> bytes:
        declared = self.request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > envelope.MAX_ENVELOPE:
            raise EnvelopeTooLarge(f"body of {declared} bytes exceeds {envelope.MAX_ENVELOPE}")
        buf, total = bytearray(), None
        async for piece in self.request.stream():
            if not piece:
                continue
            if not self.budget.take(len(piece)):
                raise OverBudget()
            self.held += len(piece)
            buf += piece
            if total is None:
                head = envelope.parse_head(bytes(buf[:13 + envelope.MAX_HEADER]))
                if head is not None:
                    header, total = head
                    if declared.isdigit() and int(declared) != total:
                        raise MalformedEnvelope(f"Content-Length {declared} is not the envelope's length {total}")
                    await run_in_threadpool(_known_sender, self.c, header)
            if len(buf) > (total or envelope.MAX_ENVELOPE):
                raise MalformedEnvelope("the body is longer than the envelope's lengths say")
        return bytes(buf)


async def sync_exchange(request: Request) -> Response:
    """Read the push as it arrives, checking its header and sender as soon as they are in, within a
    deadline and the budget of unauthenticated bytes; check its signature; only then take one of the
    ``max_concurrent_syncs`` slots: a connection that trickles bytes, or sends junk, holds none."""
    peer = request.client.host if request.client else "?"
    declared = request.headers.get("content-length", "")
    size = int(declared) if declared.isdigit() else envelope.MAX_ENVELOPE
    c = county(request)
    reader = PushReader(request, c)
    try:
        blob = await asyncio.wait_for(reader.read(), SYNC_READ_S + min(size, envelope.MAX_ENVELOPE) / SYNC_MIN_RATE)
        await run_in_threadpool(_authentic, c, blob)
    except ClientDisconnect:
        # A power cut or a dropped link mid-upload: routine at a village station, nothing stored.
        logger.info("sync from %s: the station went away mid-request", peer)
        return Response(status_code=400)
    except asyncio.TimeoutError:
        logger.warning("sync from %s: the push did not arrive in time", peer)
        return api_error(408, "too_slow", "the push did not arrive in time; nothing was stored")
    except OverBudget:
        return over_budget(f"sync from {peer}")
    except (CryptoError, SyncError) as exc:
        return _sync_refusal(peer, exc)
    finally:
        reader.budget.give(reader.held)
    slots = request.app.state.sync_slots
    if not slots.acquire(blocking=False):
        # Too many stations at once (say, 300 reconnecting after an outage): ask this one to come
        # back later, at a random moment so that they spread out instead of returning together.
        wait = random.randint(5, 60)
        logger.info("sync from %s deferred %d s: busy", peer, wait)
        return JSONResponse({"error": "busy", "message": "the county centre is busy; retry later",
                             "details": {"retry_after": wait}}, 503, headers={"retry-after": str(wait)})
    try:
        sealed = await run_in_threadpool(c.answer, blob)
    except (CryptoError, SyncError) as exc:
        return _sync_refusal(peer, exc)
    finally:
        slots.release()
    return Response(sealed, media_type="application/octet-stream")


def _sync_refusal(peer: str, exc: Exception) -> Response:
    status = next(s for t, s in STATUS_OF_ERROR if isinstance(exc, t))
    code = getattr(exc, "code", "refused")
    logger.warning("sync refused from %s: %s %s: %s", peer, status, code, exc)
    return api_error(status, code, str(exc))


@dataclass(frozen=True, slots=True)
class ScanRequest:
    sha: str
    station: str
    total: int
    signature: str
    expires: int
    nonce: str


def _scan_headers(request: Request) -> ScanRequest:
    h = request.headers
    sha, station, total = request.path_params["sha"], h.get("lastmile-station", ""), h.get("upload-length", "")
    signature, expires, nonce = h.get("lastmile-signature", ""), h.get("lastmile-expires", ""), h.get("lastmile-nonce", "")
    if not blobs.SHA.fullmatch(sha) or not station or not total.isdigit() or not signature \
            or not expires.isdigit() or len(expires) > 12 or not blobs.NONCE.fullmatch(nonce):
        raise CountyError(400, "bad_request", "scan requests need a SHA-256 path, Lastmile-Station, Upload-Length, "
                                              "Lastmile-Expires, Lastmile-Nonce and Lastmile-Signature")
    return ScanRequest(sha, station, int(total), signature, int(expires), nonce)


def _signed_answer(c: County, r: ScanRequest, status: int, offset: int, state: str) -> Response:
    """A HEAD/PATCH answer the station can trust: the county signs offset and state over the
    request's nonce."""
    return Response(status_code=status, headers={
        "upload-offset": str(offset), "upload-length": str(r.total), "lastmile-scan-state": state,
        "lastmile-answer-signature": c.sign_scan_answer(r.station, r.sha, offset, r.total, state, r.nonce),
        "cache-control": "no-store"})


async def scan_head(request: Request) -> Response:
    c = county(request)
    try:
        r = _scan_headers(request)
        offset, state = await run_in_threadpool(c.scan_offset, r.station, r.sha, r.total, r.signature,
                                                r.expires, r.nonce)
    except CountyError as exc:
        return Response(status_code=exc.status, headers={"lastmile-error": exc.code})
    except (CryptoError, SyncError) as exc:
        status = next(s for t, s in STATUS_OF_ERROR if isinstance(exc, t))
        return Response(status_code=status, headers={"lastmile-error": getattr(exc, "code", "refused")})
    return await run_in_threadpool(_signed_answer, c, r, 200, offset, state)


async def scan_patch(request: Request) -> Response:
    peer = request.client.host if request.client else "?"
    c = county(request)
    try:
        r = _scan_headers(request)
        offset_text = request.headers.get("upload-offset", "")
        if not offset_text.isdigit():
            raise CountyError(400, "bad_request", "Upload-Offset is missing")
        offset = int(offset_text)
        await run_in_threadpool(c.scan_request, r.station, r.sha, offset, r.total, r.signature, r.expires, r.nonce)
        new = await _stream_scan(request, c, r.station, r.sha, offset, r.total)
    except blobs.OffsetMismatch:
        held, state = await run_in_threadpool(c.scan_state, r.station, r.sha)
        return await run_in_threadpool(_signed_answer, c, r, 409, held, state)
    except CountyError as exc:
        logger.warning("scan refused from %s: %s", peer, exc)
        return api_error(exc.status, exc.code, str(exc))
    except (CryptoError, SyncError) as exc:
        status = next(s for t, s in STATUS_OF_ERROR if isinstance(exc, t))
        logger.warning("scan refused from %s: %s %s", peer, status, exc)
        return api_error(status, getattr(exc, "code", "refused"), str(exc))
    return await run_in_threadpool(_signed_answer, c, r, 204, new,
                                   blobs.VERIFIED if new == r.total else blobs.PARTIAL)


async def _stream_scan(request: Request, c: County, station: str, sha: str, offset: int, total: int) -> int:
    """Write the body as it arrives, 64 KB at a time; on a cut, keep what came (tus semantics)."""
    buffer = bytearray()
    try:
        async for piece in request.stream():
            buffer += piece
            if offset + len(buffer) > total:
                raise CountyError(413, "too_large", "the body goes past Upload-Length")   # BodyLimit says it first
            if len(buffer) >= 64 * 1024:
                offset = await run_in_threadpool(c.scan_write, station, sha, offset, total, bytes(buffer))
                buffer.clear()
    except ClientDisconnect:
        logger.info("scan from %s: cut after %d bytes; kept", station, offset + len(buffer))
    if buffer:
        offset = await run_in_threadpool(c.scan_write, station, sha, offset, total, bytes(buffer))
    return offset


ENROL_BODY_LIMIT = 16 * 1024
# Wrong enrolment MACs slow down their sender's address: 5 pass, then 1 s, 2 s … at most a minute.
# The code is never voided by them (central/services/stations.py enroll), and another address is not slowed.
ENROL_THROTTLE = throttle.Throttle({"enrol": throttle.Rule(5, 1, 60)})


def _enrol_succeeded(c: County, peer: str) -> None:
    with c.store.transaction() as db:
        ENROL_THROTTLE.undo(db, "enrol", peer)


async def enroll_county(request: Request) -> Response:
    """Step 1 of enrolment: the county's name and public keys, for the station to check against the
    fingerprint its installer typed before it sends anything. Commits nothing."""
    return JSONResponse(county(request).enrolment_info(), headers={"cache-control": "no-store"})


async def enroll(request: Request) -> Response:
    """Step 2: a station proves with a MAC keyed by its one-time code (never sent) that it knows
    the code, binding its keys and the county keys it checked; the county answers with its own MAC."""
    peer = request.client.host if request.client else "?"
    budget: ByteBudget = request.app.state.unverified
    declared = request.headers.get("content-length", "")
    reserve = min(int(declared), ENROL_BODY_LIMIT + 1) if declared.isdigit() else ENROL_BODY_LIMIT
    if not budget.take(reserve):                    # the request's MAC is checked only once it is all in
        return over_budget(f"enrolment from {peer}")
    try:
        body = json.loads(await read_limited(request, ENROL_BODY_LIMIT))
        if not isinstance(body, dict):
            raise TypeError("the body must be a JSON object")
        station, mac = body["station"], body["mac"]
        if not isinstance(station, str) or not isinstance(mac, str) or not blobs.SHA.fullmatch(mac):
            raise TypeError("'station' must be a string and 'mac' 64 lowercase hex digits")
        keys = PublicKeys.from_dict(body["keys"])
        c = county(request)
        wait = await run_in_threadpool(ENROL_THROTTLE.admit_keys, c.store, {"enrol": peer})
        if wait:
            retry = max(1, int(wait[1] + 0.999))
            logger.warning("enrolment of %r from %s slowed down: wait %d s", station, peer, retry)
            slow = api_error(429, "slow_down", f"too many wrong enrolment proofs from this address; wait {retry} "
                             "seconds, then try again", {"retry_after": retry})
            slow.headers["retry-after"] = str(retry)
            return slow
        answer = await run_in_threadpool(c.enroll, station, keys, mac)
        await run_in_threadpool(_enrol_succeeded, c, peer)
    except EnvelopeTooLarge as exc:
        return api_error(413, "too_large", str(exc))
    except ClientDisconnect:
        return Response(status_code=400)
    except (ValueError, KeyError, TypeError, RecursionError, BadEncoding) as exc:
        logger.warning("enrolment from %s refused: malformed: %s", peer, exc)
        return api_error(400, "bad_request", f"enrolment request is malformed: {exc}")
    except CountyError as exc:
        logger.warning("enrolment of %r from %s refused: %s", body.get("station"), peer, exc)
        return api_error(exc.status, exc.code, str(exc))
    finally:
        budget.give(reserve)
    logger.info("station %s enrolled from %s", station, peer)
    return JSONResponse(answer)


# pages -------------------------------------------------------------------------
clerk = session_user
form_of = checked_form


def authenticate(request: Request, username: str, password: str) -> dict[str, Any] | None:
    return county(request).login(username, password)


def accounts(request: Request) -> County:
    """Where the session plumbing looks up accounts and ends their sessions."""
    return county(request)


def departments(c: County) -> dict[str, dict[str, str]]:
    return {d["code"]: d for d in c.catalog().get("departments", [])}


CASE_STATUSES = (Status.RECEIVED, Status.CORRECTION_NOTICE, Status.REFUSED, Status.APPROVED, Status.REJECTED,
                 Status.CORRECTION_REQUESTED, Status.HANDED_OUT)
QUEUE_PAGE = 50                   # cases per page of the queue
API_LIMIT, API_MAX_LIMIT = 50, 500


def readable_case(c: County, user: dict[str, Any], case_id: str) -> dict[str, Any]:
    """The case, if it exists (404) and ``user`` may read it (403). Blocking: call in a thread."""
    case = c.store.case(case_id)
    if case is None:
        raise permissions.NotFound()
    return permissions.check_read(user, case)


async def queue(request: Request) -> Response:
    user = clerk(request)
    c = county(request)
    q = request.query_params
    dept = q.get("department") or None
    permissions.check_department_filter(user, dept)
    if not permissions.is_supervisor(user):
        dept = user["department"]
    status = q.get("status", "received")
    offset_text = q.get("offset", "0")
    if not offset_text.isdigit() or len(offset_text) > 9:
        raise HTTPException(422, N_("This list has no such page."))
    offset = int(offset_text)
    cases, total = await run_in_threadpool(
        c.store.cases_page, department=dept, departments=permissions.visible_departments(user),
        status=status or None, limit=QUEUE_PAGE, offset=offset)
    if offset and offset >= total:
        raise HTTPException(404, N_("This list has no such page."))
    page_link = {"status": status, **({"department": dept} if permissions.is_supervisor(user) and dept else {})}
    lives = await run_in_threadpool(lambda: {case["id"]: c.life(case) for case in cases})
    return render(request, "central/queue.html", cases=cases, lives=lives, status=status, department=dept,
                  departments=await run_in_threadpool(departments, c), flash=q.get("m"), total=total,
                  first=offset + 1, last=offset + len(cases),
                  prev_url=("/?" + urlencode({**page_link, "offset": max(0, offset - QUEUE_PAGE)})) if offset else None,
                  next_url=("/?" + urlencode({**page_link, "offset": offset + QUEUE_PAGE}))
                  if offset + QUEUE_PAGE < total else None)


async def case_page(request: Request) -> Response:
    user = clerk(request)
    c = county(request)
    case = await run_in_threadpool(readable_case, c, user, request.path_params["id"])
    return await render_case(request, c, case)


def _case_context(c: County, case: dict[str, Any]) -> dict[str, Any]:
    """The case page's data: what the station signed (and where the stored row differs from it),
    the station, the scans, the catalogue entry. Reads the database: run it in a worker thread."""
    view = c.signed_case(case)
    if view["mismatches"]:
        logger.error("case %s: the stored record differs from what station %s signed in: %s", case["id"],
                     case["station"], ", ".join(m["field"] for m in view["mismatches"]))
    return {**view, "departments": departments(c), "station": c.store.station(case["station"]),
            "item": catalog_item(c, view["case"]["item_code"]), "written": documents.decision_body(c, case)}


async def render_case(request: Request, c: County, case: dict[str, Any], status: int = 200,
                      error: str | None = None) -> Response:
    context = await run_in_threadpool(_case_context, c, case)
    context.update(await run_in_threadpool(_history_and_rating, request, c, case))
    context.update(await run_in_threadpool(bundles.case_links, c, case, context["body"], clerk(request)))
    return render(request, "central/case.html", status, error=error, **context)


def _history_and_rating(request: Request, c: County, case: dict[str, Any]) -> dict[str, Any]:
    """The case's ``history`` and ``rating`` (central/services/ratings.py), in the reader's language. Blocking."""
    locale = locale_of(request)
    return ratings.case_json(c, case, gettext_for(locale), lambda r: reason_text(r, locale))


def catalog_item(c: County, code: str) -> dict[str, Any]:
    """The catalogue entry of an item, for labels; an empty one for an item since retired."""
    return next((i for i in c.catalog().get("items", []) if i["code"] == code), {"fields": [], "materials": []})


async def scan_view(request: Request) -> Response:
    user = clerk(request)
    c = county(request)
    case = await run_in_threadpool(readable_case, c, user, request.path_params["id"])
    found = await run_in_threadpool(c.scan_bytes, case, request.path_params["sha"]) if case else None
    if found is None:
        raise HTTPException(404, N_("This scan has not arrived yet."))
    data, mime = found
    if mime is None:        # judged from the decrypted bytes, never from what the station declared
        logger.warning("scan %s of case %s is neither JPEG nor PDF; not served", request.path_params["sha"][:12],
                       request.path_params["id"])
        raise HTTPException(415, N_("This scan is neither a JPEG image nor a PDF, so it is not shown."))
    return Response(data, media_type=mime, headers={"cache-control": "private, no-store",
                                                    "content-security-policy": "default-src 'none'; img-src 'self'",
                                                    "x-content-type-options": "nosniff"})


async def decide_page(request: Request) -> Response:
    user = clerk(request)
    c = county(request)
    async with upload_form(request) as form:        # result documents: real files (templates/web.py)
        materials = [{"code": key[4:], "problem": str(value), "text": str(form.get("fix_text_" + key[4:], ""))}
                     for key, value in form.multi_items() if key.startswith("fix_") and not key.startswith("fix_text_")
                     and value]
        decision, note, written = str(form.get("decision", "")), str(form.get("note", "")), await docviews.form_fields(form)
    try:
        await run_in_threadpool(lambda: c.decide(request.path_params["id"], decision, note, user, materials, **written))
    except CountyError as exc:
        logger.info("decision on %s by %s refused: %s %s", request.path_params["id"], user["username"], exc.code, exc)
        case = await run_in_threadpool(readable_case, c, user, request.path_params["id"])
        return await render_case(request, c, case, exc.status, exc.text(gettext_for(locale_of(request))))
    return RedirectResponse("/?m=decided", 303)


async def stations_page(request: Request) -> Response:
    user = clerk(request)
    return render(request, "central/stations.html", supervisor=permissions.is_supervisor(user),
                  marked=request.query_params.get("m") == "restore_marked", error=None,
                  checked=request.query_params.get("m") == "selfcheck",
                  **await run_in_threadpool(_stations_context, county(request)))


def _stations_context(c: County) -> dict[str, Any]:
    """The stations page's data, read from the store (in a worker thread, never on the loop)."""
    counts = c.store.station_sync_counts()
    scans_missing = c.store.incomplete_scans_by_station()
    latest = c.store.latest_catalog()
    catalog = latest[0] if latest else 0
    rows = []
    for st in c.store.stations():
        up = counts.get(f"up/{st['code']}", {"high": 0})
        down = counts.get(f"down/{st['code']}", {"high": 0, "acked": 0})
        mark = c.restore_mark(st["code"])
        rows.append({**st, "received": up["high"], "down_waiting": down["high"] - down["acked"],
                     "restore_until": mark["until"] if mark else None,
                     "scans_missing": scans_missing.get(st["code"], 0), "locked": bool(st["locked"]),
                     "catalog_latest": catalog, "not_applying": not_applying(st, catalog)})
    return {"stations": rows, "problems": c.store.sync_problems(), "recoveries": c.store.recoveries(),
            "county_keys": c.county_key_history(), "on_old_key": c.on_old_key(),
            "selfcheck": selfcheck.last(c.store), "selfcheck_texts": chain.PROBLEMS}


def not_applying(st: dict[str, Any], catalog: int) -> str | None:
    """Why a station that receives the county's events does not apply them, by its last push
    (PROTOCOL.md §6 ``applied``), or None: ``locked`` (they wait for an agent to log in), ``stalled``
    (unlocked, and still not applied), ``catalogue`` (it holds an older catalogue than the county's
    latest, or none)."""
    if st["down_applied"] is None:
        return None                     # a station older than the report: nothing to judge by
    if st["down_applied"] < (st["down_have"] or 0):
        return "locked" if st["locked"] else "stalled"
    if (st["catalog_applied"] or 0) < catalog:
        return "catalogue"
    return None


# JSON API ----------------------------------------------------------------------
async def api_user(request: Request) -> dict[str, Any]:
    """The API user of the bearer token (looked up in a worker thread), or 401."""
    return await run_in_threadpool(bearer_user, request, county(request).user_by_token)


def case_json(c: County, case: dict[str, Any]) -> dict[str, Any]:
    """A case for the API: the columns copied from the application carry the signed values;
    ``record_mismatches`` lists where the stored row differs ({field, stored, signed}). Blocking."""
    view = c.signed_case(case)
    scans = view["scans"]
    missing = [s["sha256"] for s in scans if not s["received_at"]]
    raw = ("suspensions", "correction", "supplement", "collector")
    return {**{k: v for k, v in view["case"].items() if k not in raw}, **view["life"],
            "signature": view["signature"], "decision_key": view["decision_key"],
            "record_matches_signature": not view["mismatches"],
            "record_mismatches": view["mismatches"], "scans": scans, "scans_complete": not missing,
            "scans_missing": missing,
            "promised_provisional": calendar.calendar_of(c).promised_provisional(case["accepted_at"],
                                                                                  case["promised_date"])}


def _whole(text: str | None, default: int, low: int, high: int) -> int | None:
    """A query parameter as a whole number in [low, high]; None if it is not one."""
    if text is None:
        return default
    if not text.isdigit() or len(text) > 9 or not low <= int(text) <= high:
        return None
    return int(text)


async def api_cases(request: Request) -> Response:
    user = await api_user(request)
    c = county(request)
    q = request.query_params
    limit = _whole(q.get("limit"), API_LIMIT, 1, API_MAX_LIMIT)
    offset = _whole(q.get("offset"), 0, 0, 10**9)
    details = {**({"limit": f"a whole number from 1 to {API_MAX_LIMIT}"} if limit is None else {}),
               **({"offset": "a whole number, 0 or more"} if offset is None else {}),
               **({"page": "not supported: use offset"} if "page" in q else {}),
               **({"status": f"one of {', '.join(CASE_STATUSES)}"} if q.get("status") not in (None, "", *CASE_STATUSES)
                  else {})}
    if details:
        logger.info("case list refused for %s: %s", user["username"], details)
        return api_error(422, "invalid", "Bad list parameters: " + "; ".join(f"{k}: {v}" for k, v in details.items()),
                         details)
    assert limit is not None and offset is not None
    permissions.check_department_filter(user, q.get("department"))

    def page() -> tuple[list[dict[str, Any]], int]:
        rows, total = c.store.cases_page(station=q.get("station"), status=q.get("status"),
                                         department=q.get("department"),
                                         departments=permissions.visible_departments(user), limit=limit, offset=offset)
        return [case_json(c, x) for x in rows], total
    cases, total = await run_in_threadpool(page)
    following = offset + limit if offset + limit < total else None
    return JSONResponse({"cases": cases, "total": total, "offset": offset, "limit": limit,
                         "next_offset": following,
                         "next": None if following is None else
                         f"{request.url.path}?{urlencode({**q, 'offset': following, 'limit': limit})}"})


async def api_case(request: Request) -> Response:
    user = await api_user(request)
    c = county(request)

    def one() -> dict[str, Any]:
        case = readable_case(c, user, request.path_params["id"])
        return {**case_json(c, case), "application": c.signed_application(case)[0],
                **bundles.case_links(c, case, c.signed_application(case)[0], user),
                **_history_and_rating(request, c, case), **doc_verify.case_codes(c, case)}
    return JSONResponse(await run_in_threadpool(one))


async def api_decide(request: Request) -> Response:
    user = await api_user(request)
    body = await json_object(request)
    c = county(request)
    materials = body.get("materials")
    if materials is not None and not isinstance(materials, list):
        return api_error(422, "bad_materials", "materials is a list of {code, problem, text}",
                         {"materials": "a list of {code, problem, text}"})
    try:
        case = await run_in_threadpool(lambda: c.decide(request.path_params["id"], str(body.get("decision", "")),
                                                        str(body.get("note", "")), user, materials,
                                                        **docviews.written_fields(body)))
    except CountyError as exc:
        logger.info("decision on %s by %s refused: %s %s", request.path_params["id"], user["username"], exc.code, exc)
        return refusal(request, exc)
    return JSONResponse(await run_in_threadpool(case_json, c, case))


async def api_calendar(request: Request) -> Response:
    """GET: a year's effective working-day schedule and its source; PUT (supervisors): enter it
    and send it to every station (central/services/calendar.py)."""
    user = await api_user(request)
    c = county(request)
    text = request.path_params["year"]
    if not text.isdigit() or len(text) != 4 or not calendar.workdays.MIN_YEAR <= int(text) <= calendar.workdays.MAX_YEAR:
        logger.info("calendar of %r refused for %s: not a year", text[:20], user["username"])
        return api_error(422, "invalid_schedule", f"The year must be a whole number from {calendar.workdays.MIN_YEAR} "
                         f"to {calendar.workdays.MAX_YEAR}.", {"field": "year"})
    year = int(text)
    if request.method == "GET":
        return JSONResponse(await run_in_threadpool(calendar.effective, c, year))
    if not permissions.is_supervisor(user):
        logger.warning("calendar of %s refused: %s is not a supervisor", year, user["username"])
        raise permissions.Forbidden(N_("Only a supervisor may enter the working-day calendar."), "supervisor_only")
    body = await json_object(request)
    unknown = sorted(set(body) - {"holidays", "workdays"})
    if unknown or "holidays" not in body or "workdays" not in body:
        logger.warning("calendar of %s refused: fields %s", year, sorted(body))
        return api_error(422, "invalid_schedule", "The body must be {\"holidays\": [...], \"workdays\": [...]}.",
                         {"unknown": unknown, "missing": [k for k in ("holidays", "workdays") if k not in body]})
    try:
        await run_in_threadpool(calendar.publish, c, year, body["holidays"], body["workdays"], user["username"])
    except calendar.ScheduleRefused as exc:
        return api_error(exc.status, exc.code, str(exc), exc.details)
    return JSONResponse(await run_in_threadpool(calendar.effective, c, year))


# 办不成事 reports ---------------------------------------------------------------------------------

async def reports_page(request: Request, status: int = 200, error: str | None = None) -> Response:
    """Every staff member sees the stations' reports, open ones first; whoever takes one answers for it."""
    clerk(request)
    c = county(request)
    rows = await run_in_threadpool(lambda: [county_reports.as_json(r) for r in c.store.reports()])
    stations = {s["code"]: s["name"] for s in await run_in_threadpool(c.store.stations)}
    return render(request, "central/reports.html", status, reports=rows, stations=stations, error=error)


async def report_action(request: Request) -> Response:
    """``POST /reports/{id}/take`` and ``/answer`` from the page."""
    user = clerk(request)
    form = await form_of(request)
    c = county(request)
    try:
        if request.path_params["action"] == "take":
            await run_in_threadpool(c.take_report, request.path_params["id"], user)
        else:
            await run_in_threadpool(c.answer_report, request.path_params["id"], str(form.get("answer", "")), user)
    except CountyError as exc:
        return await reports_page(request, exc.status, exc.text(gettext_for(locale_of(request))))
    return RedirectResponse("/reports", 303)


async def api_reports(request: Request) -> Response:
    await api_user(request)
    c = county(request)
    rows = await run_in_threadpool(lambda: [county_reports.as_json(r) for r in c.store.reports()])
    return JSONResponse({"reports": rows})


async def api_report_action(request: Request) -> Response:
    """``POST /api/v1/reports/{id}/take`` and ``POST /api/v1/reports/{id}/answer`` ``{"answer"}``."""
    user = await api_user(request)
    body = await json_object(request) if request.path_params["action"] == "answer" else {}
    c = county(request)
    try:
        if request.path_params["action"] == "take":
            r = await run_in_threadpool(c.take_report, request.path_params["id"], user)
        else:
            r = await run_in_threadpool(c.answer_report, request.path_params["id"], str(body.get("answer", "")), user)
    except CountyError as exc:
        return refusal(request, exc)
    return JSONResponse(county_reports.as_json(r))
