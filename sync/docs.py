"""Decision documents that travel down: the signed, resumable download of the result documents
the county sealed to the station (PROTOCOL.md §7 "Result documents"). The body fields of
``case.decided`` that make a written decision, and the catalogue's ``appeal`` block, are
sync/law/decisions.py (PROTOCOL.md §4 ``case.decided``).

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
from typing import Callable, Sequence

import httpx

from crypto import envelope
from crypto.errors import CryptoError
from crypto.keys import Identity, PublicKeys, b64, private_dir, unb64, verify
from sync.blobs import fsync_dir
from sync.errors import Rejected, Retryable

DOC_PATH = "/sync/v1/docs/"
CONTEXT = "lastmile-doc-request/1"
NONCE = re.compile(r"[0-9a-f]{32}")
EXPIRES_AFTER_S = 120
MAX_AHEAD_S = 600
DOC_ERROR = "doc_error/"            # + sha256: a station's _sync_status entry for a refused document


def sniff(data: bytes) -> str | None:
    """A result document's type from its first bytes: PDF, JPEG or PNG, nothing else."""
    if data[:5] == b"%PDF-":
        return "application/pdf"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    return None


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
