"""Document verification (PROTOCOL.md §11): the QR text printed on every station document, its
signed compact token, and the offline check of a token against a directory of stations' keys.
Shared by the station and the county; no SQL, no HTTP. The document kinds, their typed
verification codes and the index of those codes are sync/codes.py.

QR text::

    受理回执 V1-20261129-00001
    V1站（V1） · 临时救助申请 · 2026-11-29
    核验码 7KQ2-9MZD-41TX
    LM2:<base64url token>

The token is signed by the station's key that signed the document's event, at print time
(Ed25519 is deterministic, so every reprint gives the same bytes); it covers the three readable
lines through their SHA-256.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import logging
import re
import struct
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from crypto.errors import CryptoError
from crypto.keys import verify as verify_sig
from sync.codes import (APPROVAL_NOTICE, BUNDLE_RECEIPT, CODES, CORRECTION_REQUEST, DOC, DOCS, KIND_OF,
                        REJECTION_DECISION, REPORT_FILED, REPORT_RECEIPT, TITLES, code_of, normal_code)
from sync.law import transitions
from sync.law.errors import N_, RuleError

logger = logging.getLogger("lastmile.sync")

PREFIX = "LM2:"
FORMAT = 1
SIG_DOMAIN = b"lastmile-doc/1|"
#: the station's intake documents: the event kind is the document kind (the push's ``qr_texts``, §6)
KINDS = {transitions.ACCEPTED: 1, transitions.CORRECTION_NOTICE: 2, transitions.REFUSED: 3}
REPORT_ITEM = "办不成事诉求"                    # the item line of a report receipt
NO_ITEM = "-"                                   # the token's item code of a report naming no item
#: the kind of document as the verify page names it, in the reader's language (the QR text's TITLES are fixed)
KIND_NAMES = {transitions.ACCEPTED: N_("Acceptance receipt"),
              transitions.CORRECTION_NOTICE: N_("One-time notice of missing materials"),
              transitions.REFUSED: N_("Decision not to accept"), BUNDLE_RECEIPT: N_("Receipt of a one-visit sitting"),
              CORRECTION_REQUEST: N_("Notice to supply materials"), APPROVAL_NOTICE: N_("Notice of completion"),
              REJECTION_DECISION: N_("Decision not to approve"), REPORT_RECEIPT: N_("Receipt of a report")}
ANSWER_DOMAIN = b"lastmile-verify/1|"     # the county's signature over its verify answer to a station
CHINA = dt.timezone(dt.timedelta(hours=8))
MAX_TEXT = 2000
_FIXED = 46


class VerifyError(Exception):
    """A document that cannot be verified; ``message`` is an English message id (N_), ``params`` its values."""

    def __init__(self, message: str, **params: Any) -> None:
        super().__init__(message % params if params else message)
        self.message, self.params = message, params


@dataclass(frozen=True)
class Token:
    kind: str
    issued: int                 # unix seconds (UTC) of the event's `at`
    key_id: str                 # 16 hex chars
    hash16: str                 # 32 hex chars: the first 16 bytes of the event's hash
    digest: bytes               # 16 bytes: SHA-256 of the readable lines, truncated
    station: str
    receipt_no: str
    item_code: str
    signed: bytes               # the bytes the signature covers (after the domain)
    sig: bytes

    @property
    def issued_at(self) -> str:
        return dt.datetime.fromtimestamp(self.issued, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    @property
    def date(self) -> str:
        """The document's date in China time, as printed."""
        return dt.datetime.fromtimestamp(self.issued, CHINA).strftime("%Y-%m-%d")

    @property
    def code(self) -> str:
        return code_of(self.hash16, self.kind)


def readable(kind: str, receipt_no: str, station_name: str, station: str, date: str, item_name: str,
             code: str) -> str:
    return (f"{TITLES[kind]} {receipt_no}\n{station_name}（{station}） · {item_name} · {date}\n"
            f"核验码 {code}")


def _iso_seconds(at: str) -> int:
    return int(dt.datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp())


def _short(s: str) -> bytes:
    b = s.encode("utf-8")
    if not 1 <= len(b) <= 64:
        raise ValueError(f"field {s!r} must be 1-64 bytes")
    return bytes([len(b)]) + b


def make(*, sign: Callable[[bytes], bytes], key_id: str, station: str, station_name: str, kind: str, at: str,
         event_hash: str, receipt_no: str, item_code: str, item_name: str) -> str:
    """The QR text of a document of ``kind`` (a ``DOCS`` kind) naming the event of ``event_hash``
    and ``at``: three readable lines and the signed token."""
    issued = _iso_seconds(at)
    date = dt.datetime.fromtimestamp(issued, CHINA).strftime("%Y-%m-%d")
    text = readable(kind, receipt_no, station_name, station, date, item_name, code_of(event_hash, kind))
    signed = (bytes([FORMAT, CODES[kind]]) + struct.pack(">I", issued) + bytes.fromhex(key_id)
              + bytes.fromhex(event_hash[:32]) + hashlib.sha256(text.encode("utf-8")).digest()[:16]
              + _short(station) + _short(receipt_no) + _short(item_code))
    token = base64.urlsafe_b64encode(signed + sign(SIG_DOMAIN + signed)).rstrip(b"=").decode()
    return f"{text}\n{PREFIX}{token}"


def parse(text: str) -> tuple[str | None, Token]:
    """Split a scanned QR text into its readable part (None if only the token was given) and its
    token. Raises VerifyError for anything that is not a well-formed token; never anything else."""
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise VerifyError(N_("This is not the code of a lastmile document."))
    text = text.replace("\r\n", "\n").strip()
    at = text.rfind(PREFIX)
    if at < 0:
        raise VerifyError(N_("This is not the code of a lastmile document."))
    readable_part = text[:at].strip("\n") or None
    raw = text[at + len(PREFIX):].strip()
    try:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", raw):
            raise ValueError
        data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        if len(data) < _FIXED + 6 + 64 or data[0] != FORMAT or data[1] not in KIND_OF:
            raise ValueError
        if base64.urlsafe_b64encode(data).rstrip(b"=").decode() != raw:
            raise ValueError        # one text per token: no spare bits to change unnoticed
        signed, sig = data[:-64], data[-64:]
        pos, strings = _FIXED, []
        for _ in range(3):
            n = signed[pos]
            if n < 1 or pos + 1 + n > len(signed):
                raise ValueError
            strings.append(signed[pos + 1:pos + 1 + n].decode("utf-8"))
            pos += 1 + n
        if pos != len(signed):
            raise ValueError
    except (ValueError, IndexError, binascii.Error, UnicodeDecodeError):
        raise VerifyError(N_("The verification code is damaged or incomplete.")) from None
    (issued,) = struct.unpack(">I", signed[2:6])
    token = Token(kind=KIND_OF[signed[1]], issued=issued, key_id=signed[6:14].hex(), hash16=signed[14:30].hex(),
                  digest=signed[30:46], station=strings[0], receipt_no=strings[1], item_code=strings[2],
                  signed=signed, sig=sig)
    return readable_part, token


def _time(s: Any) -> int | None:
    if not isinstance(s, str) or not s:
        return None
    try:
        return _iso_seconds(s)
    except ValueError:
        return None


def check(text: str, directory: Mapping[str, Mapping[str, Any]]) -> tuple[str | None, Token, dict[str, Any]]:
    """Verify a scanned QR text against ``directory`` (station code -> {"name", "keys": [{"sign_id",
    "sign_key", "valid_from", "valid_until", "revoked_at"}]}). Returns (readable part, token, the
    station's entry); raises VerifyError with the reason in words."""
    part, token = parse(text)
    entry = directory.get(token.station)
    if entry is None:
        raise VerifyError(N_("Station %(station)s is not in this office's key directory: the document cannot be "
                             "checked here yet (sync with the county, or check at the county)."), station=token.station)
    key = next((k for k in entry.get("keys", []) if k.get("sign_id") == token.key_id), None)
    if key is None:
        raise VerifyError(N_("The key that signed this document is not a key of station %(station)s: it is forged."),
                          station=token.station)
    try:
        verify_sig(key["sign_key"], token.sig, SIG_DOMAIN + token.signed)
    except (CryptoError, ValueError, TypeError):
        raise VerifyError(N_("The signature does not match: the document was altered or forged.")) from None
    if part is not None and hashlib.sha256(part.encode("utf-8")).digest()[:16] != token.digest:
        raise VerifyError(N_("The printed text does not match the signed code: it was altered."))
    revoked = _time(key.get("revoked_at"))
    if revoked is not None and revoked <= token.issued:
        raise VerifyError(N_("The station's key was revoked on %(date)s, before this document's date."),
                          date=str(key["revoked_at"])[:10])
    until = _time(key.get("valid_until"))
    if until is not None and token.issued > until:
        raise VerifyError(N_("This document is dated after its key was retired (%(date)s)."),
                          date=str(key["valid_until"])[:10])
    if not re.fullmatch(re.escape(token.station) + r"-\d{8}-\d{5,}", token.receipt_no):
        raise VerifyError(N_("The signature does not match: the document was altered or forged."))
    return part, token, dict(entry)


def item_of(part: str | None) -> str | None:
    """The item name as the (verified) readable lines print it."""
    if not part:
        return None
    lines = part.split("\n")
    if len(lines) < 2:
        return None
    pieces = lines[1].split(" · ")
    return pieces[1] if len(pieces) == 3 else None


# one answer for page, API and CLI -------------------------------------------------------------------
@dataclass
class Held:
    """What an office holds about the event a document's token names (its own log, or the county's
    copy): ``kind`` the event's kind, ``prints`` the document kinds that event prints (``prints``),
    ``document`` the one a typed code matched (``code_rows``); receipt number and item are the
    case's (``fields``)."""
    station: str
    kind: str
    receipt_no: str
    item_code: str
    item_name: str
    at: str
    key_id: str
    hash: str
    state: str | None
    applicant_name: str = ""
    id_number: str = ""
    station_name: str = ""
    replaced_by: dict[str, str] | None = None    # {"kind", "receipt_no"}: the case's later document
    prints: tuple[str, ...] = ()
    document: str = ""


def replacement(kind: str, receipt_no: str, case: Mapping[str, Any] | None) -> dict[str, str] | None:
    """The document that replaced this one, from the case as the office holds it now: a station
    notice completed (or noticed again) gets a new receipt number on the same case, so a case whose
    receipt number is no longer this document's has a later document (its kind from the case's
    status: a notice, a refusal, else an acceptance). None if this is still the case's document."""
    if not case or not case.get("receipt_no") or case["receipt_no"] == receipt_no:
        return None
    later = {transitions.Status.CORRECTION_NOTICE: transitions.CORRECTION_NOTICE,
             transitions.Status.REFUSED: transitions.REFUSED}
    return {"kind": later.get(case.get("status"), transitions.ACCEPTED), "receipt_no": str(case["receipt_no"])}


def prints(event_kind: str, body: Any) -> tuple[str, ...]:
    """The document kinds an event prints: an intake event its own document (and the sitting's
    receipt if its case is one of a 一件事一次办 sitting), a ``case.decided`` the written decision of
    its ``decision``, a ``report.filed`` its receipt."""
    b = body if isinstance(body, dict) else {}
    return tuple(d.kind for d in DOCS if event_kind in d.events
                 and (d.decision is None or b.get("decision") == d.decision)
                 and (d.kind != BUNDLE_RECEIPT or isinstance(b.get("bundle"), dict)))


def fields(kind: str, body: Any, case: Mapping[str, Any] | None = None) -> tuple[str, str, str]:
    """(receipt_no, item_code, item_name) a document of ``kind`` prints, from its event's body, or,
    for the county's decisions (whose body names only the case), from ``case`` (the office's row
    of the case: ``receipt_no``, ``item_code``, ``item_name``)."""
    b = body if isinstance(body, dict) else {}
    if kind == REPORT_RECEIPT:
        return str(b.get("receipt_no", "")), str(b.get("item_code") or NO_ITEM), REPORT_ITEM
    src: Mapping[str, Any] = b if DOC[kind].own else (case or {})
    return str(src.get("receipt_no", "")), str(src.get("item_code", "")), str(src.get("item_name", ""))


def held_of(station: str, ev: Any, case: Mapping[str, Any] | None, state: str | None, *,
            station_name: str = "") -> Held:
    """The ``Held`` of a document event ``ev`` (an Event) of ``station``; ``case`` the office's row
    of its case (None if not held), ``state`` what the answer shows as the case's state, and the
    later document that replaced a station's notice (``replacement``)."""
    b = ev.body if isinstance(ev.body, dict) else {}
    kinds = prints(ev.kind, b)
    receipt_no, item_code, item_name = fields(kinds[0], b, case) if kinds else ("", "", "")
    person = b.get("citizen") if ev.kind == REPORT_FILED else b.get("applicant")
    person = person if isinstance(person, dict) else {}
    if not person and case:
        person = {"name": case.get("applicant_name", ""), "id_number": case.get("id_number", "")}
    return Held(station=station, kind=ev.kind, receipt_no=receipt_no, item_code=item_code, item_name=item_name,
                at=ev.at, key_id=ev.key, hash=ev.hash, state=state, applicant_name=str(person.get("name") or ""),
                id_number=str(person.get("id_number") or ""), prints=kinds, station_name=station_name,
                replaced_by=replacement(ev.kind, receipt_no, case) if kinds and DOC[kinds[0]].own
                and ev.kind != REPORT_FILED else None)


def masked_name(name: str) -> str:
    return name[:1] + "*" * max(len(name) - 1, 1) if name else ""


def masked_id(id_number: str) -> str:
    return f"{id_number[:6]}********{id_number[-4:]}" if len(id_number) >= 10 else ""


#: a token whose event this office does not hold, signed by a key its station no longer uses (PROTOCOL.md §11)
PENDING_REVOKED = N_("Signature valid, awaiting the county's confirmation: the key of station %(station)s that "
                     "signed this document was revoked on %(date)s, after the document's date. Whoever held that key "
                     "could still sign documents dated before then, so only the county, which holds every document "
                     "the station issued, can confirm this one: check it at the county.")
PENDING_RETIRED = N_("Signature valid, awaiting the county's confirmation: station %(station)s stopped using the key "
                     "that signed this document on %(date)s (new keys or a replacement computer), and this office "
                     "cannot tell whether that key is still in safe hands. Only the county, which holds every "
                     "document that key signed, can confirm it: check it at the county.")
PENDING_COUNTY = N_("Signature valid, awaiting the county's confirmation: the signature of station %(station)s "
                    "verifies, but the county holds no record of this document yet (the station has not synced it). "
                    "Check again after the station's next sync.")
NOT_AT_COUNTY_REVOKED = N_("Not confirmed: the county holds no record of this document, and the key of station "
                           "%(station)s that signed it was revoked on %(date)s, so no record of it can come any more. "
                           "Do not accept it as genuine.")
NOT_AT_COUNTY_RETIRED = N_("Not confirmed: the county holds no record of this document, and station %(station)s "
                           "stopped using the key that signed it on %(date)s; every document that key signed and the "
                           "station sent is on record here. Do not accept it as genuine; ask the station that issued it.")


def key_of(entry: Mapping[str, Any], key_id: str) -> Mapping[str, Any]:
    return next((k for k in entry.get("keys", []) if k.get("sign_id") == key_id), {})


def lookup(text: Any, directory: Mapping[str, Mapping[str, Any]], *, by_hash: Callable[[str, str], Held | None],
           by_code: Callable[[str], Held | None], county: bool = False) -> dict[str, Any]:
    """Check a scanned QR text or a typed code. The answer: ``valid``, ``reason`` (English message id)
    and ``params``, and what the document says (``station``, ``receipt_no``, ``item``, ``issued_at``,
    ``key_id``, ``state``, ``kind``, ``code``, ``applicant`` masked when the office holds the event).
    ``by_hash(station, hash16)``: the held event of ``EVENT_KINDS`` a token names; ``by_code(code)``:
    the held event whose document has that code, ``document`` set (``code_rows``). ``county``: the
    office holds every station's log, so it confirms a token only if it holds its event. A token
    whose event the office does not hold is otherwise genuine only if signed by its station's
    current key; signed by a revoked or retired one it is ``pending`` (the signature verifies, the
    county must confirm). Never raises for any input."""
    out: dict[str, Any] = {"valid": False, "station": None, "station_name": None, "receipt_no": None,
                           "item": None, "item_code": None, "issued_at": None, "key_id": None, "state": None,
                           "kind": None, "code": None, "applicant": None, "id_number": None, "replaced_by": None,
                           "undetermined": False, "pending": False, "params": {}}
    if not isinstance(text, str) or not text.strip():
        return {**out, "reason": N_("Enter the verification code or the text of the QR code.")}
    code = normal_code(text) if PREFIX not in text and len(text) <= 40 else None
    if code is not None:
        held = by_code(code)
        if held is None or held.document not in held.prints:
            return {**out, "code": code, "reason": N_(
                "No document with this verification code is on record here. A typed code can be checked only "
                "at the station that issued the document or at the county; elsewhere, scan the QR code.")}
        return {**out, **_held(held, held.document), "valid": True, "code": code, "params": {"station": held.station},
                "reason": N_("This office's records hold this document, signed by station %(station)s: compare "
                             "what is shown here with the paper.")}
    try:
        part, token, entry = check(text, directory)
    except VerifyError as exc:
        return {**out, "reason": exc.message, "params": exc.params}
    out.update(station=token.station, station_name=entry.get("name"), receipt_no=token.receipt_no,
               item_code=token.item_code, item=item_of(part) or token.item_code, issued_at=token.issued_at,
               key_id=token.key_id, kind=token.kind, code=token.code)
    held = by_hash(token.station, token.hash16)
    if held is not None:
        own = DOC[token.kind].own
        if token.kind not in held.prints or (held.receipt_no, held.item_code, _iso_seconds(held.at)) != \
                (token.receipt_no, token.item_code, token.issued) or (own and held.key_id != token.key_id):
            return {**out, "reason": N_("The code does not match this office's record of the document: it is forged.")}
        return {**out, **_held(held, token.kind), "key_id": token.key_id, "valid": True, "params": {"station": token.station},
                "reason": N_("Genuine: issued and signed by station %(station)s, and on record here.")}
    key = key_of(entry, token.key_id)
    revoked, retired = key.get("revoked_at"), key.get("valid_until")
    gone = {"station": token.station, "date": str(revoked or retired or "")[:10]}
    if county:          # it holds every event a station sent: one it does not hold is not confirmed
        if revoked or retired:
            return {**out, "params": gone, "reason": NOT_AT_COUNTY_REVOKED if revoked else NOT_AT_COUNTY_RETIRED}
        return {**out, "undetermined": True, "pending": True, "params": {"station": token.station},
                "reason": PENDING_COUNTY}
    if revoked or retired:
        return {**out, "undetermined": True, "pending": True, "params": gone,
                "reason": PENDING_REVOKED if revoked else PENDING_RETIRED}
    return {**out, "valid": True, "params": {"station": token.station},
            "reason": N_("Genuine: issued and signed by station %(station)s (checked with its public key; "
                         "this office holds no copy of the case).")}


def _held(h: Held, kind: str) -> dict[str, Any]:
    return {"station": h.station, "receipt_no": h.receipt_no, "item": h.item_name, "item_code": h.item_code,
            "issued_at": dt.datetime.fromtimestamp(_iso_seconds(h.at), dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "key_id": h.key_id, "state": h.state, "kind": kind, "code": code_of(h.hash, kind),
            "applicant": masked_name(h.applicant_name), "id_number": masked_id(h.id_number),
            "replaced_by": h.replaced_by, **({"station_name": h.station_name} if h.station_name else {})}


def api_answer(result: Mapping[str, Any], translate: Callable[..., str]) -> dict[str, Any]:
    """The JSON answer of ``POST /api/v1/verify``, the reason translated with ``translate``.
    (The message id is a variable, not ``_(result["reason"])``: Babel 2.14's extractor took that
    subscript's literal "reason" for a message id.)"""
    message, params = result["reason"], result["params"]
    return {"valid": result["valid"], "reason": translate(message, **params),
            "station": result["station"], "receipt_no": result["receipt_no"], "item": result["item"],
            "issued_at": result["issued_at"], "key_id": result["key_id"], "state": result["state"],
            "kind": result["kind"], "verify_code": result["code"], "station_name": result.get("station_name"),
            "replaced_by": result.get("replaced_by"), "undetermined": bool(result.get("undetermined")),
            "pending": bool(result.get("pending")),
            "applicant": result.get("applicant"), "id_number": result.get("id_number")}


# the QR text travels up beside its event (the push's ``qr_texts``, PROTOCOL.md §6 and §11) ---------

def check_qr(text: str, *, author: str, event: Any, directory: Mapping[str, Mapping[str, Any]]) -> Token:
    """A QR text a station sent up beside ``event``, its document's event in ``up/<author>`` as the
    county holds it. The token MUST verify with the author's key history (``check``), name the
    author, the first 16 bytes of that event's hash, its kind, ``receipt_no``, ``item_code``, issued
    second and signing key; the readable part MUST be exactly the one the station prints for that
    event (``readable``; the station's name as it printed it is the text before ``（<author>）``), and
    the text MUST be laid out exactly as ``make`` lays it out (no white space added, no other line
    breaks). Returns the token; RuleError naming the first broken rule."""
    if event is None or event.kind not in KINDS:
        raise RuleError(N_("The QR text names a document this office does not hold."))
    b = event.body if isinstance(event.body, dict) else {}
    try:
        part, token, _ = check(text, directory)
    except VerifyError as exc:
        logger.warning("QR text of %s for %s#%d does not verify: %s", author, event.stream, event.seq, exc)
        raise RuleError(N_("The QR text of a document does not verify with the station's keys.")) from None
    if token.station != author or token.hash16 != event.hash[:32] or token.kind != event.kind \
            or token.receipt_no != b.get("receipt_no") or token.item_code != b.get("item_code") \
            or token.key_id != event.key or token.issued != _iso_seconds(event.at):
        raise RuleError(N_("The QR text does not match the document it names."))
    name = (part or "").split("\n")[1].split(f"（{author}）")[0] if part and part.count("\n") == 2 else ""
    expected = readable(event.kind, str(b.get("receipt_no")), name, author, token.date, str(b.get("item_name")),
                        code_of(event.hash))
    laid_out = f"{expected}\n{PREFIX}" + base64.urlsafe_b64encode(token.signed + token.sig).rstrip(b"=").decode()
    if not name or part != expected or text != laid_out:
        raise RuleError(N_("The QR text does not match the document it names."))
    return token
