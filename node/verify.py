"""The station's side of document verification (PROTOCOL.md §11): the QR text of its documents,
the directory of stations' keys the county sends down (``stations.directory``), and checking any
station's document offline with it. Blocking: call from a worker thread."""

from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any, Sequence

from crypto.keys import load_retired
from node.store import Store
from sync import log, verify
from sync.log import Event

logger = logging.getLogger("lastmile.node")
META = "stations_directory"
DOC_KINDS = tuple(verify.KINDS)


def directory_published(store: Store, db: sqlite3.Connection, ev: Event) -> None:
    """The county's directory of stations' keys: kept whole, the newest replaces the one held
    (one with an older ``at`` is ignored)."""
    verify.check_directory(ev.body)
    row = db.execute("SELECT value FROM meta WHERE name = ?", (META,)).fetchone()
    if row and row[0] and str(json.loads(row[0]).get("at", "")) > ev.body["at"]:
        return
    store.set_meta(db, META, json.dumps(ev.body, ensure_ascii=False))


def directory(st: Any) -> dict[str, dict[str, Any]]:
    """Station code -> entry, from the county's newest directory; the station's own keys are
    added if the county has not sent one yet (before the first sync after an upgrade)."""
    held = st.store.meta(META)
    out = verify.check_directory(json.loads(held)) if held else {}
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


def qr_of_event(st: Any, ev: Event, retired: dict[str, Any] | None = None) -> str | None:
    """The QR text of the document an application event prints (None for any other event).
    ``retired``: the station's retired identities by key id, if already loaded."""
    if ev.kind not in verify.KINDS:
        return None
    signer = st.me
    if ev.key != st.me.public.sign_id:
        held = retired if retired is not None else load_retired(st.settings.data / "keys.retired")
        signer = held.get(ev.key, st.me)
    b = ev.body
    return verify.make(sign=signer.sign, key_id=signer.public.sign_id, station=st.code, station_name=st.name,
                       kind=ev.kind, at=ev.at, event_hash=ev.hash, receipt_no=b["receipt_no"],
                       item_code=b["item_code"], item_name=b["item_name"])


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
    return verify.code_of(app["event_hash"]) if app.get("event_hash") else None


def _held(st: Any, ev: Event) -> verify.Held:
    app = st.store.application(ev.body.get("id", ""))
    b = ev.body
    applicant = b.get("applicant") if isinstance(b.get("applicant"), dict) else {}
    return verify.Held(station=st.code, kind=ev.kind, receipt_no=str(b.get("receipt_no", "")),
                       item_code=str(b.get("item_code", "")), item_name=str(b.get("item_name", "")), at=ev.at,
                       key_id=ev.key, hash=ev.hash, state=app["status"] if app else None,
                       applicant_name=str(applicant.get("name", "")), id_number=str(applicant.get("id_number", "")))


def check(st: Any, text: Any) -> dict[str, Any]:
    """Verify a scanned QR text or a typed code at this station (verify.lookup)."""
    stream = log.up(st.code)
    marks = ",".join("?" * len(DOC_KINDS))

    def by_hash(station: str, hash16: str) -> verify.Held | None:
        if station != st.code:
            return None
        with st.store.lock:
            row = st.store.conn.execute(f"SELECT seq FROM _sync_events WHERE stream = ? AND kind IN ({marks})"
                                        " AND substr(hash, 1, 32) = ?", (stream, *DOC_KINDS, hash16)).fetchone()
            ev = log.get(st.store.conn, stream, row[0]) if row else None
        return _held(st, ev) if ev else None

    def by_code(code: str) -> verify.Held | None:
        with st.store.lock:
            rows = st.store.conn.execute(f"SELECT seq, hash FROM _sync_events WHERE stream = ? AND kind IN ({marks})",
                                         (stream, *DOC_KINDS)).fetchall()
            seq = next((s for s, h in rows if verify.code_of(h) == code), None)
            ev = log.get(st.store.conn, stream, seq) if seq is not None else None
        return _held(st, ev) if ev else None

    return verify.lookup(text, directory(st), by_hash=by_hash, by_code=by_code)
