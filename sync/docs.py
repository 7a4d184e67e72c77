"""Decision documents that travel down: the body fields of ``case.decided`` that make a written
decision (the rejection's reason, legal basis and rights of appeal; the approval's result
documents), the catalogue's ``appeal`` block, and the signed, resumable download of the result
documents the county sealed to the station (PROTOCOL.md §4 ``case.decided``, §7 "Result
documents").

The download needs no signed answer: every document is listed with its SHA-256 in the decision the
county signed, is sealed to the station's own key (HPKE authenticates it), and counts as received
only once it decrypts and hashes to that digest; bytes a cut left behind are kept and the next
request asks only for the rest.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import httpx

from crypto import envelope
from crypto.errors import CryptoError
from crypto.keys import Identity, PublicKeys, b64, private_dir, unb64, verify
from sync.blobs import fsync_dir
from sync.errors import Rejected, Retryable
from sync.law.errors import N_, RuleError

DOC_PATH = "/sync/v1/docs/"
CONTEXT = "lastmile-doc-request/1"
SHA = re.compile(r"[0-9a-f]{64}")
NONCE = re.compile(r"[0-9a-f]{32}")
EXPIRES_AFTER_S = 120
MAX_AHEAD_S = 600
DOC_ERROR = "doc_error/"            # + sha256: a station's _sync_status entry for a refused document

APPEAL_KEYS = ("review_body", "review_days", "court", "court_months")
ATTACHMENT_KEYS = ("sha256", "name", "mime", "size")
ATTACHMENT_TYPES = ("application/pdf", "image/jpeg", "image/png")
MAX_ATTACHMENT = 8 * 1024 * 1024
MAX_ATTACHMENTS = 10
MAX_REASON, MAX_BASIS, MAX_NAME = 2000, 500, 255


def sniff(data: bytes) -> str | None:
    """A result document's type from its first bytes: PDF, JPEG or PNG, nothing else."""
    if data[:5] == b"%PDF-":
        return "application/pdf"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    return None


# the shared rules --------------------------------------------------------------------------------
def check_appeal(appeal: Any) -> dict[str, Any]:
    """The catalogue's (and a rejection's) ``appeal`` object: exactly ``review_body`` and ``court``
    (non-blank strings ≤ 100 characters), ``review_days`` (integer 1-365) and ``court_months``
    (integer 1-24). Raises RuleError naming what is wrong."""
    if not isinstance(appeal, dict) or set(appeal) != set(APPEAL_KEYS):
        raise RuleError(N_("The appeal block needs exactly review_body, review_days, court and court_months."))
    for name in ("review_body", "court"):
        if not isinstance(appeal[name], str) or not appeal[name].strip() or len(appeal[name]) > 100:
            raise RuleError(N_("The appeal block's review body and court are names of 1 to 100 characters."))
    for name, high in (("review_days", 365), ("court_months", 24)):
        if type(appeal[name]) is not int or not 1 <= appeal[name] <= high:
            raise RuleError(N_("The appeal block's time limits are whole numbers of days (1-365) and months (1-24)."))
    return appeal


def check_attachments(items: Any) -> list[dict[str, Any]]:
    """An approval's ``attachments``: 1-10 objects of exactly ``sha256`` (64 lowercase hex, no two
    alike), ``name`` (1-255 characters), ``mime`` (PDF, JPEG or PNG) and ``size`` (1 to 8 MiB)."""
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ATTACHMENTS:
        raise RuleError(N_("A decision lists 1 to 10 result documents."))
    seen = set()
    for a in items:
        if not isinstance(a, dict) or set(a) != set(ATTACHMENT_KEYS) or not isinstance(a["sha256"], str) \
                or not SHA.fullmatch(a["sha256"]) or a["sha256"] in seen or not isinstance(a["name"], str) \
                or not 1 <= len(a["name"]) <= MAX_NAME or a["mime"] not in ATTACHMENT_TYPES \
                or type(a["size"]) is not int or not 1 <= a["size"] <= MAX_ATTACHMENT:
            raise RuleError(N_("A result document of the decision is not described as it must be."))
        seen.add(a["sha256"])
    return items


DECIDED_FIELDS = ("id", "decision", "note", "by", "department", "at")


def check_decided(body: Any, decisions: Sequence[str]) -> dict[str, Any]:
    """``case.decided``: the six base fields (strings, ``decision`` one of ``decisions``), and the
    body fields of a written decision. A ``reject`` carries ``reason`` (≤ 2000) and ``basis`` (≤ 500),
    both non-blank, and ``appeal`` unless the catalogue had none; one with none of the three is the
    form written before they existed, still valid. ``attachments`` only on an ``approve``; ``reason``, ``basis``, ``appeal``
    only on a ``reject``. Other fields (a correction's) are left to their own checks."""
    if not isinstance(body, dict):
        raise RuleError(N_("The decision is not an object."))
    for name in DECIDED_FIELDS:
        if not isinstance(body.get(name), str):
            raise RuleError(N_("The decision lacks the field %(field)s."), field=name)
    if body["decision"] not in decisions:
        raise RuleError(N_("The decision is not approve, reject or correction."))
    written = [k for k in ("reason", "basis", "appeal") if k in body]
    if written and body["decision"] != "reject":
        raise RuleError(N_("Only a rejection carries a reason, a legal basis and the rights of appeal."))
    if body["decision"] == "reject" and written:
        for name, limit in (("reason", MAX_REASON), ("basis", MAX_BASIS)):
            value = body.get(name)
            if not isinstance(value, str) or not value.strip() or len(value) > limit:
                raise RuleError(N_("A rejection needs its reason (at most 2000 characters) and its legal basis "
                                   "(at most 500)."))
        if "appeal" in body:
            check_appeal(body["appeal"])
    if "attachments" in body:
        if body["decision"] != "approve":
            raise RuleError(N_("Only an approval carries result documents."))
        check_attachments(body["attachments"])
    return body


# the request -----------------------------------------------------------------------------------
def request_bytes(station: str, sha: str, offset: int, expires: int, nonce: str) -> bytes:
    return f"{CONTEXT}|{station}|{sha}|{offset}|{expires}|{nonce}".encode()


def sign_request(me: Identity, station: str, sha: str, offset: int, expires: int, nonce: str) -> str:
    return b64(me.sign(request_bytes(station, sha, offset, expires, nonce)))


def check_request(keys: PublicKeys, station: str, sha: str, offset: int, expires: int, nonce: str,
                  signature: str) -> None:
    """Raise BadSignature unless the station's current key signed the request."""
    verify(keys.sign, unb64(signature), request_bytes(station, sha, offset, expires, nonce))


RANGE = re.compile(r"bytes=(\d{1,12})-")


# files (both ends) -------------------------------------------------------------------------------
def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (0600) through a temporary file, fsync it and its directory."""
    private_dir(path.parent)
    tmp = path.with_suffix(".tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


# the station's download --------------------------------------------------------------------------
class DocRefused(Rejected):
    """The county refused this one document (4xx), or it did not verify: recorded on it, the next goes on."""


def download(http: httpx.Client, url: str, *, me: Identity, held: Sequence[Identity], station: str,
             sha: str, size: int, folder: Path, attempts: int = 4, sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.time) -> Path:
    """Fetch the rest of one sealed document into ``folder/<sha>.part``, resuming from what is there
    after a cut; check it opens with one of ``held`` (the station's current and retired keys) to a
    plaintext of ``size`` bytes with SHA-256 ``sha``, and only then rename it to ``<sha>.sealed``
    (fsynced, directory too). Returns that path. Raises DocRefused for a refusal or a document that
    does not verify (its part file is dropped, so the next pass starts afresh), Retryable when the
    link fails ``attempts`` times in a row."""
    private_dir(folder)
    done, part = folder / f"{sha}.sealed", folder / f"{sha}.part"
    if done.exists():
        return done
    total = size + envelope.BLOB_OVERHEAD
    failures = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        if offset > total:
            part.unlink()
            continue
        if offset == total:
            break
        nonce, expires = os.urandom(16).hex(), int(clock()) + EXPIRES_AFTER_S
        headers = {"lastmile-station": station, "lastmile-expires": str(expires), "lastmile-nonce": nonce,
                   "lastmile-signature": sign_request(me, station, sha, offset, expires, nonce),
                   "range": f"bytes={offset}-"}
        try:
            with http.stream("GET", url.rstrip("/") + DOC_PATH + sha, headers=headers) as resp:
                if resp.status_code in (429, 502, 503, 504):
                    raise Retryable(f"county answered {resp.status_code}")
                if resp.status_code != 206 or resp.headers.get("content-range", "") != f"bytes {offset}-{total - 1}/{total}":
                    resp.read()
                    code = "bad_document" if resp.status_code == 206 else "rejected"
                    try:
                        code = str(resp.json().get("error") or code) if resp.status_code != 206 else code
                    except (ValueError, AttributeError):
                        pass
                    err = DocRefused(f"county refused the document ({resp.status_code}): {code}" if code != "bad_document"
                                     else "the county's answer does not have the length the decision lists")
                    err.code = code
                    raise err
                with open(part, "ab") as f:
                    try:
                        for piece in resp.iter_bytes():
                            if f.tell() + len(piece) > total:
                                raise DocRefused("the county sent more than the document's length")
                            f.write(piece)
                    finally:
                        f.flush()
                        os.fsync(f.fileno())
        except (httpx.TransportError, Retryable) as exc:
            failures += 1
            if failures >= attempts:
                raise exc if isinstance(exc, Retryable) else Retryable(f"{type(exc).__name__}: {exc}") from exc
            sleep(min(30.0, 0.5 * 2 ** failures) * (0.5 + os.urandom(1)[0] / 512))
            continue
        failures = 0
    sealed = part.read_bytes()
    try:
        data = envelope.open_blob(sealed, recipient=list(held), digest=sha)
        if len(data) != size:
            raise CryptoError("size differs from the decision's")
    except CryptoError as exc:
        part.unlink(missing_ok=True)
        err = DocRefused(f"the document does not match the decision's hash: {exc}")
        err.code = "bad_document"
        raise err from exc
    os.replace(part, done)
    fsync_dir(folder)
    return done
