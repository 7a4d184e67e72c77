"""The verify page and API, the same on every station and on the county (PROTOCOL.md §11): public,
no login (citizens and other offices scan the documents), showing only what the paper prints (the
applicant's name and ID number masked). The check itself runs in a worker thread."""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from crypto.keys import b64
from sync import verify
from templates import N_, gettext_for, locale_of, render
from templates.limits import PerAddress
from templates.web import api_error, client_address, json_object

logger = logging.getLogger("lastmile.verify")

Check = Callable[[Request, Any], "dict[str, Any]"]
Signer = Callable[[Request], Callable[[bytes], bytes]]
NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
#: checks per client address: ``PER_MINUTE`` within a minute, then refused (429) for a minute
PER_MINUTE = 60
TOO_MANY = N_("Too many verification requests from this address. Wait a minute and try again.")


def throttle_of(request: Request) -> PerAddress:
    """The app's limit on checks per client address (``app.state.verify_throttle``)."""
    state = request.app.state
    if not isinstance(getattr(state, "verify_throttle", None), PerAddress):
        state.verify_throttle = PerAddress(PER_MINUTE, 60, "document verification")
    return state.verify_throttle  # type: ignore[no-any-return]


def limited(request: Request) -> int | None:
    """Count a check from the request's client address: None if it may run, else the seconds to
    wait (the Retry-After of the 429)."""
    until = throttle_of(request).allow(client_address(request))
    if until is None:
        return None
    return max(1, int(until - time.time()) + 1)


def verify_routes(check: Check, office: Callable[[Request], str], signer: Signer | None = None) -> list[Route]:
    """``GET /verify`` (the page, ``?code=``) and ``POST /api/v1/verify`` (``{"code": …}``). With
    ``signer`` (the county's sign function), a body with a ``nonce`` gets its answer signed
    (``Lastmile-Signature``, PROTOCOL.md §11): a station asking about a typed code trusts only that."""

    async def page(request: Request) -> Response:
        code = request.query_params.get("code", "")
        result = None
        if code.strip():
            wait = limited(request)
            if wait is not None:
                return PlainTextResponse(gettext_for(locale_of(request))(TOO_MANY), 429,
                                         headers={"retry-after": str(wait)})
            result = await run_in_threadpool(check, request, code)
            logger.info("verify page: %s %s", "valid" if result["valid"] else "refused", result["reason"])
        return render(request, "verify.html", office=office(request), code=code, result=result,
                      kind_names=verify.KIND_NAMES)

    async def api(request: Request) -> Response:
        payload = await json_object(request)
        code = payload.get("code")
        if not isinstance(code, str) or not code.strip() or len(code) > verify.MAX_TEXT:
            logger.info("verify API: bad request body")
            return api_error(422, "invalid", N_("Give \"code\": the text of the QR code or the typed verification code."),
                             {"code": "a non-empty string of at most 2000 characters"})
        nonce = payload.get("nonce")
        if nonce is not None and (signer is None or not isinstance(nonce, str) or not NONCE.fullmatch(nonce)):
            return api_error(422, "invalid", N_("\"nonce\" is 16-64 base64url characters, and only the county signs."),
                             {"nonce": "16-64 base64url characters, at the county only"})
        wait = limited(request)
        if wait is not None:
            answer = api_error(429, "too_many_requests", gettext_for(locale_of(request))(TOO_MANY),
                               {"retry_after": wait})
            answer.headers["retry-after"] = str(wait)
            return answer
        result = await run_in_threadpool(check, request, code)
        logger.info("verify API: %s %s", "valid" if result["valid"] else "refused", result["reason"])
        answer = JSONResponse(verify.api_answer(result, gettext_for(locale_of(request))))
        if nonce is not None and signer is not None:
            signature = signer(request)(verify.ANSWER_DOMAIN + nonce.encode() + b"|" + bytes(answer.body))
            answer.headers["lastmile-signature"] = b64(signature)
        return answer

    return [Route("/verify", page), Route("/api/v1/verify", api, methods=["POST"])]
