"""Scans travel apart from events: content-addressed, sealed to the county, sent in resumable
chunks (after the tus protocol: ``HEAD`` tells the confirmed offset, ``PATCH`` appends at it).

A station signs each request over (station, hash, offset, total length, expiry, nonce), so only an
enrolled station can write, and a captured request cannot be replayed later or twice. The county
signs each answer over (station, hash, offset, total, state, the request's nonce): the station
counts a scan as arrived only when such an answer says ``verified``, so nobody on the link can fake
progress. The county keeps whatever part of a PATCH arrived before a cut (the signature does not
cover the body, so a partial body is usable); the whole scan is checked against its signed hash when
the last byte arrives, so nothing unverified is ever marked received. Offsets are confirmed only
after fsync; the rename that completes a scan is fsynced in its directory.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Callable

import httpx
import tenacity

from crypto.errors import BadEncoding, BadSignature
from crypto.keys import Identity, PublicKeys, b64, private_dir, unb64, verify
from sync.errors import Rejected, Retryable, SyncError

BLOB_PATH = "/sync/v1/blobs/"
CONTEXT = "lastmile-blob-request/2"
ANSWER_CONTEXT = "lastmile-blob-answer/1"
SHA = re.compile(r"[0-9a-f]{64}")
NONCE = re.compile(r"[0-9a-f]{32}")
MIN_CHUNK, START_CHUNK, MAX_CHUNK = 8 * 1024, 64 * 1024, 1024 * 1024
MAX_SEALED = 32 * 1024 * 1024       # no sealed scan is larger (intake: images ≤ 2000 px, PDFs ≤ 4 MB)
EXPIRES_AFTER_S = 120               # a station's request is valid this long (by the county's clock) …
MAX_AHEAD_S = 600                   # … and the county refuses one valid further ahead than this
PARTIAL, VERIFIED = "partial", "verified"
SCAN_ERROR = "scan_error/"          # + sha256: a station's _sync_status entry for a refused scan


class OffsetMismatch(Rejected):
    code = "offset_mismatch"

    def __init__(self, offset: int) -> None:
        super().__init__(f"the county holds {offset} bytes of this scan")
        self.offset = offset


class ScanRefused(Rejected):
    """The county refused this one scan (4xx): recorded on the scan, the next one goes on."""


def request_bytes(station: str, sha: str, offset: int | str, total: int, expires: int, nonce: str) -> bytes:
    return f"{CONTEXT}|{station}|{sha}|{offset}|{total}|{expires}|{nonce}".encode()


def sign_request(me: Identity, station: str, sha: str, offset: int | str, total: int, expires: int,
                 nonce: str) -> str:
    return b64(me.sign(request_bytes(station, sha, offset, total, expires, nonce)))


def check_request(keys: PublicKeys, station: str, sha: str, offset: int | str, total: int, expires: int,
                  nonce: str, signature: str) -> None:
    """Raise BadSignature unless the request was signed by the station's key."""
    verify(keys.sign, unb64(signature), request_bytes(station, sha, offset, total, expires, nonce))


def answer_bytes(station: str, sha: str, offset: int, total: int, state: str, nonce: str) -> bytes:
    return f"{ANSWER_CONTEXT}|{station}|{sha}|{offset}|{total}|{state}|{nonce}".encode()


def sign_answer(me: Identity, station: str, sha: str, offset: int, total: int, state: str, nonce: str) -> str:
    return b64(me.sign(answer_bytes(station, sha, offset, total, state, nonce)))


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
    with os.fdopen(os.open(part, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as f:
        f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    return offset + len(chunk)


def complete(folder: Path, sha: str) -> Path:
    """Rename the verified part file into place and fsync the directory, so the rename the
    database is about to rely on survives a power cut."""
    done, part = _paths(folder, sha)
    os.replace(part, done)
    fsync_dir(folder)
    return done


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def discard(folder: Path, sha: str) -> None:
    for p in _paths(folder, sha):
        p.unlink(missing_ok=True)


# station side: upload ---------------------------------------------------------------
def _check(resp: httpx.Response) -> None:
    if resp.status_code in (408, 429, 502, 503, 504):        # 408: a chunk came too slowly; retried smaller
        after = resp.headers.get("retry-after", "")
        raise Retryable(f"county answered {resp.status_code}", float(after) if after.isdigit() else None)
    if resp.status_code >= 400 and resp.status_code != 409:
        # a HEAD refusal has no body: its code is in Lastmile-Error (PROTOCOL.md §7)
        header = resp.headers.get("lastmile-error", "")
        code, message = header or "rejected", header
        try:
            body = resp.json()
            if isinstance(body, dict):
                code, message = str(body.get("error") or code), str(body.get("message") or message)
        except ValueError:
            message = message or resp.text[:200]
        err = ScanRefused(f"county refused the scan ({resp.status_code}): {message or code}")
        err.code = code if resp.status_code < 500 else "county_error"
        raise err


def upload(http: httpx.Client, url: str, *, me: Identity, county: PublicKeys, station: str, sha: str,
           sealed: bytes, chunk: int = START_CHUNK, max_chunk: int = MAX_CHUNK,
           progress: Callable[[int, int, int | None], None] = lambda offset, chunk, bps: None,
           attempts: int = 4, sleep: Callable[[float], None] = time.sleep,
           clock: Callable[[], float] = time.time) -> tuple[int, bool]:
    """Send what the county lacks of one sealed scan; return (the offset it confirmed, whether it
    says the scan is verified). Every answer used must carry the county's signature over this
    request's nonce; an unsigned or badly signed one is treated like a cut link.

    ``clock()`` is the county's time as the station best knows it (unix seconds): requests expire
    ``EXPIRES_AFTER_S`` after it. ``progress(offset, chunk, bps)`` is called after every confirmed
    chunk, with the chunk size to use next time (halved after a failure, doubled after a success,
    at most ``max_chunk``) and the rate the chunk went at (bits per second, None if unknown)."""
    base = url.rstrip("/") + BLOB_PATH + sha
    total = len(sealed)
    verified = False

    def signed(offset: int | str) -> tuple[dict[str, str], str]:
        nonce, expires = os.urandom(16).hex(), int(clock()) + EXPIRES_AFTER_S
        return {"lastmile-station": station, "upload-length": str(total), "lastmile-expires": str(expires),
                "lastmile-nonce": nonce,
                "lastmile-signature": sign_request(me, station, sha, offset, total, expires, nonce)}, nonce

    def answer(resp: httpx.Response, nonce: str) -> int:
        """The offset of a signed answer; Retryable (like a cut) if it is not the county's."""
        nonlocal verified
        value, state = resp.headers.get("upload-offset", ""), resp.headers.get("lastmile-scan-state", "")
        try:
            if not value.isdigit() or state not in (PARTIAL, VERIFIED):
                raise BadSignature("no offset or state")
            verify(county.sign, unb64(resp.headers.get("lastmile-answer-signature", "")),
                   answer_bytes(station, sha, int(value), total, state, nonce))
        except (BadSignature, BadEncoding) as exc:
            raise Retryable(f"the county's answer ({resp.status_code}) is not signed by the county") from exc
        verified = state == VERIFIED and int(value) == total
        return int(value)

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

    def head() -> int:
        headers, nonce = signed("head")
        return answer(transport(lambda: http.head(base, headers=headers)), nonce)

    offset = retrying(head)
    known = True
    while offset < total:
        def send() -> int:
            nonlocal offset, known
            if not known:             # after a cut, ask where the county is before sending again
                offset = head()
                known = True
                if offset >= total:
                    return offset
            piece = sealed[offset:offset + chunk]
            known = False
            headers, nonce = signed(offset)
            resp = transport(lambda: http.patch(base, content=piece, headers={
                **headers, "content-type": "application/offset+octet-stream", "upload-offset": str(offset)}))
            confirmed = answer(resp, nonce)
            known = True
            return confirmed if resp.status_code == 204 else -confirmed - 1
        started, before = time.monotonic(), offset
        try:
            result = retrying(send)
        except SyncError:
            progress(offset, chunk, None)
            raise
        confirmed = result if result >= 0 else -result - 1       # a 409 names the offset to resume from
        bps = None
        if result >= 0 and confirmed > before:
            chunk = min(max_chunk, chunk * 2)
            bps = int((confirmed - before) * 8 / max(time.monotonic() - started, 1e-3))
        offset = confirmed
        progress(offset, chunk, bps)
    return offset, verified
