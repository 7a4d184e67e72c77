"""Thin handlers for decision documents at the county: the decision's written fields from the page
form and the API, and the signed, resumable download of result documents by their station
(``GET /sync/v1/docs/<sha256>``, PROTOCOL.md §7 "Result documents")."""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from central.services import documents
from central.county import County
from central.errors import CountyError
from crypto.errors import BadEncoding, BadSignature, CryptoError
from sync import docs
from sync.errors import RevokedStation, SyncError, UnknownStation
from sync.law import decisions
from templates.web import api_error

logger = logging.getLogger("lastmile.central")


def written_fields(body: dict[str, Any]) -> dict[str, Any]:
    """``reason``, ``basis`` and ``attachments`` ((name, bytes)) of an API decision body; CountyError
    422 for attachments that are not a list of ``{"name", "data_base64"}``. Decodes base64: run it
    in a worker thread."""
    raw = body.get("attachments", [])
    if not isinstance(raw, list):
        raise CountyError(422, "bad_attachment", documents.N_("attachments must be a list of {name, data_base64}."))
    if len(raw) > decisions.MAX_ATTACHMENTS:
        raise CountyError(422, "bad_attachment", documents.N_("At most 10 result documents can be attached."))
    files = []
    for a in raw:
        try:
            if not isinstance(a, dict) or not isinstance(a.get("name"), str):
                raise ValueError("shape")
            files.append((a["name"], base64.b64decode(str(a.get("data_base64", "")), validate=True)))
        except (ValueError, binascii.Error):
            raise CountyError(422, "bad_attachment",
                              documents.N_("attachments must be a list of {name, data_base64}.")) from None
    return {"reason": str(body.get("reason") or ""), "basis": str(body.get("basis") or ""), "attachments": files}


async def form_fields(form: Any) -> dict[str, Any]:
    """The same from the page's form: the ``reason`` and ``basis`` fields and the ``attachments`` files."""
    files = []
    for f in form.getlist("attachments"):
        if isinstance(f, UploadFile) and f.filename:
            files.append((f.filename, await f.read(decisions.MAX_ATTACHMENT + 1)))
    return {"reason": str(form.get("reason", "")), "basis": str(form.get("basis", "")), "attachments": files}


async def doc_get(request: Request) -> Response:
    """One station's request for (the rest of) a sealed result document."""
    c: County = request.app.state.county
    peer = request.client.host if request.client else "?"
    h = request.headers
    sha, station = request.path_params["sha"], h.get("lastmile-station", "")
    signature, expires, nonce = h.get("lastmile-signature", ""), h.get("lastmile-expires", ""), h.get("lastmile-nonce", "")
    match = docs.RANGE.fullmatch(h.get("range", ""))
    try:
        if not decisions.SHA.fullmatch(sha) or not station or not signature or not expires.isdigit() \
                or len(expires) > 12 or not docs.NONCE.fullmatch(nonce) or match is None:
            raise CountyError(400, "bad_request", "document requests need a SHA-256 path, Lastmile-Station, "
                                                  "Lastmile-Expires, Lastmile-Nonce, Lastmile-Signature and "
                                                  "Range: bytes=<offset>-")
        offset = int(match.group(1))
        data, total = await run_in_threadpool(documents.serve, c, station, sha, offset, int(expires), nonce, signature)
    except CountyError as exc:
        logger.warning("document request from %s (%s) refused: %s %s", peer, station, exc.code, exc)
        return api_error(exc.status, exc.code, str(exc))
    except (UnknownStation, RevokedStation) as exc:
        logger.warning("document request from %s (%s) refused: %s", peer, station, exc)
        return api_error(403, exc.code, str(exc))
    except (BadSignature, BadEncoding) as exc:
        logger.warning("document request from %s (%s) refused: bad signature: %s", peer, station, exc)
        return api_error(401, "bad_signature", "the request is not signed by the station's current key")
    except (CryptoError, SyncError) as exc:
        logger.warning("document request from %s (%s) refused: %s", peer, station, exc)
        return api_error(400, getattr(exc, "code", "refused"), str(exc))
    return Response(data, 206, media_type="application/octet-stream",
                    headers={"content-range": f"bytes {offset}-{total - 1}/{total}", "cache-control": "no-store"})
