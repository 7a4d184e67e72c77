"""Encryption at rest of the station's personal data (docs/ARCHITECTURE.md, "Threat model of a
station, as built").

Field-level AEAD inside an ordinary SQLite file (Litestream still reads its pages and WAL): each
value of a column in ``ENCRYPTED`` is stored as the text ``lmenc1:`` + base64(nonce ‖ AES-256-GCM
ciphertext) under the station's *data key*, associated data ``lastmile-vault/1``.

* The data key is random, lives in memory only, and is stored wrapped (AES-GCM) once per staff
  password (KEK: argon2id of the password, its own salt) and once per API token (KEK: HKDF-SHA256 of
  the token). The first successful login or token request after a process start unwraps it: the
  station is *unlocked* until the process ends. A wrong password unwraps nothing.
* Writes: SQLite triggers (``AFTER INSERT`` / ``AFTER UPDATE OF`` the columns) call ``lm_enc`` on
  every new value, whatever code path wrote it; with ``PRAGMA secure_delete`` the plaintext cell
  is zeroed in the page before the transaction commits, so it does not reach the WAL (short of
  SQLite spilling a full page cache in the middle of a statement, which the station's small
  transactions do not come near; the migration vacuums and truncates the WAL after it).
* Reads: the connection's row factory opens every ``lmenc1:`` value; the SQL functions the node's
  queries apply to those columns (``json_extract``, ``json_valid``, ``instr``, ``LIKE``) are
  overridden on the node's connection to open their argument first and then run SQLite's own
  function on the plaintext (in a private in-memory database), so the ~70 queries stay as they are.
* Locked (a vault exists, its key is not in memory): reading an encrypted value raises ``Locked``
  (an sqlite3.OperationalError, so every handler of database errors survives it); the apps answer
  423 ``locked`` / a page that says so. *Writing* still works: the vault also has an X25519 key
  pair, whose public half is in clear in ``meta`` and whose private half is stored encrypted under
  the data key; a value written while locked is sealed to the public key (``lmpub1:`` +
  base64(HPKE X25519/HKDF-SHA256/ChaCha20-Poly1305 of the text)), which only the unlocked station
  can open, and the unlock turns it into an ``lmenc1:`` value. So a locked station still receives
  the county's facts (stored sealed; applied to its cases at the unlock, Station.apply_deferred) and
  sends its already-sealed scans; its own facts wait for the unlock (their bodies cannot be read).
* A database without a vault (made by an older version, or before its first account) is
  encrypted in place when the vault is made (first ``add_user`` or first login): one transaction,
  then VACUUM and a truncating WAL checkpoint so the old pages leave the files.
"""

from __future__ import annotations

import base64
import logging
import os
import sqlite3
import threading
from collections import OrderedDict
from typing import Any, Callable

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crypto.envelope import SUITE       # HPKE X25519 / HKDF-SHA256 / ChaCha20-Poly1305, as the envelopes
from sync.log import utcnow

logger = logging.getLogger("lastmile.node")

PREFIX = "lmenc1:"
PUB_PREFIX = "lmpub1:"          # sealed to the vault's public key while locked (same length as PREFIX)
PREFIXES = (PREFIX, PUB_PREFIX)
AD = b"lastmile-vault/1"
PUB_INFO = b"lastmile-vault-pub/1"
WRAP_AD = b"lastmile-vault-wrap/1|"
#: the columns that hold personal data (or may): everything else stays in clear
ENCRYPTED: dict[str, tuple[str, ...]] = {
    "_sync_events": ("body",),
    "_sync_forks": ("event",),
    "_sync_displaced": ("event",),
    "applications": ("applicant_name", "id_number", "phone", "body", "decision_note", "collector", "correction"),
    "reports": ("citizen_name", "body", "answer"),
    "idempotency_keys": ("response",),
    "ratings": ("comment", "answer"),
    "scans": ("name",),                     # a scan's file name often names the citizen
}
SCHEMA = """CREATE TABLE IF NOT EXISTS vault_keys (
    username TEXT NOT NULL, kind TEXT NOT NULL, ref TEXT NOT NULL, salt BLOB NOT NULL, wrapped BLOB NOT NULL,
    created_at TEXT NOT NULL, PRIMARY KEY (username, kind, ref))"""
# argon2id for a password's KEK: RFC 9106 second recommended option scaled to a station PC
ARGON = {"time_cost": 2, "memory_cost": 19 * 1024, "parallelism": 1, "hash_len": 32, "type": Type.ID}
CACHE = 20000


def _clear(column: str) -> str:
    """SQL: the value of ``column`` is text not yet encrypted (either way)."""
    return (f"(typeof({column}) = 'text' AND substr({column}, 1, {len(PREFIX)}) NOT IN "
            f"('{PREFIX}', '{PUB_PREFIX}'))")


def _sealed_to_pub(column: str) -> str:
    """SQL: the value of ``column`` was written while locked (sealed to the public key)."""
    return f"(typeof({column}) = 'text' AND substr({column}, 1, {len(PUB_PREFIX)}) = '{PUB_PREFIX}')"


class Locked(sqlite3.OperationalError):
    """Personal data is encrypted and no agent has logged in since the station started."""

    def __init__(self, message: str = "the station is locked until an agent logs in") -> None:
        super().__init__(message)


def password_kek(password: str, salt: bytes) -> bytes:
    return hash_secret_raw(password.encode(), salt, **ARGON)


def token_kek(token: str, salt: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt, b"lastmile-vault-token/1").derive(token.encode())


def _wrap(kek: bytes, key: bytes, label: str) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(kek).encrypt(nonce, key, WRAP_AD + label.encode())


def _unwrap(kek: bytes, wrapped: bytes, label: str) -> bytes | None:
    try:
        return AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], WRAP_AD + label.encode())
    except (InvalidTag, ValueError):
        return None


class Vault:
    """The data key of one station database (one per Store)."""

    def __init__(self) -> None:
        self._aead: AESGCM | None = None
        self.exists = False                     # set by Store once it has read the vault table
        self._cache: OrderedDict[str, str] = OrderedDict()      # ciphertext -> plaintext, oldest first
        self._cache_lock = threading.Lock()
        self._mem = threading.local()
        self._pub: x25519.X25519PublicKey | None = None        # read from meta whenever the vault exists
        self._priv: x25519.X25519PrivateKey | None = None      # only while unlocked
        self.on_unlock: list[Callable[[], None]] = []

    # state -------------------------------------------------------------------------------------
    @property
    def locked(self) -> bool:
        return self.exists and self._aead is None

    @property
    def can_seal(self) -> bool:
        """Values can be written (locked: sealed to the public key)."""
        return self._aead is not None or self._pub is not None or not self.exists

    def _set_key(self, key: bytes, conn: sqlite3.Connection | None = None) -> None:
        was_locked = self.locked
        self._aead = AESGCM(key)
        self._key = key
        if conn is not None:
            self.load_pair(conn)
        if was_locked:
            for hook in self.on_unlock:
                try:
                    hook()
                except Exception as exc:  # noqa: BLE001 - an unlock never fails for a hook
                    logger.warning("after unlock: %s", exc)

    # values --------------------------------------------------------------------------------------
    def seal(self, value: Any) -> Any:
        """``lm_enc``: the stored form of a value of an encrypted column (sealed to the public key
        while locked)."""
        if type(value) is not str or value.startswith(PREFIXES) or not self.exists:
            return value
        if self._aead is None:
            if self._pub is None:
                raise Locked()
            return PUB_PREFIX + base64.b64encode(SUITE.encrypt(value.encode(), self._pub, info=PUB_INFO)).decode()
        nonce = os.urandom(12)
        return PREFIX + base64.b64encode(nonce + self._aead.encrypt(nonce, value.encode(), AD)).decode()

    def open(self, value: str) -> str:
        hit = self._cache.get(value)
        if hit is not None:
            return hit
        if self._aead is None:
            raise Locked()
        raw = base64.b64decode(value[len(PREFIX):])
        try:
            if value.startswith(PUB_PREFIX):
                if self._priv is None:
                    raise sqlite3.DatabaseError("a value sealed while locked, and the station has no private key for it")
                plain = SUITE.decrypt(raw, self._priv, info=PUB_INFO).decode()
            else:
                plain = self._aead.decrypt(raw[:12], raw[12:], AD).decode()
        except (InvalidTag, ValueError) as exc:
            raise sqlite3.DatabaseError("an encrypted value does not open with the station's key") from exc
        with self._cache_lock:
            self._cache[value] = plain
            if len(self._cache) > CACHE:
                self._cache.popitem(last=False)
        return plain

    def plain(self, value: Any) -> Any:
        return self.open(value) if type(value) is str and value.startswith(PREFIXES) else value

    def row(self, cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> tuple[Any, ...]:
        """The row factory of the node's connection."""
        for v in row:
            if type(v) is str and v.startswith(PREFIXES):
                return tuple(self.open(x) if type(x) is str and x.startswith(PREFIXES) else x for x in row)
        return row

    # SQL functions -----------------------------------------------------------------------------
    def _builtin(self, sql: str, args: tuple[Any, ...]) -> Any:
        mem = getattr(self._mem, "conn", None)
        if mem is None:
            mem = self._mem.conn = sqlite3.connect(":memory:")
        return mem.execute(sql, args).fetchone()[0]

    def install(self, conn: sqlite3.Connection) -> None:
        """Give ``conn`` the vault's row factory, ``lm_enc`` and the functions that open first."""
        conn.row_factory = self.row
        conn.create_function("lm_enc", 1, self.seal)
        conn.create_function("lm_on", 0, lambda: int(self.exists))
        conn.create_function("lm_open", 1, self.plain)
        p = self.plain

        def json_extract(x: Any, *paths: Any) -> Any:
            return self._builtin(f"SELECT json_extract(?{', ?' * len(paths)})", (p(x), *paths))
        conn.create_function("json_extract", -1, json_extract, deterministic=True)
        conn.create_function("json_valid", 1, lambda x: self._builtin("SELECT json_valid(?)", (p(x),)),
                             deterministic=True)
        conn.create_function("instr", 2, lambda x, y: self._builtin("SELECT instr(?, ?)", (p(x), p(y))),
                             deterministic=True)
        conn.create_function("like", 2, lambda pat, x: self._builtin("SELECT ? LIKE ?", (p(x), pat)),
                             deterministic=True)
        conn.create_function("like", 3, lambda pat, x, esc: self._builtin("SELECT ? LIKE ? ESCAPE ?", (p(x), pat, esc)),
                             deterministic=True)

    # schema ------------------------------------------------------------------------------------
    @staticmethod
    def _present(conn: sqlite3.Connection) -> list[tuple[str, tuple[str, ...]]]:
        """(table, encrypted columns) of ``ENCRYPTED`` for the tables that exist."""
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return [(t, cols) for t, cols in ENCRYPTED.items() if t in tables]

    @staticmethod
    def triggers(conn: sqlite3.Connection) -> None:
        """The triggers that encrypt each new value of ``ENCRYPTED`` (for the tables that exist)."""
        for table, columns in Vault._present(conn):
            sets = ", ".join(f"{c} = lm_enc(NEW.{c})" for c in columns)
            clear = "lm_on() AND (" + " OR ".join(_clear(f"NEW.{c}") for c in columns) + ")"   # no recursion
            conn.execute(f"CREATE TRIGGER IF NOT EXISTS lmvault_{table}_ins AFTER INSERT ON {table} WHEN {clear} "
                         f"BEGIN UPDATE {table} SET {sets} WHERE rowid = NEW.rowid; END")
            conn.execute(f"CREATE TRIGGER IF NOT EXISTS lmvault_{table}_upd AFTER UPDATE OF {', '.join(columns)} "
                         f"ON {table} WHEN {clear} BEGIN UPDATE {table} SET {sets} WHERE rowid = NEW.rowid; END")

    @staticmethod
    def _rewrite(conn: sqlite3.Connection, needs: Callable[[str], str], value: str) -> int:
        """Set every encrypted column to ``value`` (SQL, ``{c}`` the column) in the rows where some
        column ``needs`` it (SQL condition of the column); the number of rows changed."""
        changed = 0
        for table, columns in Vault._present(conn):
            sets = ", ".join(f"{c} = CASE WHEN {needs(c)} THEN {value.format(c=c)} ELSE {c} END" for c in columns)
            where = " OR ".join(needs(c) for c in columns)
            changed += conn.execute(f"UPDATE {table} SET {sets} WHERE {where}").rowcount
        return changed

    @staticmethod
    def encrypt_all(conn: sqlite3.Connection) -> int:
        """Encrypt in place every value still in clear; the number of rows changed."""
        return Vault._rewrite(conn, _clear, "lm_enc({c})")

    @staticmethod
    def reseal_all(conn: sqlite3.Connection) -> int:
        """Unlocked: turn every value written while locked (``lmpub1:``) into an ``lmenc1:`` value."""
        return Vault._rewrite(conn, _sealed_to_pub, "lm_enc(lm_open({c}))")

    # keys ----------------------------------------------------------------------------------------
    def create(self, conn: sqlite3.Connection) -> None:
        """A new data key (in the caller's transaction); wraps are added by the caller."""
        self._set_key(AESGCM.generate_key(256))     # before ``exists``: a new vault was never locked, so
        self.exists = True                          # no unlock hook runs (they open transactions of their own)
        conn.execute("INSERT INTO meta (name, value) VALUES ('vault', ?)", (utcnow(),))
        self.make_pair(conn)

    # the key pair for writing while locked ---------------------------------------------------------
    def load_public(self, conn: sqlite3.Connection) -> None:
        row = conn.execute("SELECT value FROM meta WHERE name = 'vault_pub'").fetchone()
        self._pub = x25519.X25519PublicKey.from_public_bytes(base64.b64decode(row[0])) if row else None

    def load_pair(self, conn: sqlite3.Connection) -> None:
        """Unlocked: the public key, and the private key opened with the data key (none yet: made)."""
        self.load_public(conn)
        row = conn.execute("SELECT value FROM meta WHERE name = 'vault_priv'").fetchone()
        if row is None:
            self.make_pair(conn)
            return
        self._priv = x25519.X25519PrivateKey.from_private_bytes(base64.b64decode(self.plain(row[0])))  # (the row factory may have opened it)

    def make_pair(self, conn: sqlite3.Connection) -> None:
        assert self._aead is not None
        priv = x25519.X25519PrivateKey.generate()
        raw = priv.private_bytes_raw()
        pub = priv.public_key().public_bytes_raw()
        for name, value in (("vault_pub", base64.b64encode(pub).decode()),
                            ("vault_priv", self.seal(base64.b64encode(raw).decode()))):
            conn.execute("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                         (name, value))
        self._priv, self._pub = priv, priv.public_key()

    def add_wrap(self, conn: sqlite3.Connection, username: str, kind: str, ref: str, secret: str) -> None:
        """Wrap the data key for a password (``ref``: its hash, so a changed password is noticed) or a
        token (``ref``: its hash), replacing the account's older wrap of that kind."""
        assert self._aead is not None and kind in ("password", "token")
        salt = os.urandom(16)
        kek = password_kek(secret, salt) if kind == "password" else token_kek(secret, salt)
        conn.execute("DELETE FROM vault_keys WHERE username = ? AND kind = ?", (username, kind))
        conn.execute("INSERT INTO vault_keys (username, kind, ref, salt, wrapped, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                     (username, kind, ref, salt, _wrap(kek, self._key, f"{kind}|{username}"), utcnow()))

    def has_wrap(self, conn: sqlite3.Connection, username: str, kind: str, ref: str) -> bool:
        return conn.execute("SELECT 1 FROM vault_keys WHERE username = ? AND kind = ? AND ref = ?",
                            (username, kind, ref)).fetchone() is not None

    def try_unlock(self, conn: sqlite3.Connection, username: str, kind: str, secret: str) -> bool:
        """Unwrap the data key with the account's password or token; False if nothing opens."""
        for salt, wrapped in conn.execute("SELECT salt, wrapped FROM vault_keys WHERE username = ? AND kind = ?",
                                          (username, kind)).fetchall():
            kek = password_kek(secret, salt) if kind == "password" else token_kek(secret, salt)
            key = _unwrap(kek, wrapped, f"{kind}|{username}")
            if key is not None:
                self._set_key(key, conn)
                logger.info("station unlocked by the %s of %r", kind, username)
                return True
        return False
