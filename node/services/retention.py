"""The station keeps personal data only as long as it needs it (ARCHITECTURE.md "Retention of
personal data"; the period: sync/law/retention.py, set by the county).

``purge`` removes the personal fields of every case handed out more than N days ago whose every
fact the county acknowledged (and whose scans it confirmed): the row's columns, the bodies of the
case's events in ``_sync_events`` (both streams; each replaced by its redacted stub and listed in
``retention_redacted``), its ratings' text, its idempotency replies, its sealed scans and result
documents on disk. Reports answered more than N days ago likewise. Run by the background sync loop
(after each sync) and by ``lastmile node purge --data DIR``. ``PRAGMA secure_delete`` zeroes the
freed bytes, the file is vacuumed (old copies of rewritten rows go) and the WAL is checkpointed
(truncated) afterwards, so the old bytes leave the files.

``verify_chain`` checks both streams as they are stored: every ``prev`` links to the hash before
it, every signature verifies over the recorded hash, every body matches its hash except a redacted
one. Blocking: call from threads.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
from typing import TYPE_CHECKING, Any

from crypto import canonical
from sync import chain, log
from sync.law import facts, reports, retention
from sync.log import Event

from node.services.ratings import own_sign_keys
from node.store import Store, create_retention
from sync import exchange

if TYPE_CHECKING:
    from node.services.desk import Desk

logger = logging.getLogger("lastmile.node")
META = "retention_days"
#: the columns of a purged application that held personal data, and what they become
APP_COLUMNS = {"applicant_name": "", "id_number": "", "phone": "", "collector": None, "decision_note": "",
               "correction": None}
REPORT_COLUMNS = {"citizen_name": "", "answer": ""}


def retention_set(store: Store, db: sqlite3.Connection, ev: Event) -> None:
    """The county's ``retention.set``: the period the next purge uses."""
    days = facts.SPECS[retention.RETENTION_SET].validate(ev.body)
    store.set_meta(db, META, str(days))


def days(store: Store) -> int:
    raw = store.meta(META)
    return int(raw) if raw and raw.isdigit() else retention.DEFAULT_DAYS


def _when(text: Any) -> dt.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def is_purged(store: Store, record_id: str) -> bool:
    with store.lock:
        create_retention(store.conn)
        return store.conn.execute("SELECT 1 FROM retention_purged WHERE id = ?", (record_id,)).fetchone() is not None


#: the ``id`` of an event body; NULL for a body that is not JSON (edited into junk), never an error
_ID = "CASE WHEN json_valid(body) THEN json_extract(body, '$.id') END"


def _events_naming(db: sqlite3.Connection, ids: list[str]) -> dict[str, list[tuple[str, int, str, str]]]:
    """Record id -> its events (stream, seq, kind, body), in one pass over the log."""
    out: dict[str, list[tuple[str, int, str, str]]] = {i: [] for i in ids}
    if not ids:
        return out
    for stream, seq, kind, raw, record_id in db.execute(
            f"SELECT stream, seq, kind, body, {_ID} FROM _sync_events WHERE {_ID} IN (SELECT value FROM json_each(?))",
            (json.dumps(ids),)):
        out[record_id].append((stream, int(seq), kind, raw))
    return out


def _redact(db: sqlite3.Connection, events: list[tuple[str, int, str, str]], now: str) -> int:
    """Replace these event bodies by their redacted stubs and list them in ``retention_redacted``."""
    n = 0
    for stream, seq, _kind, raw in events:
        body = json.loads(raw)
        if not isinstance(body, dict) or retention.is_redacted(body):
            continue
        db.execute("UPDATE _sync_events SET body = ? WHERE stream = ? AND seq = ?",
                   (canonical.dumps(retention.redact(body)).decode(), stream, seq))
        db.execute("INSERT OR IGNORE INTO retention_redacted (stream, seq, at) VALUES (?, ?, ?)", (stream, seq, now))
        n += 1
    return n


def _still_used(db: sqlite3.Connection, down: str, name: str) -> bool:
    """Scans and result documents are stored by digest: the same bytes may belong to a case that is
    kept (a form every citizen gets), whose file must stay."""
    folder, sha = name.split("/")[0], name.split("/")[1].split(".")[0]
    if folder == "blobs":
        return db.execute("SELECT 1 FROM scans WHERE sha256 = ? AND app_id NOT IN (SELECT id FROM retention_purged)",
                          (sha,)).fetchone() is not None
    return db.execute("SELECT 1 FROM _sync_events WHERE stream = ? AND kind = ? AND instr(body, ?) > 0"
                      " AND instr(body, '\"_redacted\":') = 0", (down, facts.CASE_DECIDED, sha)).fetchone() is not None


def _late_events(db: sqlite3.Connection, up: str, acked: int, now: str) -> int:
    """Events naming a case or report purged earlier that came after its purge (a rating given
    after it, the county's answer to that rating): redacted once the county holds them, and the
    rating's text blanked with them."""
    rows = db.execute(
        "SELECT e.stream, e.seq, e.body, p.id FROM _sync_events e JOIN retention_purged p"
        " ON p.id = CASE WHEN json_valid(e.body) THEN json_extract(e.body, '$.id') END"
        " WHERE (e.stream != ? OR e.seq <= ?)"
        " AND (CASE WHEN json_valid(e.body) THEN json_extract(e.body, '$._redacted') END) IS NULL", (up, acked)).fetchall()
    for stream, seq, raw, record_id in rows:
        db.execute("UPDATE _sync_events SET body = ? WHERE stream = ? AND seq = ?",
                   (canonical.dumps(retention.redact(json.loads(raw))).decode(), stream, seq))
        db.execute("INSERT OR IGNORE INTO retention_redacted (stream, seq, at) VALUES (?, ?, ?)", (stream, seq, now))
        db.execute("UPDATE ratings SET comment = '', answer = CASE WHEN answer IS NULL THEN NULL ELSE '' END"
                   " WHERE id = ?", (record_id,))
    return len(rows)


def _in_flight(db: sqlite3.Connection, record_id: str) -> bool:
    """An event of the record set aside while the station heals (``_sync_displaced``): it is still to
    be re-appended and sent with its body as signed, so the record is not purged yet."""
    return db.execute("SELECT 1 FROM _sync_displaced WHERE CASE WHEN json_valid(event)"
                      " THEN json_extract(event, '$.body.id') END = ?", (record_id,)).fetchone() is not None


def _forks(db: sqlite3.Connection) -> int:
    """Copies of events kept as evidence of a fork (``_sync_forks``: an event that did not fit the
    log) that name a purged case or report lose their personal fields like the log's own copies."""
    rows = db.execute(
        "SELECT rowid, event FROM _sync_forks WHERE CASE WHEN json_valid(event) THEN"
        " json_extract(event, '$.body.id') END IN (SELECT id FROM retention_purged)"
        " AND json_extract(event, '$.body._redacted') IS NULL").fetchall()
    for rowid, raw in rows:
        event = json.loads(raw)
        event["body"] = retention.redact(event.get("body"))
        db.execute("UPDATE _sync_forks SET event = ? WHERE rowid = ?", (canonical.dumps(event).decode(), rowid))
    return len(rows)


def purge(st: Desk, now: dt.datetime | None = None) -> dict[str, Any]:
    """Remove the personal data of every case and report past the retention period that the county
    holds in full; returns what was done. ``now`` (default: the real time) is the day the period is
    counted to: a test hook, and ``lastmile node purge --as-of``."""
    now = now or dt.datetime.now(dt.timezone.utc)
    period = days(st.store)
    cutoff = now - dt.timedelta(days=period)
    up, down = log.up(st.code), log.down(st.code)
    stamp = log.utcnow()
    done: dict[str, Any] = {"retention_days": period, "cases": [], "reports": [], "events": 0, "files": 0}
    files: list[str] = []
    with st.store.lock:
        st.store.conn.execute("PRAGMA secure_delete = ON")   # freed bytes are zeroed, not left in free pages
    with st.store.transaction() as db:
        create_retention(db)
        acked = log.acked(db, up)
        due = [(app_id, receipt_no) for app_id, receipt_no, handed_out_at in db.execute(
            "SELECT id, receipt_no, handed_out_at FROM applications WHERE status = ?"
            " AND id NOT IN (SELECT id FROM retention_purged)", (facts.Status.HANDED_OUT,)).fetchall()
            if (when := _when(handed_out_at)) is not None and when <= cutoff and not db.execute(
                "SELECT 1 FROM scans WHERE app_id = ? AND done = 0", (app_id,)).fetchone()]
        naming = _events_naming(db, [app_id for app_id, _ in due])
        for app_id, receipt_no in due:
            events = naming[app_id]
            if any(stream == up and seq > acked for stream, seq, _k, _b in events) or _in_flight(db, app_id):
                continue            # the county does not hold every fact of the case yet: the next purge
            row = db.execute("SELECT body FROM applications WHERE id = ?", (app_id,)).fetchone()
            stub = retention.redact(json.loads(row[0]) if row and row[0] else {})
            st.store.update_application(db, app_id, body=canonical.dumps(stub).decode(), **APP_COLUMNS)
            for sha, in db.execute("SELECT sha256 FROM scans WHERE app_id = ?", (app_id,)).fetchall():
                files.append(f"blobs/{sha}.sealed")
            db.execute("UPDATE scans SET name = '' WHERE app_id = ?", (app_id,))
            for stream, _seq, kind, raw in events:
                if stream == down and kind == facts.CASE_DECIDED:
                    for a in (json.loads(raw).get("attachments") or []):
                        if isinstance(a, dict) and isinstance(a.get("sha256"), str) and a["sha256"].isalnum():
                            files.append(f"docs/{a['sha256']}.sealed")
            db.execute("UPDATE ratings SET comment = '', answer = CASE WHEN answer IS NULL THEN NULL ELSE '' END"
                       " WHERE id = ?", (app_id,))
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'idempotency_keys'").fetchone():
                db.execute("DELETE FROM idempotency_keys WHERE app_id = ?", (app_id,))
            done["events"] += _redact(db, events, stamp)
            db.execute("INSERT INTO retention_purged (id, what, receipt_no, at) VALUES (?, 'application', ?, ?)",
                       (app_id, receipt_no, stamp))
            done["cases"].append(receipt_no)
        files = [f for f in dict.fromkeys(files) if not _still_used(db, down, f)]
        done["events"] += _late_events(db, up, acked, stamp)
        answered = [(report_id, receipt_no) for report_id, receipt_no, answered_at, seq in db.execute(
            "SELECT id, receipt_no, answered_at, seq FROM reports WHERE status = ?"
            " AND id NOT IN (SELECT id FROM retention_purged)", (reports.ANSWERED_STATE,)).fetchall()
            if (when := _when(answered_at)) is not None and when <= cutoff and (seq or 0) <= acked]
        naming = _events_naming(db, [report_id for report_id, _ in answered])
        for report_id, receipt_no in answered:
            if _in_flight(db, report_id):
                continue
            row = db.execute("SELECT body FROM reports WHERE id = ?", (report_id,)).fetchone()
            stub = retention.redact(json.loads(row[0]) if row and row[0] else {})
            st.store.update_report(db, report_id, body=canonical.dumps(stub).decode(), **REPORT_COLUMNS)
            done["events"] += _redact(db, naming[report_id], stamp)
            db.execute("INSERT INTO retention_purged (id, what, receipt_no, at) VALUES (?, 'report', ?, ?)",
                       (report_id, receipt_no, stamp))
            done["reports"].append(receipt_no)
        done["events"] += _forks(db)
    for name in files:          # after the commit: a crash before it leaves the files, not a gap
        path = st.settings.data / name
        try:
            path.unlink()
            done["files"] += 1
        except FileNotFoundError:
            pass
    if done["cases"] or done["reports"] or done["events"]:
        with st.store.lock:
            # Rows rewritten before secure_delete was on may have left old copies in free space:
            # VACUUM rewrites the file without them, and the truncating checkpoint empties the WAL.
            st.store.conn.execute("VACUUM")
            st.store.truncate_wal()
        logger.info("retention (%d days): personal data removed from %d cases and %d reports (%d events, %d files)",
                    period, len(done["cases"]), len(done["reports"]), done["events"], done["files"])
    return done


def verify_chain(st: Desk) -> dict[str, Any]:
    """Both streams as stored (sync/chain.py ``walk``): none missing, links, signatures over the
    recorded hashes, and every body that is not a redacted stub of this station's purge against its
    hash. ``problems`` lists what fails, in words. Read on a read-only connection (``Store.reading``):
    the walk holds nobody up."""
    out: dict[str, Any] = {"events": 0, "redacted": 0, "problems": []}
    with st.store.reading() as db:
        redacted = {(r[0], int(r[1])) for r in db.execute("SELECT stream, seq FROM retention_redacted").fetchall()}
        keys = {log.up(st.code): own_sign_keys(st, db),
                log.down(st.code): exchange.county_sign_keys(db, st.enrolled_county)}
        for stream, known in keys.items():
            walked = chain.walk(stream, chain.rows(db, stream), known,
                                redacted_ok=lambda seq, stream=stream: (stream, seq) in redacted)
            out["events"] += walked.events
            out["redacted"] += walked.redacted
            out["problems"] += [chain.describe(p) for p in walked.problems]
    return out
