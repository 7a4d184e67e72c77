"""The only module of the node that opens SQLite.

WAL (Litestream needs it), synchronous=FULL (a printed receipt must survive a power cut),
busy_timeout. One connection, one lock: every write is one transaction that holds both the
projection row and its event in the upstream log, so they can never disagree.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterator

import sqlite_utils

from crypto import canonical, passwords
from crypto.keys import PublicKeys, private_dir, private_file
from templates import throttle
from templates.readers import Readers
from node import vault as vaults
from sync import log, schema
from sync.blobs import SCAN_ERROR
from sync.client import SKEW_LIMIT_S
from sync.log import Event

#: node/services/ratings.py: the citizens' ratings and the county's answers
RATINGS_SCHEMA = """CREATE TABLE IF NOT EXISTS ratings (
    id TEXT PRIMARY KEY, score INTEGER NOT NULL, comment TEXT NOT NULL, by TEXT NOT NULL, at TEXT NOT NULL,
    seq INTEGER NOT NULL, answer TEXT, answered_by TEXT, answered_department TEXT, answered_at TEXT)"""
#: node/services/retention.py: what the purge redacted and removed
RETENTION_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS retention_redacted (
        stream TEXT NOT NULL, seq INTEGER NOT NULL, at TEXT NOT NULL, PRIMARY KEY (stream, seq))""",
    """CREATE TABLE IF NOT EXISTS retention_purged (
        id TEXT PRIMARY KEY, what TEXT NOT NULL, receipt_no TEXT, at TEXT NOT NULL)""",
)


def create_retention(db: sqlite3.Connection) -> None:
    for sql in RETENTION_SCHEMA:
        db.execute(sql)


TABLES = {
    "users": ({"username": str, "name": str, "password": str, "token_hash": str, "created_at": str,
               "session_key": str,
               "role": str, "active": int, "last_login": str},     # node/staff.py: admin | agent
              "username"),
    "applications": ({"id": str, "seq": int, "receipt_no": str, "kind": str, "status": str, "item_code": str,
                      "item_name": str, "department": str, "applicant_name": str, "id_number": str,
                      "phone": str, "agent": str, "created_at": str, "promised_date": str, "body": str,
                      "event_hash": str, "event_sig": str, "county_received_at": str, "decision": str,
                      "decision_note": str, "decided_by": str, "decided_at": str,
                      "handed_out_at": str, "handed_out_by": str,
                      # the life after the first decision (see ARCHITECTURE.md, a case's life)
                      "last_seq": int,          # our latest fact on the case (a supplement): acked -> at the county
                      "time_limit_days": int, "suspensions": str,   # JSON [[from, to or null], ...]: 中止计时
                      "correction": str,        # JSON: the materials the county's correction request lists
                      "collector": str},        # JSON: who collected the result, when not the applicant
                     "id"),
    "meta": ({"name": str, "value": str}, "name"),
    # Scans, sealed to the county; the bytes are files DATA/blobs/<sha256>.sealed.
    "scans": ({"app_id": str, "sha256": str, "material": str, "name": str, "mime": str, "size": int,
               "sealed_size": int, "sent": int, "done": int, "created_at": str,
               "seq": int},            # the event that lists it (a supplement's); NULL: the application's
              ("app_id", "sha256")),
    # 办不成事 reports filed here (sync/law/reports.py), with who at the county took each and the answer.
    "reports": ({"id": str, "seq": int, "receipt_no": str, "status": str, "citizen_name": str, "body": str,
                 "agent": str, "created_at": str, "taken_by": str, "taken_department": str, "taken_at": str,
                 "answer": str, "answered_by": str, "answered_at": str}, "id"),
    # Receipt numbers: one counter per day, raised in the transaction that records the document.
    "receipt_numbers": ({"day": str, "last": int}, "day"),
}


logger = logging.getLogger("lastmile.node")
TOKEN_ENV = "LASTMILE_NODE_TOKEN"
BUSY_MS = 5000          # how long a statement waits for another connection's lock (Litestream's, say)


def file_identity(path: Path) -> str:
    """``device:inode:birth time`` of a file. A copy is a new file: a new birth time to the
    nanosecond even where the file system hands the copy the inode number the deleted original
    had (ext4 does, at once). Without statx (not Linux, or a file system that keeps no birth time)
    only ``device:inode``."""
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}" + (f":{born}" if (born := _birth_ns(path)) else "")


def _birth_ns(path: Path) -> int | None:
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        statx = libc.statx
    except (OSError, AttributeError):
        return None
    buf = ctypes.create_string_buffer(256)      # struct statx
    at_fdcwd, statx_btime = -100, 0x800
    if statx(ctypes.c_int(at_fdcwd), os.fsencode(path), ctypes.c_int(0), ctypes.c_uint(statx_btime), buf) != 0:
        return None
    mask = int.from_bytes(buf.raw[0:4], "little")
    if not mask & statx_btime:
        return None
    sec, nsec = int.from_bytes(buf.raw[80:88], "little", signed=True), int.from_bytes(buf.raw[88:92], "little")
    return sec * 1_000_000_000 + nsec


class AccountDisabled(PermissionError):
    """The password was right, but the station's admin has disabled the account."""


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        private_dir(path.parent)        # DATA: 0700, whatever the umask
        private_file(path)              # 0600 before SQLite opens it; its -wal and -shm get the same mode
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5)
        self.vault = vaults.Vault()         # node/vault.py: personal data encrypted at rest
        self.vault.install(self.conn)
        for pragma in ("journal_mode=WAL", "synchronous=FULL", f"busy_timeout={BUSY_MS}", "foreign_keys=ON",
                       "secure_delete=ON"):
            self.conn.execute(f"PRAGMA {pragma}")
        self.db = sqlite_utils.Database(self.conn)
        self.lock = threading.RLock()
        self.readers = Readers(path, setup=self.vault.install, busy_ms=BUSY_MS)   # reads beside the writer
        with self.transaction():
            schema.create(self.conn)
            for name, (columns, pk) in TABLES.items():
                self.db[name].create(columns, pk=pk, if_not_exists=True)
                missing = {c: t for c, t in columns.items() if c not in self.db[name].columns_dict}
                for column, kind in missing.items():          # a database made by an older version
                    self.db[name].add_column(column, kind)
            self.db["applications"].create_index(["status"], if_not_exists=True)
            self._upgrade_users()
            self.conn.execute(RATINGS_SCHEMA)
            create_retention(self.conn)
            throttle.create(self.conn)      # templates/throttle.py: password checks counted per name and address
            self.conn.execute(vaults.SCHEMA)
            vaults.Vault.triggers(self.conn)
            self.vault.exists = self.conn.execute("SELECT 1 FROM meta WHERE name = 'vault'").fetchone() is not None
            if self.vault.exists:
                self.vault.load_public(self.conn)       # writes while locked are sealed to it
            self._check_file_identity()
        for side in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if side.exists():           # made by an older version, say
                side.chmod(0o600)

    def _check_file_identity(self) -> None:
        """A database file that is not the one this database was last opened as (another inode or
        device: a copy put back, a Litestream restore, another disk) may be a stale copy whose lost
        original issued receipt numbers nobody here knows of. Mark it restored before anything can
        issue a number, so the next one starts a new block (node/services/intake.py _receipt_no; issue 15,
        finding 6). The identity is of the file (``file_identity``), which no copy carries; a copy
        made by an older version has none to compare and is only marked at its first sync
        (node/services/healing.py)."""
        here = file_identity(self.path)
        row = self.conn.execute("SELECT value FROM meta WHERE name = 'db_file'").fetchone()
        if row is not None and row[0] != here:
            logger.warning("%s is a copy (file %s, was %s): marked restored, its next receipt number starts a "
                           "new block", self.path, here, row[0])
            marks = self.conn.execute("SELECT value FROM meta WHERE name = 'restore_marks'").fetchone()
            if self.conn.execute("SELECT 1 FROM meta WHERE name = 'restored_at'").fetchone() is None:
                self.set_meta(self.conn, "restored_at", log.utcnow())
            else:               # copied while already marked: its original takes the next block itself
                self.set_meta(self.conn, "restore_marks", str(int(marks[0] if marks else 1) + 1))
            self.conn.execute("DELETE FROM meta WHERE name = 'restore_jumped'")   # a new restore
        if row is None or row[0] != here:
            self.set_meta(self.conn, "db_file", here)

    def close(self) -> None:
        """Close the connection once no other thread is inside a statement on it.

        The connection is shared by the web handlers and the background sync (check_same_thread is
        off). Python's sqlite3 frees the connection at ``close`` even while another thread is in the
        middle of a statement, and that thread then crashes the interpreter (a segmentation fault
        when its statement returns): so the close takes the store's lock, which every transaction
        and the sync hold, and a sync the app could not stop in time finishes first (its later calls
        get a plain "closed database" error)."""
        self.readers.close()
        with self.lock:
            self.conn.close()

    def reading(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A read-only connection of this thread (templates/readers.py): reads the last committed
        state without the store's lock, so a long write does not hold it up. For what needs no write
        and no lock: a typed code on the public verify page."""
        return self.readers.read()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT under the store's lock; roll back on any error."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    # meta ------------------------------------------------------------------
    def meta(self, name: str, default: str | None = None, db: sqlite3.Connection | None = None) -> str | None:
        if db is not None:
            row = db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        else:
            with self.lock:
                row = self.conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else default

    def sync_status(self, name: str) -> str | None:
        """A value sync keeps in ``_sync_status`` (last contact, clock offset …); None if unset."""
        with self.lock:
            return log.get_status(self.conn, name) or None

    def set_meta(self, db: sqlite3.Connection, name: str, value: str) -> None:
        db.execute("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                   (name, value))

    def county_keys(self) -> PublicKeys:
        return PublicKeys.from_dict(json.loads(self.meta("county_keys") or "{}"))

    def catalog(self) -> dict[str, Any]:
        raw = self.meta("catalog")
        return json.loads(raw) if raw else {"version": 0, "items": [], "departments": []}

    # users -----------------------------------------------------------------
    def _upgrade_users(self) -> None:
        """Databases made before sessions could be ended lack ``session_key``: add it."""
        if "session_key" not in [r[1] for r in self.conn.execute("PRAGMA table_info(users)").fetchall()]:
            self.conn.execute("ALTER TABLE users ADD COLUMN session_key TEXT")
        # Databases made before station roles: the only account becomes the admin, several become
        # agents (the installer adds an admin with `lastmile node user add --role admin`); all stay active.
        self.conn.execute("UPDATE users SET role = CASE WHEN (SELECT count(*) FROM users) = 1 THEN 'admin' "
                          "ELSE 'agent' END WHERE role IS NULL OR role = ''")
        self.conn.execute("UPDATE users SET active = 1 WHERE active IS NULL")

    def add_user(self, username: str, name: str, password: str, role: str = "agent", *, replace: bool = True) -> str:
        """Add (or, with ``replace``, replace) an account, active; return its API token. Raises
        passwords.WeakPassword (a ValueError) for a password the rules refuse, ValueError for a bad
        user name or role, KeyError for an existing user name when not ``replace``."""
        if not username or len(username) > 64 or not username.isprintable() or username != username.strip():
            raise ValueError("A user name is 1-64 printable characters.")
        if role not in ("admin", "agent"):
            raise ValueError("A station account's role is admin or agent.")
        passwords.check_strength(password, username)
        token = passwords.new_token()
        hashed = passwords.hash_password(password)
        with self.transaction() as db:
            if not replace and db.execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone():
                raise KeyError(username)
            if role != "admin" and db.execute(
                    "SELECT role = 'admin' AND active != 0 FROM users WHERE username = ?", (username,)).fetchone() == (1,) \
                    and not db.execute("SELECT count(*) FROM users WHERE role = 'admin' AND active != 0 AND username != ?",
                                       (username,)).fetchone()[0]:
                raise ValueError(f"{username} is the station's last admin: replace it with --role admin")
            self.db["users"].upsert({"username": username, "name": name, "password": hashed,
                                     "token_hash": passwords.token_hash(token), "created_at": log.utcnow(),
                                     "session_key": passwords.new_session_key(), "role": role, "active": 1},
                                    pk="username")
            made = not self.vault.exists
            if made:                        # the first account: the station's data key is made now
                self.vault.create(db)
            if not self.vault.locked:       # locked (another process holds the key): wrapped at first use
                self.vault.add_wrap(db, username, "password", hashed, password)
                self.vault.add_wrap(db, username, "token", passwords.token_hash(token), token)
        if made:
            self.vault_leftovers()
        return token

    def set_password(self, username: str, password: str) -> None:
        """Change a password; every session of the agent ends (its API token stays)."""
        passwords.check_strength(password, username)
        hashed = passwords.hash_password(password)
        with self.transaction() as db:
            if not db.execute("UPDATE users SET password = ?, session_key = ? WHERE username = ?",
                              (hashed, passwords.new_session_key(), username)).rowcount:
                raise LookupError(f"no agent {username!r}")
            if self.vault.exists and not self.vault.locked:     # locked: the old password's wrap stays
                self.vault.add_wrap(db, username, "password", hashed, password)

    def end_sessions(self, username: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE users SET session_key = ? WHERE username = ?", (passwords.new_session_key(), username))

    def _user(self, column: str, value: str) -> dict[str, Any] | None:
        assert column in ("username", "token_hash")
        names = ("username", "name", "password", "session_key", "role", "active")
        with self.lock:
            row = self.conn.execute(f"SELECT {', '.join(names)} FROM users WHERE {column} = ?", (value,)).fetchone()
        if not row:
            return None
        u = dict(zip(names, row))
        u["active"] = u["active"] != 0          # NULL: made before accounts could be disabled
        return u

    def login(self, username: str, password: str) -> dict[str, Any] | None:
        """The agent (with its ``session_key``) if the password is right; an old kind of hash is
        replaced by an argon2id one on the way. A disabled account with the right password raises
        AccountDisabled (the login page says so)."""
        u = self._user("username", username)
        ok, rehashed = passwords.verify(password, u.pop("password") if u else None)
        if not ok or u is None:
            return None
        if not u["active"]:
            raise AccountDisabled(username)
        u["session_key"] = u["session_key"] or passwords.new_session_key()
        with self.transaction() as db:
            db.execute("UPDATE users SET session_key = ?, last_login = ? WHERE username = ?",
                       (u["session_key"], log.utcnow(), username))
            if rehashed:
                db.execute("UPDATE users SET password = ? WHERE username = ?", (rehashed, username))
        self.vault_credential(username, "password", password, rehashed or self._password_hash(username))
        return u

    def session_user(self, username: str) -> dict[str, Any] | None:
        """The agent as it is now, for checking a session on each request; None once disabled."""
        u = self._user("username", username)
        if not u or not u["active"]:
            return None
        u.pop("password")
        return u

    def user_by_token(self, token: str) -> dict[str, Any] | None:
        """The account of an API token; None if there is none or it is disabled."""
        u = self._user("token_hash", passwords.token_hash(token))
        if not u or not u["active"]:
            return None
        self.vault_credential(u["username"], "token", token, passwords.token_hash(token))
        return {"username": u["username"], "name": u["name"], "role": u["role"]}

    def _password_hash(self, username: str) -> str:
        with self.lock:
            row = self.conn.execute("SELECT password FROM users WHERE username = ?", (username,)).fetchone()
        return str(row[0]) if row else ""

    # the vault (node/vault.py) -------------------------------------------------------------
    def vault_credential(self, username: str, kind: str, secret: str, ref: str) -> None:
        """A password or token that was just accepted: unlock the station with it if it is locked,
        make the vault if there is none (encrypting an older database in place), and wrap the data
        key for it if it is not wrapped yet (an account added while locked, a changed password)."""
        v = self.vault
        with self.lock:
            self.vault_refresh()
            if v.locked and not v.try_unlock(self.conn, username, kind, secret):
                return                      # not wrapped for this secret: another account must unlock
            unwrapped = v.locked is False and not v.has_wrap(self.conn, username, kind, ref)
            made = not v.exists
            if made or unwrapped:
                with self.transaction() as db:
                    if made:
                        v.create(db)
                    v.add_wrap(db, username, kind, ref, secret)
            if made or not getattr(self, "_leftovers_done", False):
                self.vault_leftovers()

    def truncate_wal(self) -> bool:
        """Empty the WAL (after a VACUUM that removed old bytes): a truncating checkpoint that waits
        at most a quarter second, not the 5 s busy timeout under the store's lock (the station's
        pages would freeze): while ``litestream replicate`` holds its read transaction it cannot
        truncate, and Litestream's own checkpoint empties the WAL later. True if truncated."""
        with self.lock:
            self.conn.execute("PRAGMA busy_timeout = 250")
            try:
                busy = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            finally:
                self.conn.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
        return not busy

    def vault_refresh(self) -> bool:
        """Another process (``lastmile node user add``) may have made the vault since this one started:
        from then on this one is locked too. True if the station is locked."""
        if not self.vault.exists:
            with self.lock:
                self.vault.exists = self.conn.execute("SELECT 1 FROM meta WHERE name = 'vault'").fetchone() is not None
                if self.vault.exists:
                    self.vault.load_public(self.conn)
        return self.vault.locked

    def unlock_from_env(self) -> bool:
        """For the CLI (never the server's environment): a locked station is unlocked with the API
        token in ``LASTMILE_NODE_TOKEN``, if it is a valid one. True if unlocked (or nothing to unlock)."""
        token = os.environ.get(TOKEN_ENV, "")
        if self.vault.locked and token:
            self.user_by_token(token)
        return not self.vault.locked

    def vault_leftovers(self) -> None:
        """Once per process after the unlock: triggers for tables made since, every value still in
        clear encrypted in one transaction, then VACUUM and a truncating checkpoint so no old page
        with plaintext stays in the file or its WAL."""
        with self.lock:
            self._leftovers_done = True
            with self.transaction() as db:
                vaults.Vault.triggers(db)
                changed = vaults.Vault.encrypt_all(db)
                vaults.Vault.reseal_all(db)        # what was written while locked: under the data key now
            if changed:
                self.conn.execute("VACUUM")
                self.truncate_wal()

    # applications ----------------------------------------------------------
    def insert_application(self, db: sqlite3.Connection, ev: Event, status: str) -> None:
        """The row of an application; a case completed after a correction notice replaces its row."""
        b = ev.body
        self.db["applications"].upsert({
            "id": b["id"], "seq": ev.seq, "receipt_no": b["receipt_no"], "kind": ev.kind, "status": status,
            "item_code": b["item_code"], "item_name": b["item_name"], "department": b["department"],
            "applicant_name": b["applicant"]["name"], "id_number": b["applicant"]["id_number"],
            "phone": b["applicant"]["phone"], "agent": b["agent"], "created_at": b["at"],
            "promised_date": b.get("promised_date", ""), "body": canonical.dumps(b).decode(),
            "event_hash": ev.hash, "event_sig": ev.sig, "time_limit_days": b.get("time_limit_days"),
            "county_received_at": None, "last_seq": None}, pk="id")

    def update_application(self, db: sqlite3.Connection, app_id: str, **values: Any) -> bool:
        sets = ", ".join(f"{k} = ?" for k in values)
        cur = db.execute(f"UPDATE applications SET {sets} WHERE id = ?", (*values.values(), app_id))
        return cur.rowcount == 1

    def last_receipt(self, db: sqlite3.Connection, stream_up: str, day: str, prefix: str) -> int:
        """The highest receipt number of ``day`` (``<prefix><5 digits>``) this station knows of: its
        counter, its upstream log (events the county gave back after a restore included) and its rows."""
        row = db.execute("SELECT last FROM receipt_numbers WHERE day = ?", (day,)).fetchone()
        in_log = db.execute(
            "SELECT max(CAST(substr(json_extract(body, '$.receipt_no'), ?) AS INTEGER)) FROM _sync_events"
            " WHERE stream = ? AND json_extract(body, '$.receipt_no') LIKE ?",
            (len(prefix) + 1, stream_up, prefix + "%")).fetchone()[0]
        in_rows = db.execute("SELECT max(CAST(substr(receipt_no, ?) AS INTEGER)) FROM applications"
                             " WHERE receipt_no LIKE ?", (len(prefix) + 1, prefix + "%")).fetchone()[0]
        return max(row[0] if row else 0, in_log or 0, in_rows or 0)

    def set_last_receipt(self, db: sqlite3.Connection, day: str, number: int) -> None:
        db.execute("INSERT INTO receipt_numbers (day, last) VALUES (?, ?)"
                   " ON CONFLICT (day) DO UPDATE SET last = excluded.last", (day, number))

    def delete_meta(self, db: sqlite3.Connection, *names: str) -> None:
        db.execute(f"DELETE FROM meta WHERE name IN ({', '.join('?' for _ in names)})", names)

    def decision_keys(self, stream_down: str) -> dict[str, str]:
        """Application id -> the id of the county key that signed its latest decision."""
        with self.lock:
            rows = self.conn.execute(
                "SELECT json_extract(body, '$.id'), key_id FROM _sync_events WHERE stream = ?"
                " AND kind = 'case.decided' ORDER BY seq", (stream_down,)).fetchall()
        return {str(r[0]): str(r[1]) for r in rows}

    def decision_key(self, stream_down: str, app_id: str) -> str | None:
        """The id of the county key that signed the application's latest decision, or None."""
        with self.lock:
            row = self.conn.execute(
                "SELECT key_id FROM _sync_events WHERE stream = ? AND kind = 'case.decided'"
                " AND json_extract(body, '$.id') = ? ORDER BY seq DESC LIMIT 1", (stream_down, app_id)).fetchone()
        return str(row[0]) if row else None

    def mark_received(self, db: sqlite3.Connection, ack: int) -> None:
        """The county's ack is its receipt: accepted applications up to it are now at the county."""
        db.execute("UPDATE applications SET status = 'received', county_received_at = ? "
                   "WHERE seq > 0 AND max(seq, coalesce(last_seq, 0)) <= ? AND status = 'accepted'",
                   (log.utcnow(), ack))

    def update_report(self, db: sqlite3.Connection, report_id: str, **values: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in values)
        db.execute(f"UPDATE reports SET {sets} WHERE id = ?", (*values.values(), report_id))

    def application(self, app_id: str, db: sqlite3.Connection | None = None) -> dict[str, Any] | None:
        if db is not None:
            rows = list(sqlite_utils.Database(db)["applications"].rows_where("id = ?", [app_id]))
        else:
            with self.lock:
                rows = list(self.db["applications"].rows_where("id = ?", [app_id]))
        if not rows:
            return None
        row = rows[0]
        row["body"] = json.loads(row["body"])
        return row

    def applications(self, where: str = "1 = 1", params: tuple[Any, ...] = (), limit: int = 100) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.db["applications"].rows_where(where, list(params), order_by="seq desc", limit=limit))

    # scans -------------------------------------------------------------------
    def pending_scans(self, acked_up_to: int) -> list[dict[str, Any]]:
        """Scans not yet confirmed by the county whose application the county already holds."""
        with self.lock:
            rows = self.conn.execute(
                "SELECT s.sha256, max(s.sealed_size), min(s.sent) FROM scans s JOIN applications a ON a.id = s.app_id"
                " WHERE s.done = 0 AND coalesce(s.seq, a.seq) > 0 AND coalesce(s.seq, a.seq) <= ?"
                " GROUP BY s.sha256 ORDER BY min(coalesce(s.seq, a.seq))", (acked_up_to,)).fetchall()
        return [{"sha256": r[0], "sealed_size": r[1], "sent": r[2]} for r in rows]

    def scan_progress(self, sha: str, sent: int, done: bool) -> None:
        with self.transaction() as db:
            db.execute("UPDATE scans SET sent = ?, done = ? WHERE sha256 = ?", (sent, int(done), sha))

    def scans_of(self, app_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.db["scans"].rows_where("app_id = ?", [app_id], order_by="material"))

    def recovery_state(self, stream_up: str) -> dict[str, Any]:
        """What the station recovered from the county's copy of its log and what it re-sequenced
        (PROTOCOL.md §8.5), for the sync panel; ``healing``: it is still catching up."""
        with self.lock:
            c = self.conn
            recovered = [dict(zip(("what", "first", "last", "at"), r)) for r in c.execute(
                "SELECT what, first, last, at FROM _sync_recoveries WHERE stream IN (?, ?) ORDER BY at DESC LIMIT 20",
                (stream_up, "down/" + stream_up.split("/", 1)[1])).fetchall()]
            moved = [dict(zip(("old_seq", "new_seq", "kind", "ref", "at"), r)) for r in c.execute(
                "SELECT old_seq, new_seq, kind, ref, at FROM _sync_resequenced WHERE stream = ?"
                " ORDER BY at DESC, new_seq LIMIT 50", (stream_up,)).fetchall()]
            status = c.execute("SELECT value FROM _sync_status WHERE name = 'up_heal_from'").fetchone()
            displaced = c.execute("SELECT count(*) FROM _sync_displaced").fetchone()[0]
        return {"recovered": recovered, "resequenced": moved,
                "healing": bool(status and status[0]) or bool(displaced)}

    def sync_state(self, stream_up: str, stream_down: str) -> dict[str, Any]:
        with self.lock:
            c = self.conn
            high = c.execute("SELECT coalesce(max(seq), 0) FROM _sync_events WHERE stream = ?", (stream_up,)).fetchone()[0]
            acked = c.execute("SELECT coalesce(max(acked), 0) FROM _sync_cursors WHERE stream = ?", (stream_up,)).fetchone()[0]
            waiting_bytes = c.execute("SELECT coalesce(sum(length(body)), 0) FROM _sync_events WHERE stream = ? AND seq > ?",
                                      (stream_up, acked)).fetchone()[0]
            down = c.execute("SELECT coalesce(max(seq), 0) FROM _sync_events WHERE stream = ?", (stream_down,)).fetchone()[0]
            status = dict(c.execute("SELECT name, value FROM _sync_status").fetchall())
            scans = c.execute("SELECT count(DISTINCT sha256), coalesce(sum(sealed_size - sent), 0) FROM scans"
                              " WHERE done = 0").fetchone()
            forks = c.execute("SELECT count(*) FROM _sync_forks").fetchone()[0]
            repairs = c.execute("SELECT count(*) FROM _sync_repairs").fetchone()[0]
            reported = [{"seq": r[0], "reason": r[1], "receipt_no": r[2]} for r in c.execute(
                "SELECT r.seq, r.reason, a.receipt_no FROM _sync_reported r LEFT JOIN applications a ON a.seq = r.seq"
                " WHERE r.stream = ? ORDER BY r.seq", (stream_up,)).fetchall()]
        return {"up_written": high, "up_acked": acked, "up_waiting": high - acked, "up_waiting_bytes": waiting_bytes,
                "down_received": down, "last_contact": status.get("last_contact") or None,
                "last_attempt": status.get("last_attempt") or None, "last_error": status.get("last_error") or None,
                "last_error_code": status.get("last_error_code") or None, "forks": forks, "repairs": repairs,
                "reported": reported, "link_bps": int(status["link_bps"]) if status.get("link_bps") else None,
                "clock_skew_s": int(status["clock_skew_s"]) if status.get("clock_skew_s") else None,
                "clock_off": abs(int(status.get("clock_skew_s") or 0)) > SKEW_LIMIT_S,
                "batch_limit": int(status["batch_limit"]) if status.get("batch_limit") else None,
                "last_progress": status.get("last_progress") or None,
                "scans_waiting": scans[0], "scans_waiting_bytes": scans[1],
                "scans_failed": [{"sha256": k[len(SCAN_ERROR):], "error": v} for k, v in sorted(status.items())
                                 if k.startswith(SCAN_ERROR) and v],
                "stalled": _stalled(high - acked, status.get("last_contact"), status.get("last_progress"))}


STALL_S = 180


def _stalled(waiting: int, last_contact: str | None, last_progress: str | None) -> bool:
    """The county answers, yet nothing waiting has been confirmed for minutes: say so."""
    if not waiting or not last_contact:
        return False
    now = dt.datetime.now(dt.timezone.utc)
    contact = dt.datetime.fromisoformat(last_contact.replace("Z", "+00:00"))
    progress = dt.datetime.fromisoformat(last_progress.replace("Z", "+00:00")) if last_progress else None
    return (now - contact).total_seconds() < STALL_S and (
        progress is None or (contact - progress).total_seconds() > STALL_S)

