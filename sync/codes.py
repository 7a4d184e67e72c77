"""The printed documents and their typed verification codes (PROTOCOL.md §11), and the index of
those codes, ``_sync_codes``, filled as each event is stored.

Below both sync/log.py (``store`` indexes every event in the transaction that stores it) and
sync/verify.py (the QR token, the checks and the answers): the table of document kinds, the code
of a document, and the index's writes and look-ups. Works on any connection with
``execute(sql, params)``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Any, Sequence

from sync.law import reports, transitions

logger = logging.getLogger("lastmile.sync")

CODE_DOMAIN = b"lastmile-code/1|"
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"      # Crockford base32: no I, L, O, U
BUNDLE_RECEIPT = "bundle_receipt"               # 一件事一次办 receipt or notice of a sitting
CORRECTION_REQUEST = "correction_request"       # the county's 材料补正通知书, handed over by the station
APPROVAL_NOTICE = "approval_notice"             # 办结通知书
REJECTION_DECISION = "rejection_decision"       # 不予批准决定书
REPORT_RECEIPT = "report_receipt"               # receipt of a 办不成事 report
REPORT_FILED = reports.FILED                    # a 办不成事 report


@dataclass(frozen=True)
class Doc:
    """A printed document kind (PROTOCOL.md §11): its kind byte, title, the kinds of the event its
    token names, whether that event is the station's own (``up/<station>``, signed by the key that
    signs the token) or the county's ``case.decided`` to the station, and that decision."""
    code: int
    kind: str
    title: str
    events: tuple[str, ...]
    own: bool = True
    decision: str | None = None


DOCS = (Doc(1, transitions.ACCEPTED, "受理回执", (transitions.ACCEPTED,)),
        Doc(2, transitions.CORRECTION_NOTICE, "一次性告知书", (transitions.CORRECTION_NOTICE,)),
        Doc(3, transitions.REFUSED, "不予受理决定书", (transitions.REFUSED,)),
        Doc(4, BUNDLE_RECEIPT, "一件事一次办回执", (transitions.ACCEPTED, transitions.CORRECTION_NOTICE)),
        Doc(5, CORRECTION_REQUEST, "材料补正通知书", (transitions.CASE_DECIDED,), own=False, decision="correction"),
        Doc(6, APPROVAL_NOTICE, "办结通知书", (transitions.CASE_DECIDED,), own=False, decision="approve"),
        Doc(7, REJECTION_DECISION, "不予批准决定书", (transitions.CASE_DECIDED,), own=False, decision="reject"),
        Doc(8, REPORT_RECEIPT, "办不成事诉求受理回执", (REPORT_FILED,)))
DOC = {d.kind: d for d in DOCS}
CODES = {d.kind: d.code for d in DOCS}
KIND_OF = {d.code: d.kind for d in DOCS}
TITLES = {d.kind: d.title for d in DOCS}
#: every event kind a document's token can name
EVENT_KINDS = tuple(dict.fromkeys(e for d in DOCS for e in d.events))


def code_of(event_hash: str, kind: str | None = None) -> str:
    """The typed verification code of the document of ``kind`` whose event has ``event_hash`` (hex,
    at least the first 32 characters): 12 Crockford base32 characters, grouped by 4. An intake
    document's (kinds 1-3, or ``kind`` None) hashes the event's hash alone; any other kind's adds
    its kind byte, so two documents naming one event have two codes."""
    code = CODES[kind] if kind is not None else 1
    extra = bytes([code]) if code > 3 else b""
    digest = hashlib.sha256(CODE_DOMAIN + bytes.fromhex(event_hash[:32]) + extra).digest()
    n = int.from_bytes(digest[:8], "big") >> 4            # the first 60 bits
    chars = "".join(ALPHABET[(n >> (5 * (11 - i))) & 31] for i in range(12))
    return f"{chars[:4]}-{chars[4:8]}-{chars[8:]}"


def normal_code(text: str) -> str | None:
    """A typed code as ``XXXX-XXXX-XXXX``, forgiving case, spaces, dashes and O/I/L; None if it is not one."""
    s = re.sub(r"[\s\-]", "", text).upper().translate(str.maketrans("OIL", "011"))
    if len(s) != 12 or any(c not in ALPHABET for c in s):
        return None
    return f"{s[:4]}-{s[4:8]}-{s[8:]}"


#: event kind -> the document kinds an event of that kind may print (``prints`` decides from its body)
CANDIDATES = {e: tuple(d.kind for d in DOCS if e in d.events) for e in EVENT_KINDS}
INDEXED = "codes_indexed"       # _sync_status: the codes of the events stored before _sync_codes are in


def index_event(db: Any, stream: str, seq: int, event_kind: str, event_hash: str) -> None:
    """Record in ``_sync_codes`` the typed code of every document an event of ``event_kind`` may
    print (``CANDIDATES``: from its kind and hash alone, so a station whose bodies are sealed
    (node/vault.py) indexes too; ``prints`` later tells which the event really prints). Called by
    ``sync.log.store`` inside the transaction that stores the event."""
    docs = CANDIDATES.get(event_kind)
    if docs:
        db.executemany("INSERT INTO _sync_codes (code, stream, seq, doc) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                       [(code_of(event_hash, d), stream, seq, d) for d in docs])


def index_existing(db: Any) -> int:
    """The migration: index the events stored before ``_sync_codes`` existed, once (marked in
    ``_sync_status``). Returns how many events it indexed."""
    if db.execute("SELECT 1 FROM _sync_status WHERE name = ?", (INDEXED,)).fetchone():
        return 0
    marks = ",".join("?" * len(EVENT_KINDS))
    rows = db.execute(f"SELECT stream, seq, kind, hash FROM _sync_events WHERE kind IN ({marks})",
                      EVENT_KINDS).fetchall()
    db.executemany("INSERT INTO _sync_codes (code, stream, seq, doc) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                   [(code_of(h, d), stream, seq, d) for stream, seq, kind, h in rows for d in CANDIDATES[kind]])
    db.execute("INSERT INTO _sync_status (name, value) VALUES (?, ?)", (INDEXED, "1"))
    if rows:
        logger.warning("indexed the verification codes of %d document events stored before the index", len(rows))
    return len(rows)


def codes_of_event(hash16: str) -> tuple[str, ...]:
    """Every typed code a document naming the event of ``hash16`` may have (one per document kind;
    kinds 1-3 share one): a token's event is found through ``_sync_codes`` too (``code_rows``)."""
    return tuple(dict.fromkeys(code_of(hash16, d.kind) for d in DOCS))


def code_rows(db: Any, codes: Sequence[str], streams: Sequence[str] | None = None) -> list[tuple[str, int, str]]:
    """(stream, seq, document kind) of each held event whose document may have one of the typed
    ``codes`` (``_sync_codes``: an indexed lookup per code; the codes are computed by the caller,
    outside any lock), in ``streams`` if given, else in any ``up/`` or ``down/`` stream. The caller
    checks that the event is still held and really prints that document."""
    marks = ",".join("?" * len(codes))
    sql, params = f"SELECT stream, seq, doc FROM _sync_codes WHERE code IN ({marks})", list(codes)
    if streams:
        sql += f" AND stream IN ({','.join('?' * len(streams))})"
        params += list(streams)
    rows = db.execute(sql + " ORDER BY stream, seq", params).fetchall()
    return [(str(r[0]), int(r[1]), str(r[2])) for r in rows if str(r[0]).startswith(("up/", "down/"))]
