"""The county's side of decision documents: the catalogue's ``appeal`` block, the result documents a
clerk attaches to an approval (checked, sealed to the deciding station's current key, stored under
DATA/docs/<station>/), and the signed, resumable download a station makes of them (PROTOCOL.md §7,
"Result documents"). Blocking: callers in async code run these in a worker thread."""

from __future__ import annotations

import hashlib
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from PIL import Image, UnidentifiedImageError

from templates.limits import MAX_DECODE, decoded_bytes

from central.errors import CountyError, N_
from crypto import envelope
from sync import docs
from sync.law import decisions
from sync.law.errors import RuleError

if TYPE_CHECKING:
    from central.services.context import Context

logger = logging.getLogger("lastmile.central")
MAX_PIXELS = 40_000_000            # as at the station's intake (node/scans.py): refused from the header


def check_catalog_appeal(catalog: Any) -> None:
    """A catalogue to publish must name the review body and the court a rejection points to."""
    if not isinstance(catalog, dict) or "appeal" not in catalog:
        raise CountyError(422, "no_appeal", N_(
            'The catalogue has no "appeal" block: add {"review_body": ..., "review_days": 60, "court": ..., '
            '"court_months": 6} naming the body that hears administrative reconsideration and the court.'))
    try:
        decisions.check_appeal(catalog["appeal"])
    except RuleError as exc:
        raise CountyError(422, "bad_appeal", exc.message) from None


def appeal_of(catalog: dict[str, Any]) -> dict[str, Any] | None:
    """The catalogue's appeal block if it has a valid one (older catalogues have none)."""
    try:
        return decisions.check_appeal(catalog.get("appeal"))
    except RuleError:
        return None


@dataclass(frozen=True, slots=True)
class Attachment:
    name: str
    mime: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def listed(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "name": self.name, "mime": self.mime, "size": len(self.data)}


BAD_TYPE = N_("A result document must be a PDF, JPEG or PNG file.")


def prepare(name: str, raw: bytes) -> Attachment:
    """One uploaded result document, checked: its type judged from its bytes, at most 8 MiB, a picture
    decodable and not a decompression bomb (refused from its header, before any pixel is decoded).
    Stored as given. Raises CountyError 422 ``bad_attachment``."""
    if not raw:
        raise CountyError(422, "bad_attachment", N_("A result document is empty."))
    if len(raw) > decisions.MAX_ATTACHMENT:
        raise CountyError(422, "bad_attachment", N_("A result document is too large (at most 8 MB)."))
    mime = docs.sniff(raw)
    if mime is None:
        raise CountyError(422, "bad_attachment", BAD_TYPE)
    if mime != "application/pdf":
        try:
            with Image.open(io.BytesIO(raw)) as img:          # the header only
                if Image.MIME.get(img.format or "") != mime:
                    raise CountyError(422, "bad_attachment", BAD_TYPE)
                if img.size[0] * img.size[1] > MAX_PIXELS:
                    raise CountyError(422, "bad_attachment", N_(
                        "A result document's picture has too many pixels (at most 40 million)."))
                if decoded_bytes(img.size, img.mode) > MAX_DECODE:         # before any pixel is decoded
                    raise CountyError(422, "bad_attachment", N_(
                        "A result document's picture would take too much memory to open (at most 64 MB once "
                        "decoded)."))
                img.verify()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise CountyError(422, "bad_attachment", N_(
                "A result document's picture has too many pixels (at most 40 million).")) from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            raise CountyError(422, "bad_attachment", N_("A result document's picture is damaged.")) from None
    clean = "".join(ch for ch in (name or "") if ch.isprintable()).replace("/", "_").replace("\\", "_").strip()
    clean = clean[-100:] or {"application/pdf": "document.pdf", "image/jpeg": "document.jpg",
                             "image/png": "document.png"}[mime]
    return Attachment(clean, mime, raw)


def prepare_all(files: Sequence[tuple[str, bytes]]) -> list[Attachment]:
    if len(files) > decisions.MAX_ATTACHMENTS:
        raise CountyError(422, "bad_attachment", N_("At most 10 result documents can be attached."))
    out: list[Attachment] = []
    for name, raw in files:
        a = prepare(name, raw)
        if all(a.sha256 != b.sha256 for b in out):
            out.append(a)
    return out


def doc_dir(county: Context, station: str) -> Path:
    return county.settings.data / "docs" / station


def store(county: Context, station: str, attachments: Sequence[Attachment]) -> None:
    """Seal each document to the station's current X25519 key and write it (fsynced) before the
    decision that lists it is recorded."""
    if not attachments:
        return
    keys = county.station_keys(station)
    for a in attachments:
        path = doc_dir(county, station) / f"{a.sha256}.sealed"
        if not path.exists():
            docs.write_file(path, envelope.seal_blob(a.data, recipient=keys, digest=a.sha256))


def serve(county: Context, station: str, sha: str, offset: int, expires: int, nonce: str,
          signature: str) -> tuple[bytes, int]:
    """Check a station's document request and return (the sealed bytes from ``offset``, the sealed
    length). Only the station a document was sealed for gets it: the files are kept per station."""
    keys = county.station_keys(station)        # UnknownStation / RevokedStation
    docs.check_request(keys, station, sha, offset, expires, nonce, signature)
    now = time.time()
    if expires < now:
        raise CountyError(401, "expired_request", "the document request has expired (or the station's clock is off)")
    if expires > now + docs.MAX_AHEAD_S:
        raise CountyError(401, "expired_request", "the document request is valid too far ahead")
    if not county.fresh_nonce(nonce, expires, now):         # the scans' table: one nonce space
        raise CountyError(401, "replayed_request", "this document request was already received")
    path = doc_dir(county, station) / f"{sha}.sealed"
    if not path.exists():
        raise CountyError(404, "unknown_document", "no decision sent to this station lists this document")
    sealed = path.read_bytes()
    if offset >= len(sealed):
        raise CountyError(416, "bad_range", "the range starts at or past the end of the document")
    return sealed[offset:], len(sealed)


def written(county: Context, case_id: str, decision: str, reason: str, basis: str,
            attachments: Sequence[tuple[str, bytes]], user: dict[str, Any]) -> dict[str, Any]:
    """The body fields of a written decision (PROTOCOL.md §4): a rejection's ``reason``, ``basis`` and
    the catalogue's ``appeal`` as it is now (so the document stays true if the catalogue changes; an
    older catalogue without one gives none, and the document then uses a generic wording); an
    approval's result documents, checked and stored sealed to the station first."""
    from central.services import permissions
    reason, basis = (reason or "").strip(), (basis or "").strip()
    if decision == "reject":
        if attachments:
            raise CountyError(422, "bad_attachment", N_("Only an approval carries result documents."))
        if not reason:
            raise CountyError(422, "reason_required", N_("A rejection needs the reason the citizen reads."))
        if len(reason) > decisions.MAX_REASON:
            raise CountyError(422, "reason_too_long", N_("The reason is too long (at most 2000 characters)."))
        if not basis:
            raise CountyError(422, "basis_required", N_("A rejection needs its legal basis."))
        if len(basis) > decisions.MAX_BASIS:
            raise CountyError(422, "basis_too_long", N_("The legal basis is too long (at most 500 characters)."))
        appeal = appeal_of(county.catalog())
        return {"reason": reason, "basis": basis, **({"appeal": appeal} if appeal else {})}
    if decision == "approve" and attachments:
        ready = prepare_all(attachments)
        case = county.store.case(case_id)
        if case is None:
            raise CountyError(404, "not_found", N_("No such case."))
        if not permissions.may_decide(user, case):     # nothing stored for a case the user may not decide
            raise CountyError(403, "other_department", N_("This case belongs to another department."))
        store(county, case["station"], ready)
        return {"attachments": [a.listed() for a in ready]}
    if attachments:
        raise CountyError(422, "bad_attachment", N_("Only an approval carries result documents."))
    return {}


def decision_body(county: Context, case: dict[str, Any]) -> dict[str, Any] | None:
    """The body of the case's latest decision as the county signed it (its written fields), or None."""
    import json

    from sync import log
    if not case.get("decision"):
        return None
    with county.store.lock:
        row = county.store.conn.execute(
            "SELECT body FROM _sync_events WHERE stream = ? AND kind = 'case.decided'"
            " AND json_extract(body, '$.id') = ? ORDER BY seq DESC LIMIT 1",
            (log.down(case["station"]), case["id"])).fetchone()
    return json.loads(row[0]) if row else None
