"""Exactly one case per submission: the intake form's one-time token and the API's Idempotency-Key.

A key is remembered in ``idempotency_keys`` in the SAME transaction that records the application
(``Station.take(..., within=...)``), so a crash can never leave a case without its key or a key
without its case; a repeat finds the first case and gets the first answer. Two identical
submissions at the same moment are serialised by the store's transaction: the second one finds
the first's key inside its own transaction and rolls back (``Replay``).

Form tokens need no storage until they are used: ``<nonce>.<mac>``, the mac an HMAC of the nonce
keyed by the session's CSRF secret, so a token from another session (or made up) is refused.

Pure plumbing, no HTTP: node/views.py turns the exceptions into pages and JSON.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import sqlite3
from typing import Any

from node.store import Store
from sync import log

KEEP = dt.timedelta(days=7)          # keys are remembered at least this long (the API promises 24 hours)
API_KEY = re.compile(r"[\x20-\x7e]{1,100}")
SCHEMA = """CREATE TABLE IF NOT EXISTS idempotency_keys (
    scope TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL, app_id TEXT NOT NULL,
    response TEXT, created_at TEXT NOT NULL, PRIMARY KEY (scope, key))"""


class Replay(Exception):
    """The key was used before: ``row`` is what was remembered with it (``app_id``, ``fingerprint``,
    ``response``)."""

    def __init__(self, row: dict[str, Any]) -> None:
        super().__init__(f"idempotency key already used for {row['app_id']}")
        self.row = row


def create(store: Store) -> None:
    with store.transaction() as db:
        db.execute(SCHEMA)
        db.execute("CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created_at)")


def _row(db: sqlite3.Connection, scope: str, key: str) -> dict[str, Any] | None:
    r = db.execute("SELECT app_id, fingerprint, response FROM idempotency_keys WHERE scope = ? AND key = ?",
                   (scope, key)).fetchone()
    return {"app_id": r[0], "fingerprint": r[1], "response": r[2]} if r else None


def find(store: Store, scope: str, key: str) -> dict[str, Any] | None:
    """What was remembered with ``key`` (None if nothing): checked before any work is done."""
    with store.lock:
        return _row(store.conn, scope, key)


def claimer(scope: str, key: str, fingerprint: str, response: Any = None) -> Any:
    """The ``within`` hook for ``Station.take``: inside its transaction, remember ``key`` with the new
    case, or raise Replay (the transaction rolls back) if a submission with the same key got there
    first. ``response(app_id)``, if given, is the answer to keep for repeats (read inside the
    transaction, so it is stored with the case or not at all)."""

    def within(db: sqlite3.Connection, app_id: str) -> None:
        first = _row(db, scope, key)
        if first is not None:
            raise Replay(first)
        now = dt.datetime.now(dt.timezone.utc)
        db.execute("DELETE FROM idempotency_keys WHERE created_at < ?", ((now - KEEP).isoformat(),))
        db.execute("INSERT INTO idempotency_keys (scope, key, fingerprint, app_id, response, created_at)"
                   " VALUES (?, ?, ?, ?, ?, ?)",
                   (scope, key, fingerprint, app_id,
                    json.dumps(response(app_id), ensure_ascii=False) if response else None, log.utcnow()))
    return within


def fingerprint(payload: Any) -> str:
    """The same request, however its JSON is spaced or its keys ordered, gives the same fingerprint."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def valid_api_key(key: str) -> bool:
    return API_KEY.fullmatch(key) is not None


# the intake form's one-time token --------------------------------------------------------
def _mac(secret: str, nonce: str) -> str:
    return hmac.new(secret.encode(), b"lastmile-form-token|" + nonce.encode(), hashlib.sha256).hexdigest()[:32]


def new_form_token(session_secret: str) -> str:
    """A fresh token for one intake form, bound to the session whose secret (its CSRF token) is given."""
    nonce = secrets.token_urlsafe(18)
    return f"{nonce}.{_mac(session_secret, nonce)}"


def form_token_ok(session_secret: str, token: str) -> bool:
    """The token was issued to this session (not made up, not another session's)."""
    nonce, _, mac = token.partition(".")
    return bool(nonce and mac and session_secret) and len(token) <= 100 and hmac.compare_digest(
        mac.encode(), _mac(session_secret, nonce).encode())
