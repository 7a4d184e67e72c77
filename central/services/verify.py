"""The county's side of document verification (PROTOCOL.md §11): the directory of stations' keys
it publishes down every active station's log (``stations.directory``), and checking any station's
document with its key history and its copy of every station's log. Blocking."""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any

from crypto import canonical
from sync import log, verify
from sync.codes import EVENT_KINDS, REPORT_FILED, code_of, code_rows, codes_of_event
from sync.law import facts
from sync.law.errors import RuleError

if TYPE_CHECKING:
    from central.services.context import Context

logger = logging.getLogger("lastmile.central.verify")
DOC_KINDS = tuple(verify.KINDS)      # the station's intake documents, whose QR texts the pushes carry
META = "stations_directory_hash"


def stations(county: Context, db: Any) -> list[dict[str, Any]]:
    """Every station that has had a key, with its whole key history (revoked ones too, so a
    document signed after a revocation is refused everywhere)."""
    out = []
    for code, name in db.execute("SELECT code, name FROM stations ORDER BY code").fetchall():
        keys = [{"sign_id": k["sign_id"], "sign_key": k["sign_key"], "valid_from": k["valid_from"],
                 "valid_until": k["valid_until"], "revoked_at": k["revoked_at"]}
                for k in county.store.station_key_history(code, db)]
        if keys:
            out.append({"code": code, "name": name, "keys": keys})
    return out


def publish(county: Context, db: Any, *, to: str | None = None) -> int:
    """Send ``stations.directory`` to every active station if the directory changed since the last
    publication (an enrolment, a rotation, a revocation, or the first start after the upgrade), and
    to ``to`` in any case (a station just enrolled). Inside the caller's transaction; returns how
    many stations it was sent to."""
    listed = stations(county, db)
    digest = hashlib.sha256(canonical.dumps(listed)).hexdigest()
    row = db.execute("SELECT value FROM meta WHERE name = ?", (META,)).fetchone()
    targets = county.store.active_station_codes(db) if not row or row[0] != digest else []
    if to is not None and to not in targets:
        targets.append(to)
    if not targets:
        return 0
    body = {"stations": listed, "at": log.utcnow()}
    for code in targets:
        county.record(db, code, facts.Fact(facts.STATIONS_DIRECTORY, body))
    county.store.set_meta(db, META, digest)
    logger.info("stations directory (%d stations) sent to %s", len(listed), ", ".join(targets))
    return len(targets)


def publish_now(county: Context) -> int:
    with county.store.transaction() as db:
        return publish(county, db)


def directory(county: Context, db: Any = None) -> dict[str, dict[str, Any]]:
    """Station code -> entry with its whole key history; ``db``: inside the caller's transaction."""
    if db is not None:
        return {s["code"]: s for s in stations(county, db)}
    with county.store.lock:
        return {s["code"]: s for s in stations(county, county.store.conn)}


def _held(county: Context, station: str, ev: log.Event, db: Any) -> verify.Held:
    case_id = str(ev.body.get("id", "")) if isinstance(ev.body, dict) else ""
    case = county.store.case(case_id, db) if ev.kind != REPORT_FILED else None
    row = db.execute("SELECT name FROM stations WHERE code = ?", (station,)).fetchone()
    return verify.held_of(station, ev, case, case["status"] if case else None, station_name=str(row[0]) if row else "")


def check(county: Context, text: Any) -> dict[str, Any]:
    """Verify a scanned QR text or a typed code at the county (verify.lookup): with its copy of
    every station's log (``up/<station>``) and of its own decisions to it (``down/<station>``).

    Read on this thread's read-only connection (``Store.reading``), never under the store's lock:
    the page is public, and the stations' pushes must neither wait for it nor make it wait."""
    with county.store.reading() as db:

        def held_events(codes: tuple[str, ...], streams: tuple[str, ...] | None) -> list[tuple[log.Event, str]]:
            """(event, document kind) of the held events whose document may have one of ``codes``:
            one indexed query and a read of each (usually one) event; the codes were hashed before."""
            found = [(log.get(db, stream, seq), doc) for stream, seq, doc in code_rows(db, codes, streams)]
            return [(ev, doc) for ev, doc in found if ev is not None]

        def by_hash(station: str, hash16: str) -> verify.Held | None:
            ev = next((ev for ev, _ in held_events(codes_of_event(hash16), (log.up(station), log.down(station)))
                       if ev.hash[:32] == hash16 and ev.kind in EVENT_KINDS), None)
            return _held(county, station, ev, db) if ev else None

        def by_code(code: str) -> verify.Held | None:
            for ev, doc in held_events((code,), None):
                if doc in verify.prints(ev.kind, ev.body):
                    held = _held(county, ev.stream.split("/", 1)[1], ev, db)
                    held.document = doc
                    return held
            return None

        return verify.lookup(text, directory(county, db), by_hash=by_hash, by_code=by_code, county=True)


def take_qr_texts(county: Context, db: Any, station: str, entries: list[tuple[int, str, str]]) -> int:
    """A push's ``qr_texts`` (PROTOCOL.md §6), in the transaction that stored its events: each entry
    (seq, hash of the event pushed at that seq, QR text) is kept in ``document_qr`` if the county
    holds that very event in ``up/<station>`` (same hash), has not set it aside, holds no text for
    it yet, and the text passes ``sync/verify.check_qr`` with the station's key history (the
    directory as it stands after this push's events, a key rotation among them included); any
    other is logged and ignored: a wrong QR text never costs the station its events. Returns how
    many were kept."""
    stream, kept, keys = log.up(station), 0, None
    for seq, event_hash, text in entries:
        ev = log.get(db, stream, seq)
        if ev is None or ev.hash != event_hash:
            logger.info("QR text for %s#%d ignored: the county does not hold that event", stream, seq)
            continue
        if db.execute("SELECT 1 FROM _sync_repairs WHERE stream = ? AND seq = ?", (stream, seq)).fetchone():
            logger.info("QR text for %s#%d ignored: that event is set aside", stream, seq)
            continue
        if db.execute("SELECT 1 FROM document_qr WHERE event_hash = ?", (ev.hash,)).fetchone():
            continue                                    # sent again (a push resent after a cut): kept already
        case_id = ev.body.get("id") if isinstance(ev.body, dict) else None
        keys = keys if keys is not None else directory(county, db)
        try:
            verify.check_qr(text, author=station, event=ev, directory=keys)
        except RuleError as exc:
            logger.warning("QR text for %s#%d not kept: %s", stream, seq, exc.english())
            continue
        db.execute("INSERT INTO document_qr (event_hash, station, case_id, seq, qr_text) VALUES (?, ?, ?, ?, ?)",
                   (ev.hash, station, case_id, seq, text))
        kept += 1
    return kept


def case_codes(county: Context, case: dict[str, Any]) -> dict[str, Any]:
    """The case's station documents (PROTOCOL.md §11): each application event of the case the
    county took (not one set aside: it is not the case's), oldest first, with its verification
    code and the QR text the station printed, as its push gave it beside the event
    (``take_qr_texts``; null if none came: a station older than ``qr_texts``). Each QR text is
    checked again against the station's key history and the event before it is given, so one
    that would not verify is never served. ``qr_text`` and ``verify_code`` at the top: the latest
    document's, as the station's application API gives them."""
    stream = log.up(case["station"])
    marks = ",".join("?" * len(DOC_KINDS))
    with county.store.lock:
        conn = county.store.conn
        rows = conn.execute(f"SELECT seq FROM _sync_events WHERE stream = ? AND kind IN ({marks})"
                            " AND json_extract(body, '$.id') = ? AND seq NOT IN"
                            " (SELECT seq FROM _sync_repairs WHERE stream = ?) ORDER BY seq",
                            (stream, *DOC_KINDS, case["id"], stream)).fetchall()
        events = [ev for ev in (log.get(conn, stream, int(r[0])) for r in rows) if ev is not None]
        held = {h: text for h, text in conn.execute(
            "SELECT event_hash, qr_text FROM document_qr WHERE station = ? AND case_id = ?",
            (case["station"], case["id"])).fetchall()}
        keys = directory(county, conn)
    docs = []
    for ev in events:
        text = held.get(ev.hash)
        if text is not None:
            try:
                verify.check_qr(text, author=case["station"], event=ev, directory=keys)
            except RuleError as exc:
                logger.warning("QR text of %s#%d no longer verifies, not served: %s", stream, ev.seq, exc.english())
                text = None
        docs.append({"kind": ev.kind, "receipt_no": ev.body.get("receipt_no"), "at": ev.at, "seq": ev.seq,
                     "verify_code": code_of(ev.hash), "qr_text": text})
    latest = next((d for d in docs if d["seq"] == int(case["seq"])), None)
    return {"qr_text": latest["qr_text"] if latest else None, "verify_code": latest["verify_code"] if latest else None,
            "station_documents": docs}
