"""The station's side of document verification (PROTOCOL.md §11): the QR text of its documents,
the directory of stations' keys the county sends down (``stations.directory``), and checking any
station's document offline with it. Blocking: call from a worker thread."""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
from typing import Any, Sequence

import httpx

from crypto.errors import CryptoError
from crypto.keys import load_retired, unb64, verify as verify_sig
from node.store import Store
from sync import log, verify
from sync.codes import (BUNDLE_RECEIPT, DOC, EVENT_KINDS, REPORT_FILED, REPORT_RECEIPT, code_of, code_rows,
                        codes_of_event)
from sync.law import facts
from sync.law.errors import N_
from sync.log import Event

logger = logging.getLogger("lastmile.node")
META = "stations_directory"


def directory_published(store: Store, db: sqlite3.Connection, ev: Event) -> None:
    """The county's directory of stations' keys: kept whole, the newest replaces the one held
    (one with an older ``at`` is ignored)."""
    facts.check_directory(ev.body)
    row = db.execute("SELECT value FROM meta WHERE name = ?", (META,)).fetchone()
    if row and row[0] and str(json.loads(row[0]).get("at", "")) > ev.body["at"]:
        return
    store.set_meta(db, META, json.dumps(ev.body, ensure_ascii=False))


def directory(st: Any, db: Any = None) -> dict[str, dict[str, Any]]:
    """Station code -> entry, from the county's newest directory; the station's own keys are
    added if the county has not sent one yet (before the first sync after an upgrade). ``db``: a
    connection to read with (a reader, ``check``); the store's own under its lock otherwise."""
    held = st.store.meta(META, db=db)
    out = facts.check_directory(json.loads(held)) if held else {}
    if st.code not in out:
        keys = [{"sign_id": st.me.public.sign_id, "sign_key": st.me.public.sign, "valid_from": "",
                 "valid_until": None, "revoked_at": None}]
        for kid, ident in load_retired(st.settings.data / "keys.retired").items():
            keys.append({"sign_id": kid, "sign_key": ident.public.sign, "valid_from": "", "valid_until": None,
                         "revoked_at": None})
        out[st.code] = {"code": st.code, "name": st.name, "keys": keys}
    return out


def _event(st: Any, event_hash: str) -> Event | None:
    with st.store.lock:
        row = st.store.conn.execute("SELECT stream, seq FROM _sync_events WHERE hash = ?", (event_hash,)).fetchone()
        return log.get(st.store.conn, row[0], row[1]) if row else None


def qr_text(st: Any, app: dict[str, Any]) -> str | None:
    """The QR text of the application's document (its latest application event), signed by the key
    that signed that event (a retired one if rotated since; the current one if it is gone)."""
    ev = _event(st, app["event_hash"]) if app.get("event_hash") else None
    return qr_of_event(st, ev) if ev is not None else None


def qr_of_event(st: Any, ev: Event, retired: dict[str, Any] | None = None, *, kind: str | None = None,
                case: dict[str, Any] | None = None) -> str | None:
    """The QR text of the document of ``kind`` (sync/codes.py ``DOCS``; default: the intake document of an
    application event, None for any other event) that ``ev`` prints. A document naming the station's
    own event is signed by the key that signed it; one naming the county's decision by the station's
    current key. ``case``: the application a decision is about. ``retired``: the station's retired
    identities by key id, if already loaded."""
    kind = kind or (ev.kind if ev.kind in verify.KINDS else None)
    if kind is None or kind not in verify.prints(ev.kind, ev.body):
        return None
    signer = st.me
    if DOC[kind].own and ev.key != st.me.public.sign_id:
        held = retired if retired is not None else load_retired(st.settings.data / "keys.retired")
        signer = held.get(ev.key, st.me)
    receipt_no, item_code, item_name = verify.fields(kind, ev.body, case)
    return verify.make(sign=signer.sign, key_id=signer.public.sign_id, station=st.code, station_name=st.name,
                       kind=kind, at=ev.at, event_hash=ev.hash, receipt_no=receipt_no,
                       item_code=item_code, item_name=item_name)


def printed(st: Any, ev: Event | None, kind: str, case: dict[str, Any] | None = None) -> dict[str, str | None]:
    """``qr_text`` and ``verify_code`` of the document of ``kind`` that ``ev`` prints (both None
    without the event): what the page prints and the API gives."""
    text = qr_of_event(st, ev, kind=kind, case=case) if ev is not None and kind in DOC else None
    return {"qr_text": text, "verify_code": code_of(ev.hash, kind) if text and ev is not None else None}


def intake_printed(st: Any, app: dict[str, Any]) -> dict[str, str | None]:
    """``qr_text`` and ``verify_code`` of the station's intake document of an application (受理回执,
    一次性告知书 or 不予受理决定书: its latest application event's)."""
    ev = _event(st, app["event_hash"]) if app.get("event_hash") else None
    return printed(st, ev, ev.kind if ev is not None else "")


def bundle_printed(st: Any, sitting: Sequence[dict[str, Any]]) -> dict[str, str | None]:
    """``qr_text`` and ``verify_code`` of a 一件事一次办 sitting's receipt: it names the latest
    application event of the sitting's first case (one text, whichever case's page printed it)."""
    first = sitting[0] if sitting else {}
    ev = _event(st, first["event_hash"]) if first.get("event_hash") else None
    return printed(st, ev, BUNDLE_RECEIPT)


def decision_printed(st: Any, app: dict[str, Any], ev: Event | None) -> dict[str, str | None]:
    """``qr_text`` and ``verify_code`` of the county's written decision ``ev`` on ``app`` as the
    station hands it over: 办结通知书, 不予批准决定书 or 材料补正通知书 (by its ``decision``)."""
    kinds = verify.prints(ev.kind, ev.body) if ev is not None else ()
    return printed(st, ev, kinds[0], app) if kinds else {"qr_text": None, "verify_code": None}


def report_printed(st: Any, report: dict[str, Any]) -> dict[str, str | None]:
    """``qr_text`` and ``verify_code`` of a 办不成事 report's receipt (its ``report.filed`` event)."""
    with st.store.lock:
        ev = log.get(st.store.conn, log.up(st.code), int(report["seq"]))
    return printed(st, ev if ev is not None and ev.kind == REPORT_FILED else None, REPORT_RECEIPT)


def qr_texts(st: Any, events: Sequence[Event]) -> dict[int, str]:
    """The push's ``qr_texts`` (PROTOCOL.md §6): seq -> the QR text the station prints for each
    document event among ``events``, made by ``qr_of_event`` as the printed page makes it (Ed25519
    is deterministic: the printed text, byte for byte), so the county can give it without the
    station's key. An event whose text cannot be made (a body without its receipt fields) is left
    out and logged: the county then gives ``qr_text: null`` for that document."""
    docs = [ev for ev in events if ev.kind in verify.KINDS]
    retired = load_retired(st.settings.data / "keys.retired") \
        if any(ev.key != st.me.public.sign_id for ev in docs) else {}
    out: dict[int, str] = {}
    for ev in docs:
        try:
            text = qr_of_event(st, ev, retired)
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("no QR text for %s#%d goes up: %s", ev.stream, ev.seq, exc)
            continue
        if text is not None:
            out[ev.seq] = text
    return out


def verify_code(app: dict[str, Any]) -> str | None:
    return code_of(app["event_hash"]) if app.get("event_hash") else None


def _held(st: Any, ev: Event, db: Any = None) -> verify.Held:
    case_id = str(ev.body.get("id", "")) if isinstance(ev.body, dict) else ""
    app = st.store.application(case_id, db) if ev.kind != REPORT_FILED else None
    return verify.held_of(st.code, ev, app, app["status"] if app else None, station_name=st.name)


ASK_SECONDS = 5.0       # the whole of one question to the county: the verify page never waits longer

CONFIRMED = N_("The county's records hold this document, issued by %(station)s: compare what is shown here "
               "with the paper.")
UNKNOWN = N_("Neither this station nor the county has a document with this verification code on record. Check "
             "that it was typed right; a document issued in the last few days may not have reached the county "
             "yet: scan its QR code, or ask the station that issued it.")
CANNOT_CONFIRM = N_("This code cannot be confirmed here: a typed code carries no signature, so only the issuing "
                    "station or the county can check it, and the county cannot be reached now. Scan the QR code, "
                    "or ask the station that issued the document or the county.")


def ask_county(st: Any, code: str) -> dict[str, Any] | None:
    """The county's answer for a typed code (its public ``POST /api/v1/verify``, at the address the
    station syncs with), or None if it cannot be had now: no address, no answer within ASK_SECONDS,
    or an answer not signed by the county's key (PROTOCOL.md §11, "A typed code elsewhere") for the
    nonce sent: nothing between the station and the county can make a "genuine" here. Blocking."""
    url = str(st.county.url or "")
    if not url.startswith(("http://", "https://")):
        return None
    nonce = secrets.token_urlsafe(24)
    try:
        with httpx.Client(timeout=httpx.Timeout(ASK_SECONDS), **st.http_options) as http:
            r = http.post(url + "/api/v1/verify", json={"code": code, "nonce": nonce},
                          headers={"accept-language": "zh-CN"})
        if r.status_code != 200:
            raise ValueError(f"answered {r.status_code}")
        verify_sig(st.county.keys.sign, unb64(r.headers.get("lastmile-signature", "")),
                   verify.ANSWER_DOMAIN + nonce.encode() + b"|" + r.content)
        answer = r.json()
        if not isinstance(answer, dict) or not isinstance(answer.get("valid"), bool) \
                or (answer["valid"] and answer.get("verify_code") != code):
            raise ValueError("not a verify answer for this code")
    except (httpx.HTTPError, CryptoError, ValueError, TypeError) as exc:
        logger.info("typed code not confirmed with the county: %s", exc)
        return None
    return answer


def _from_county(result: dict[str, Any], answer: dict[str, Any] | None) -> dict[str, Any]:
    """The page's answer for a typed code this station does not hold, from the county's answer."""
    if answer is None:
        return {**result, "undetermined": True, "reason": CANNOT_CONFIRM, "params": {}}
    if not answer["valid"]:
        return {**result, "reason": UNKNOWN, "params": {}}
    fields = ("station", "station_name", "receipt_no", "item", "issued_at", "key_id", "state", "kind",
              "applicant", "id_number", "replaced_by")
    shown = {k: answer.get(k) if isinstance(answer.get(k), (str, type(None))) else None for k in fields}
    replaced = answer.get("replaced_by")
    shown["replaced_by"] = replaced if isinstance(replaced, dict) and replaced.get("kind") in DOC \
        and isinstance(replaced.get("receipt_no"), str) else None
    if shown["kind"] not in DOC:
        shown["kind"] = None
    who = shown["station_name"] or shown["station"] or ""
    return {**result, **shown, "valid": True, "checked_by": "county", "reason": CONFIRMED, "params": {"station": who}}


def check(st: Any, text: Any) -> dict[str, Any]:
    """Verify a scanned QR text or a typed code at this station (verify.lookup): any document it
    printed names an event of its own log or one of the county's decisions to it; a typed code this
    station does not hold is asked of the county (``ask_county``). Blocking: a worker thread.

    Everything is read on this thread's read-only connection (``Store.reading``), never under the
    store's lock: anyone may type codes at the public page, and a push or a purge holding the lock
    must neither wait for them nor make them wait (issue 15, finding 4)."""
    streams = (log.up(st.code), log.down(st.code))
    with st.store.reading() as db:

        def held_events(codes: tuple[str, ...]) -> list[tuple[Event, str]]:
            """(event, document kind) of the held events whose document may have one of ``codes``:
            one indexed query and a read of each (usually one) event; the codes were hashed before."""
            found = [(log.get(db, stream, seq), doc) for stream, seq, doc in code_rows(db, codes, streams)]
            return [(ev, doc) for ev, doc in found if ev is not None]

        def by_hash(station: str, hash16: str) -> verify.Held | None:
            if station != st.code:
                return None
            ev = next((ev for ev, _ in held_events(codes_of_event(hash16))
                       if ev.hash[:32] == hash16 and ev.kind in EVENT_KINDS), None)
            return _held(st, ev, db) if ev else None

        def by_code(code: str) -> verify.Held | None:
            for ev, doc in held_events((code,)):
                if doc in verify.prints(ev.kind, ev.body):
                    held = _held(st, ev, db)
                    held.document = doc
                    return held
            return None

        result = verify.lookup(text, directory(st, db), by_hash=by_hash, by_code=by_code)
    if not result["valid"] and result["code"] and not result["receipt_no"]:     # a typed code not held here
        return _from_county(result, ask_county(st, result["code"]))
    return result
