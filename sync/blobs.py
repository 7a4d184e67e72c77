"""Scans travel apart from events: content-addressed, sealed to the county, sent in resumable
chunks (after the tus protocol: ``HEAD`` tells the confirmed offset, ``PATCH`` appends at it).

A station signs each request over (station, hash, offset, total length), so only an enrolled
station can write; a replayed request at a stale offset is answered 409 with the offset the county
holds. The county keeps whatever part of a PATCH arrived before a cut (the signature does not
cover the body, so a partial body is usable); the whole scan is checked against its signed hash
when the last byte arrives, so nothing unverified is ever marked received. Offsets are confirmed
only after fsync.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Callable

import httpx
import tenacity

from crypto.keys import Identity, PublicKeys, b64, private_dir, unb64, verify
from sync.errors import Rejected, Retryable, SyncError

BLOB_PATH = "/sync/v1/blobs/"
CONTEXT = "lastmile-blob-request/1"
SHA = re.compile(r"[0-9a-f]{64}")
MIN_CHUNK, START_CHUNK, MAX_CHUNK = 8 * 1024, 64 * 1024, 1024 * 1024
MAX_SEALED = 32 * 1024 * 1024       # no sealed scan is larger (intake: images ≤ 2000 px, PDFs ≤ 4 MB)


class OffsetMismatch(Rejected):
    code = "offset_mismatch"

    def __init__(self, offset: int) -> None:
        super().__init__(f"the county holds {offset} bytes of this scan")
        self.offset = offset


def request_bytes(station: str, sha: str, offset: int | str, total: int) -> bytes:
    return f"{CONTEXT}|{station}|{sha}|{offset}|{total}".encode()


def sign_request(me: Identity, station: str, sha: str, offset: int | str, total: int) -> str:
    return b64(me.sign(request_bytes(station, sha, offset, total)))


def check_request(keys: PublicKeys, station: str, sha: str, offset: int | str, total: int, signature: str) -> None:
    """Raise BadSignature unless the request was signed by the station's key."""
    verify(keys.sign, unb64(signature), request_bytes(station, sha, offset, total))


# county side: files ---------------------------------------------------------------
def _paths(folder: Path, sha: str) -> tuple[Path, Path]:
    if not SHA.fullmatch(sha):
        raise ValueError("not a SHA-256 hex digest")
    return folder / f"{sha}.sealed", folder / f"{sha}.part"


def held(folder: Path, sha: str) -> int:
    """How many bytes of the sealed scan are safely stored here."""
    done, part = _paths(folder, sha)
    if done.exists():
        return done.stat().st_size
    return part.stat().st_size if part.exists() else 0


def append(folder: Path, sha: str, offset: int, chunk: bytes, total: int) -> int:
    """Append ``chunk`` at ``offset``; return the new offset. Raises OffsetMismatch if the
    offset is not the one held. When ``total`` is reached the part file is left for the caller
    to verify and ``complete``."""
    private_dir(folder)                     # 0700, whatever the umask
    done, part = _paths(folder, sha)
    have = held(folder, sha)
    if done.exists() or offset != have:
        raise OffsetMismatch(have)
    if offset + len(chunk) > total:
        raise Rejected("chunk goes past the declared length")
    with open(part, "ab") as f:
        f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    return offset + len(chunk)


def complete(folder: Path, sha: str) -> Path:
    done, part = _paths(folder, sha)
    os.replace(part, done)
    return done


def discard(folder: Path, sha: str) -> None:
    for p in _paths(folder, sha):
        p.unlink(missing_ok=True)


# station side: upload ---------------------------------------------------------------
def _offset_of(resp: httpx.Response) -> int:
    value = resp.headers.get("upload-offset", "")
    if not value.isdigit():
        raise Rejected(f"county answered {resp.status_code} without Upload-Offset")
    return int(value)


def _check(resp: httpx.Response) -> None:
    if resp.status_code in (429, 502, 503, 504):
        after = resp.headers.get("retry-after", "")
        raise Retryable(f"county answered {resp.status_code}", float(after) if after.isdigit() else None)
    if resp.status_code >= 400 and resp.status_code != 409:
        try:
            message = resp.json().get("message", "")
        except ValueError:
            message = resp.text[:200]
        raise Rejected(f"county refused the scan ({resp.status_code}): {message}")


def upload(http: httpx.Client, url: str, *, me: Identity, station: str, sha: str, sealed: bytes,
           chunk: int = START_CHUNK, max_chunk: int = MAX_CHUNK,
           progress: Callable[[int, int, int | None], None] = lambda offset, chunk, bps: None,
           attempts: int = 4, sleep: Callable[[float], None] = time.sleep) -> int:
    """Send what the county lacks of one sealed scan; return the offset it confirmed.

    ``progress(offset, chunk, bps)`` is called after every confirmed chunk, with the chunk size to
    use next time (halved after a failure, doubled after a success, at most ``max_chunk``) and the
    rate the chunk went at (bits per second, None if unknown)."""
    base = url.rstrip("/") + BLOB_PATH + sha
    total = len(sealed)

    def transport(fn: Callable[[], httpx.Response]) -> httpx.Response:
        try:
            resp = fn()
        except httpx.TransportError as exc:
            raise Retryable(f"{type(exc).__name__}: {exc}") from exc
        _check(resp)
        return resp

    def shrink(state: tenacity.RetryCallState) -> None:
        nonlocal chunk
        chunk = max(MIN_CHUNK, chunk // 2)

    retrying = tenacity.Retrying(retry=tenacity.retry_if_exception_type(Retryable), reraise=True,
                                 stop=tenacity.stop_after_attempt(attempts), before_sleep=shrink, sleep=sleep,
                                 wait=tenacity.wait_random_exponential(multiplier=0.5, max=30))
    headers = {"lastmile-station": station}

    def head() -> int:
        return _offset_of(transport(lambda: http.head(base, headers={
            **headers, "upload-length": str(total),
            "lastmile-signature": sign_request(me, station, sha, "head", total)})))

    offset = retrying(head)
    known = True
    while offset < total:
        def send() -> httpx.Response:
            nonlocal offset, known
            if not known:             # after a cut, ask where the county is before sending again
                offset = head()
                known = True
                if offset >= total:
                    return httpx.Response(204, headers={"upload-offset": str(offset)})
            piece = sealed[offset:offset + chunk]
            known = False
            resp = transport(lambda: http.patch(base, content=piece, headers={
                **headers, "content-type": "application/offset+octet-stream", "upload-offset": str(offset),
                "upload-length": str(total),
                "lastmile-signature": sign_request(me, station, sha, offset, total)}))
            known = True
            return resp
        started, before = time.monotonic(), offset
        try:
            resp = retrying(send)
        except SyncError:
            progress(offset, chunk, None)
            raise
        confirmed = _offset_of(resp)
        bps = None
        if resp.status_code == 204 and confirmed > before:
            chunk = min(max_chunk, chunk * 2)
            bps = int((confirmed - before) * 8 / max(time.monotonic() - started, 1e-3))
        offset = confirmed
        progress(offset, chunk, bps)
    return offset
