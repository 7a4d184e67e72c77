"""The only module of central that speaks SQL: every query is here, in SQL that SQLite and
PostgreSQL both accept (``?`` placeholders are translated for psycopg by the connection).

One connection and one lock per process; each write is one transaction. Processing facts and
the downstream events that carry them to stations are written in the same transaction.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterator

from templates import throttle
from templates.readers import Readers
from crypto.keys import private_dir, private_file
from sync import inbox, schema

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS stations (
        code TEXT PRIMARY KEY, name TEXT NOT NULL, level TEXT NOT NULL, status TEXT NOT NULL,
        sign_key TEXT, enc_key TEXT, enroll_code_hash TEXT, enroll_expires TEXT, enrolled_at TEXT,
        last_contact TEXT, clock_skew_s INTEGER, up_waiting INTEGER, created_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS users (
        username TEXT PRIMARY KEY, name TEXT NOT NULL, password TEXT NOT NULL, token_hash TEXT NOT NULL,
        role TEXT NOT NULL, department TEXT, created_at TEXT NOT NULL, session_key TEXT)""",
    """CREATE TABLE IF NOT EXISTS catalog_versions (
        version INTEGER PRIMARY KEY, published_at TEXT NOT NULL, body TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS cases (
        id TEXT PRIMARY KEY, station TEXT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,
        receipt_no TEXT NOT NULL, item_code TEXT NOT NULL, item_name TEXT NOT NULL, department TEXT NOT NULL,
        applicant_name TEXT NOT NULL, id_number TEXT NOT NULL, accepted_at TEXT NOT NULL, promised_date TEXT,
        received_at TEXT NOT NULL, decision TEXT, decision_note TEXT, decided_by TEXT, decided_at TEXT,
        handed_out_at TEXT)""",
    """CREATE TABLE IF NOT EXISTS scans (
        case_id TEXT NOT NULL, sha256 TEXT NOT NULL, station TEXT NOT NULL, material TEXT NOT NULL,
        name TEXT NOT NULL, mime TEXT NOT NULL, size BIGINT NOT NULL, received_at TEXT,
        PRIMARY KEY (case_id, sha256))""",
    # Decisions a station gave back after a county restore, waiting for their case to come back too.
    """CREATE TABLE IF NOT EXISTS recovery_pending (
        case_id TEXT PRIMARY KEY, station TEXT NOT NULL, body TEXT NOT NULL)""",
    # Every key a station ever had (enrolment, replacement PC, rotation), so its old events still
    # verify: from_seq..until_seq is the part of up/<station> a key signs; revoked_at is when the
    # county revoked it (events stored before that stay valid).
    """CREATE TABLE IF NOT EXISTS station_keys (
        station TEXT NOT NULL, sign_id TEXT NOT NULL, sign_key TEXT NOT NULL, enc_id TEXT NOT NULL,
        enc_key TEXT NOT NULL, reason TEXT NOT NULL, valid_from TEXT NOT NULL, valid_until TEXT,
        revoked_at TEXT, from_seq BIGINT NOT NULL, until_seq BIGINT, PRIMARY KEY (station, sign_id))""",
    # Receipt numbers a station restored from a backup will never issue (station.receipts_voided).
    """CREATE TABLE IF NOT EXISTS voided_receipts (
        station TEXT NOT NULL, day TEXT NOT NULL, first_no INTEGER NOT NULL, last_no INTEGER NOT NULL,
        reason TEXT NOT NULL, at TEXT NOT NULL, PRIMARY KEY (station, day, first_no))""",
    # 办不成事 reports from stations (sync/law/reports.py): who took each (首问负责) and the answer.
    """CREATE TABLE IF NOT EXISTS reports (
        id TEXT PRIMARY KEY, station TEXT NOT NULL, seq BIGINT NOT NULL, receipt_no TEXT NOT NULL,
        status TEXT NOT NULL, body TEXT NOT NULL, filed_at TEXT NOT NULL, received_at TEXT NOT NULL,
        taken_by TEXT, taken_department TEXT, taken_at TEXT, answer TEXT, answered_by TEXT, answered_at TEXT)""",
    """CREATE TABLE IF NOT EXISTS document_qr (
        event_hash TEXT PRIMARY KEY, station TEXT NOT NULL, case_id TEXT NOT NULL, seq BIGINT NOT NULL,
        qr_text TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS request_nonces (nonce TEXT PRIMARY KEY, expires BIGINT NOT NULL)""",
    # The head of each stream the last log self-check found whole (central/services/selfcheck.py): the next
    # check must still find the stream reaching it, with the same hash (a deleted last event).
    """CREATE TABLE IF NOT EXISTS selfcheck_heads (
        stream TEXT PRIMARY KEY, seq BIGINT NOT NULL, hash TEXT NOT NULL, at TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS scans_by_hash ON scans (station, sha256)""",
    """CREATE INDEX IF NOT EXISTS cases_queue ON cases (department, status)""",
    """CREATE INDEX IF NOT EXISTS cases_station ON cases (station, status)""",
)

CASE_COLS = ("id", "station", "seq", "kind", "status", "receipt_no", "item_code", "item_name", "department",
             "applicant_name", "id_number", "accepted_at", "promised_date", "received_at", "decision",
             "decision_note", "decided_by", "decided_at", "handed_out_at",
             "time_limit_days", "suspensions", "correction", "supplement", "collector")
#: The user name of whoever took a report (首问负责 is checked by it; ``taken_by`` is the display name the
#: fact carries). Rows taken before it have NULL (central/services/reports.py ``owns``).
LATER_REPORT_COLS = {"taken_username": "TEXT"}
#: Columns added after the first release (a database made before them gets them at start).
LATER_CASE_COLS = {"time_limit_days": "INTEGER", "suspensions": "TEXT", "correction": "TEXT", "supplement": "TEXT",
                   "collector": "TEXT"}
STATION_COLS = ("code", "name", "level", "status", "sign_key", "enc_key", "enroll_code_hash", "enroll_expires",
                "enrolled_at", "last_contact", "clock_skew_s", "up_waiting", "created_at",
                "down_have", "down_applied", "catalog_applied", "locked")
#: Columns added after the first release: what the station said in its last push it holds of
#: down/<station> and has applied of it and of the catalogue, and whether it was locked (PROTOCOL.md §6 ``applied``)
LATER_STATION_COLS = {"down_have": "INTEGER", "down_applied": "INTEGER", "catalog_applied": "INTEGER",
                      "locked": "INTEGER"}


# ratings and their follow-ups (central/services/ratings.py) ----------------------------------------
RATINGS_SCHEMA = """CREATE TABLE IF NOT EXISTS ratings (
    case_id TEXT PRIMARY KEY, station TEXT NOT NULL, score INTEGER, comment TEXT, by TEXT, at TEXT, seq BIGINT,
    received_at TEXT, answer TEXT, answered_by TEXT, answered_department TEXT, answered_at TEXT)"""
RATING_COLS = ("case_id", "station", "score", "comment", "by", "at", "seq", "received_at", "answer", "answered_by",
        "answered_department", "answered_at")


def create_ratings(db: Any) -> None:
    db.execute(RATINGS_SCHEMA)


def held_rating(db: Any, case_id: str) -> dict[str, Any] | None:
    row = db.execute(f"SELECT {', '.join(RATING_COLS)} FROM ratings WHERE case_id = ?", (case_id,)).fetchone()
    return dict(zip(RATING_COLS, row)) if row else None


class Store:
    def __init__(self, path: Path) -> None:
        private_dir(path.parent)        # DATA: 0700, whatever the umask
        private_file(path)              # 0600 before SQLite opens it; its -wal and -shm get the same mode
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5)
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=5000"):
            self.conn.execute(f"PRAGMA {pragma}")
        self.lock = threading.RLock()
        self.readers = Readers(path)        # reads beside the writer (templates/readers.py)
        with self.transaction() as db:
            schema.create(db)
            for sql in SCHEMA:
                db.execute(sql)
            self._upgrade_users(db)
            self._upgrade_keys(db)
            have = [r[1] for r in db.execute("PRAGMA table_info(cases)").fetchall()]
            for column, kind in LATER_CASE_COLS.items():
                if column not in have:
                    db.execute(f"ALTER TABLE cases ADD COLUMN {column} {kind}")
            have = [r[1] for r in db.execute("PRAGMA table_info(reports)").fetchall()]
            for column, kind in LATER_REPORT_COLS.items():
                if column not in have:
                    db.execute(f"ALTER TABLE reports ADD COLUMN {column} {kind}")
            have = [r[1] for r in db.execute("PRAGMA table_info(stations)").fetchall()]
            for column, kind in LATER_STATION_COLS.items():
                if column not in have:
                    db.execute(f"ALTER TABLE stations ADD COLUMN {column} {kind}")
            create_ratings(db)          # ratings and their follow-ups (central/services/ratings.py)
            throttle.create(db)         # templates/throttle.py: password checks counted per name and address
        for side in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if side.exists():           # made by an older version, say
                side.chmod(0o600)

    def close(self) -> None:
        self.readers.close()
        with self.lock:         # never while another thread is inside a statement (node/store.py close)
            self.conn.close()

    def reading(self) -> contextlib.AbstractContextManager[Any]:
        """A read-only connection of this thread: the last committed state, without the store's lock
        (templates/readers.py). For the public verify page and the log self-check."""
        return self.readers.read()

    def use_nonce(self, nonce: str, expires: int, now: float) -> bool:
        """Record a signed request's nonce until it expires; False if it was seen before. In the
        database, not in memory, so a request seen before a restart (or by another central
        process) is still refused after it; expired nonces are dropped as new ones come."""
        with self.transaction() as db:
            db.execute("DELETE FROM request_nonces WHERE expires < ?", (int(now),))
            cur = db.execute("INSERT INTO request_nonces (nonce, expires) VALUES (?, ?) ON CONFLICT (nonce) DO NOTHING",
                             (nonce, int(expires)))
            return cur.rowcount == 1

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            return list(self.conn.execute(sql, params).fetchall())

    # meta --------------------------------------------------------------------
    def meta(self, name: str) -> str | None:
        rows = self._all("SELECT value FROM meta WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, db: Any, name: str, value: str) -> None:
        db.execute("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                   (name, value))

    # stations ----------------------------------------------------------------
    def station(self, code: str) -> dict[str, Any] | None:
        rows = self._all(f"SELECT {', '.join(STATION_COLS)} FROM stations WHERE code = ?", (code,))
        return dict(zip(STATION_COLS, rows[0])) if rows else None

    def stations(self) -> list[dict[str, Any]]:
        return [dict(zip(STATION_COLS, r)) for r in
                self._all(f"SELECT {', '.join(STATION_COLS)} FROM stations ORDER BY code")]

    def active_station_codes(self, db: Any) -> list[str]:
        return [r[0] for r in db.execute("SELECT code FROM stations WHERE status = 'active' ORDER BY code").fetchall()]

    def insert_station(self, db: Any, row: dict[str, Any]) -> None:
        cols = ", ".join(row)
        db.execute(f"INSERT INTO stations ({cols}) VALUES ({', '.join('?' for _ in row)})", tuple(row.values()))

    def update_station(self, db: Any, code: str, **values: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in values)
        db.execute(f"UPDATE stations SET {sets} WHERE code = ?", (*values.values(), code))

    # key history ---------------------------------------------------------------
    KEY_COLS = ("station", "sign_id", "sign_key", "enc_id", "enc_key", "reason", "valid_from", "valid_until",
                "revoked_at", "from_seq", "until_seq")

    def _upgrade_keys(self, db: Any) -> None:
        """Databases made before the key history: put each station's one key on record."""
        from crypto.keys import key_id, unb64
        for code, sign, enc, at in db.execute(
                "SELECT code, sign_key, enc_key, coalesce(enrolled_at, created_at) FROM stations s WHERE sign_key"
                " IS NOT NULL AND NOT EXISTS (SELECT 1 FROM station_keys k WHERE k.station = s.code)").fetchall():
            self.add_station_key(db, code, sign, enc, key_id(unb64(sign)), key_id(unb64(enc)), "enrolled", at, 1)

    def add_station_key(self, db: Any, station: str, sign: str, enc: str, sign_id: str, enc_id: str,
                        reason: str, at: str, from_seq: int) -> None:
        db.execute("INSERT INTO station_keys (station, sign_id, sign_key, enc_id, enc_key, reason, valid_from, from_seq)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (station, sign_id) DO UPDATE SET"
                   " valid_until = NULL, until_seq = NULL, revoked_at = NULL",
                   (station, sign_id, sign, enc_id, enc, reason, at, from_seq))

    def retire_station_keys(self, db: Any, station: str, at: str, until_seq: int, keep: str | None = None) -> None:
        """The station's keys in use end here (a replacement or a rotation); they stay on record."""
        db.execute("UPDATE station_keys SET valid_until = ?, until_seq = ? WHERE station = ? AND valid_until IS NULL"
                   " AND sign_id IS NOT ?", (at, until_seq, station, keep))

    def revoke_station_keys(self, db: Any, station: str, at: str) -> None:
        db.execute("UPDATE station_keys SET revoked_at = ? WHERE station = ? AND revoked_at IS NULL", (at, station))

    def station_key_history(self, station: str, db: Any | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT {', '.join(self.KEY_COLS)} FROM station_keys WHERE station = ? ORDER BY from_seq, valid_from"
        rows = db.execute(sql, (station,)).fetchall() if db is not None else self._all(sql, (station,))
        return [dict(zip(self.KEY_COLS, r)) for r in rows]

    def stored_at(self, stream: str, seq: int) -> str | None:
        rows = self._all("SELECT stored_at FROM _sync_events WHERE stream = ? AND seq = ?", (stream, seq))
        return str(rows[0][0]) if rows else None

    # the log self-check (central/services/selfcheck.py), on a reader's connection ``db`` -------------------
    def stream_names(self, db: Any) -> list[str]:
        """Every stream held, and every stream an earlier self-check saw (one emptied since is one to report)."""
        return [r[0] for r in db.execute("SELECT DISTINCT stream FROM _sync_events UNION"
                                         " SELECT stream FROM selfcheck_heads ORDER BY 1").fetchall()]

    def selfcheck_heads(self, db: Any) -> dict[str, tuple[int, str, str]]:
        """stream -> (seq, hash, at) of the last check that found it whole."""
        return {r[0]: (int(r[1]), str(r[2]), str(r[3]))
                for r in db.execute("SELECT stream, seq, hash, at FROM selfcheck_heads").fetchall()}

    def last_recovery(self, db: Any) -> dict[str, str]:
        """stream -> when the county last took records back into it (a restore: its tail may be rewritten)."""
        return {r[0]: str(r[1]) for r in db.execute("SELECT stream, max(at) FROM _sync_recoveries GROUP BY stream")}

    def save_selfcheck(self, db: Any, heads: list[tuple[str, int, str, str]], result: str) -> None:
        for stream, seq, h, at in heads:
            db.execute("INSERT INTO selfcheck_heads (stream, seq, hash, at) VALUES (?, ?, ?, ?) ON CONFLICT (stream)"
                       " DO UPDATE SET seq = excluded.seq, hash = excluded.hash, at = excluded.at", (stream, seq, h, at))
        self.set_meta(db, "selfcheck", result)

    def sync_problems(self) -> list[dict[str, Any]]:
        """Events set aside for repair and forks, newest first: what a supervisor must look at."""
        with self.lock:
            found = [{**r, "kind": "repair"} for r in inbox.repairs(self.conn)] + \
                    [{**f, "kind": "fork", "at": f["seen_at"]} for f in inbox.forks(self.conn)]
        return sorted(found, key=lambda p: p["at"], reverse=True)

    def incomplete_scans_by_station(self) -> dict[str, int]:
        rows = self._all("SELECT station, count(DISTINCT case_id) FROM scans WHERE received_at IS NULL GROUP BY station")
        return {r[0]: int(r[1]) for r in rows}

    def station_sync_counts(self) -> dict[str, dict[str, int]]:
        rows = self._all("""SELECT e.stream, max(e.seq), coalesce(max(c.acked), 0) FROM _sync_events e
                            LEFT JOIN _sync_cursors c ON c.stream = e.stream GROUP BY e.stream""")
        return {r[0]: {"high": int(r[1]), "acked": int(r[2])} for r in rows}

    # users -------------------------------------------------------------------
    USER_COLS = ("username", "name", "password", "role", "department", "session_key")

    def _upgrade_users(self, db: Any) -> None:
        """Databases made before sessions could be ended lack ``session_key``: add it."""
        cols = [r[1] for r in db.execute("PRAGMA table_info(users)").fetchall()]
        if "session_key" not in cols:
            db.execute("ALTER TABLE users ADD COLUMN session_key TEXT")

    def upsert_user(self, db: Any, row: dict[str, Any]) -> None:
        db.execute("DELETE FROM users WHERE username = ?", (row["username"],))
        db.execute("INSERT INTO users (username, name, password, token_hash, role, department, created_at, session_key)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (row["username"], row["name"], row["password"], row["token_hash"],
                                                        row["role"], row["department"], row["created_at"],
                                                        row["session_key"]))

    def user(self, column: str, value: str) -> dict[str, Any] | None:
        assert column in ("username", "token_hash")
        rows = self._all(f"SELECT {', '.join(self.USER_COLS)} FROM users WHERE {column} = ?", (value,))
        return dict(zip(self.USER_COLS, rows[0])) if rows else None

    def update_user(self, db: Any, username: str, **values: Any) -> bool:
        assert set(values) <= {"password", "session_key"}
        sets = ", ".join(f"{k} = ?" for k in values)
        return bool(db.execute(f"UPDATE users SET {sets} WHERE username = ?", (*values.values(), username)).rowcount)

    # catalogue ---------------------------------------------------------------
    def insert_catalog(self, db: Any, version: int, published_at: str, body: str) -> None:
        db.execute("INSERT INTO catalog_versions (version, published_at, body) VALUES (?, ?, ?)",
                   (version, published_at, body))

    def restore_catalog(self, db: Any, version: int, published_at: str, body: str) -> None:
        """Put back a catalogue version a station gave back after a restore (no-op if held)."""
        db.execute("INSERT INTO catalog_versions (version, published_at, body) VALUES (?, ?, ?)"
                   " ON CONFLICT (version) DO NOTHING", (version, published_at, body))

    # recovery ----------------------------------------------------------------
    def add_pending_decision(self, db: Any, station: str, case_id: str, body: str) -> None:
        db.execute("INSERT INTO recovery_pending (case_id, station, body) VALUES (?, ?, ?)"
                   " ON CONFLICT (case_id) DO UPDATE SET body = excluded.body", (case_id, station, body))

    def take_pending_decision(self, db: Any, case_id: str) -> tuple[str, str] | None:
        """(station whose stream gave it back, body) of a decision waiting for its case, taken out."""
        row = db.execute("SELECT station, body FROM recovery_pending WHERE case_id = ?", (case_id,)).fetchone()
        if row:
            db.execute("DELETE FROM recovery_pending WHERE case_id = ?", (case_id,))
        return (str(row[0]), str(row[1])) if row else None

    def recoveries(self) -> list[dict[str, Any]]:
        """What stations gave back or re-sequenced after a restore or a replacement, newest first."""
        cols = ("stream", "at", "what", "first", "last")
        return [dict(zip(cols, r)) for r in
                self._all(f"SELECT {', '.join(cols)} FROM _sync_recoveries ORDER BY at DESC LIMIT 100")]

    def latest_catalog(self, db: Any | None = None) -> tuple[int, str] | None:
        sql = "SELECT version, body FROM catalog_versions ORDER BY version DESC LIMIT 1"
        rows = list((db or self.conn).execute(sql).fetchall()) if db else self._all(sql)
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    def catalog_version(self, db: Any, version: int) -> str | None:
        """The body (JSON) of one published catalogue version, or None if it was never published."""
        row = db.execute("SELECT body FROM catalog_versions WHERE version = ?", (version,)).fetchone()
        return str(row[0]) if row else None

    def void_receipts(self, db: Any, station: str, day: str, first: int, last: int, reason: str, at: str) -> None:
        db.execute("INSERT INTO voided_receipts (station, day, first_no, last_no, reason, at) VALUES (?, ?, ?, ?, ?, ?)"
                   " ON CONFLICT (station, day, first_no) DO NOTHING", (station, day, first, last, reason, at))

    def voided_receipts(self) -> list[dict[str, Any]]:
        cols = ("station", "day", "first_no", "last_no", "reason", "at")
        return [dict(zip(cols, r)) for r in self._all(f"SELECT {', '.join(cols)} FROM voided_receipts"
                                                      " ORDER BY day DESC, station")]

    # 办不成事 reports ----------------------------------------------------------
    REPORT_COLS = ("id", "station", "seq", "receipt_no", "status", "body", "filed_at", "received_at", "taken_by",
                   "taken_department", "taken_at", "answer", "answered_by", "answered_at", "taken_username")

    def insert_report(self, db: Any, row: dict[str, Any]) -> None:
        cols = [c for c in self.REPORT_COLS if c in row]
        db.execute(f"INSERT INTO reports ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
                   tuple(row[c] for c in cols))

    def update_report(self, db: Any, report_id: str, **values: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in values)
        db.execute(f"UPDATE reports SET {sets} WHERE id = ?", (*values.values(), report_id))

    def report(self, report_id: str, db: Any | None = None) -> dict[str, Any] | None:
        sql = f"SELECT {', '.join(self.REPORT_COLS)} FROM reports WHERE id = ?"
        rows = db.execute(sql, (report_id,)).fetchall() if db is not None else self._all(sql, (report_id,))
        return dict(zip(self.REPORT_COLS, rows[0])) if rows else None

    def reports(self, limit: int = 500) -> list[dict[str, Any]]:
        """Open reports first (oldest first), then answered ones, newest first."""
        rows = self._all(f"SELECT {', '.join(self.REPORT_COLS)} FROM reports ORDER BY status = 'answered',"
                         f" CASE WHEN status = 'answered' THEN '' ELSE filed_at END, filed_at DESC LIMIT ?", (limit,))
        return [dict(zip(self.REPORT_COLS, r)) for r in rows]

    # cases -------------------------------------------------------------------
    def insert_case(self, db: Any, row: dict[str, Any]) -> None:
        """A new case, or a case completed after the station's correction notice: the columns given
        replace the earlier row's."""
        cols = [c for c in CASE_COLS if c in row]
        db.execute(f"INSERT INTO cases ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"
                   f" ON CONFLICT (id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in cols if c != 'id')}",
                   tuple(row[c] for c in cols))

    def update_case(self, db: Any, case_id: str, **values: Any) -> bool:
        sets = ", ".join(f"{k} = ?" for k in values)
        cur = db.execute(f"UPDATE cases SET {sets} WHERE id = ?", (*values.values(), case_id))
        return bool(cur.rowcount == 1)

    def case(self, case_id: str, db: Any | None = None) -> dict[str, Any] | None:
        sql = f"SELECT {', '.join(CASE_COLS)} FROM cases WHERE id = ?"
        rows = db.execute(sql, (case_id,)).fetchall() if db is not None else self._all(sql, (case_id,))
        return dict(zip(CASE_COLS, rows[0])) if rows else None

    def cases(self, *, department: str | None = None, station: str | None = None, status: str | None = None,
              limit: int = 200) -> list[dict[str, Any]]:
        """The first ``limit`` matching cases, oldest received first (for tools and tests)."""
        return self.cases_page(department=department, station=station, status=status, limit=limit)[0]

    def cases_page(self, *, department: str | None = None, departments: frozenset[str] | None = None,
                   station: str | None = None, status: str | None = None, limit: int = 50,
                   offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """One page of the matching cases, oldest received first, and how many match in all.

        ``departments`` (when not None) narrows to those departments: what a clerk may read.
        The order (received_at, station, seq) is total, so pages never overlap or skip."""
        where, params = [], []
        for col, val in (("department", department), ("station", station), ("status", status)):
            if val:
                where.append(f"{col} = ?")
                params.append(val)
        if departments is not None:
            where.append(f"department IN ({', '.join('?' for _ in departments) or 'NULL'})")
            params.extend(sorted(departments))
        cond = " WHERE " + " AND ".join(where) if where else ""
        with self.lock:
            total = int(self.conn.execute(f"SELECT count(*) FROM cases{cond}", params).fetchone()[0])
            rows = self.conn.execute(f"SELECT {', '.join(CASE_COLS)} FROM cases{cond}"
                                     " ORDER BY received_at, station, seq LIMIT ? OFFSET ?",
                                     (*params, limit, offset)).fetchall()
        return [dict(zip(CASE_COLS, r)) for r in rows], total

    # scans -------------------------------------------------------------------
    def insert_scan(self, db: Any, row: dict[str, Any]) -> None:
        db.execute("INSERT INTO scans (case_id, sha256, station, material, name, mime, size, received_at)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, NULL) ON CONFLICT (case_id, sha256) DO NOTHING",
                   (row["case_id"], row["sha256"], row["station"], row["material"], row["name"], row["mime"],
                    row["size"]))

    def scan_size(self, station: str, sha: str) -> int | None:
        rows = self._all("SELECT max(size) FROM scans WHERE station = ? AND sha256 = ?", (station, sha))
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def mark_scan_received(self, db: Any, station: str, sha: str, at: str) -> None:
        db.execute("UPDATE scans SET received_at = ? WHERE station = ? AND sha256 = ? AND received_at IS NULL",
                   (at, station, sha))

    def scans_of(self, case_id: str) -> list[dict[str, Any]]:
        cols = ("sha256", "material", "name", "mime", "size", "received_at")
        rows = self._all(f"SELECT {', '.join(cols)} FROM scans WHERE case_id = ? ORDER BY material, name", (case_id,))
        return [dict(zip(cols, r)) for r in rows]
