"""Slowing down password guessing, the same way at the station and the county (issue 15, findings 8, 12).

Every password check is counted *before* it is made, in one write transaction of the app's own
database (``login_throttle``), per user name (known or not: the same answer either way) and per
client address. The first ``free`` attempts of a key pass at once; from then on each counted
attempt makes the next one wait ``base``, 2 × ``base``, 4 × ``base`` … up to ``cap`` seconds. An attempt
that comes while a key must wait is answered 429 with ``Retry-After`` and is *not* checked and
*not* counted: a burst of concurrent guesses gets at most ``free`` checks, and an attacker cannot
push the wait further out by asking more often. Nothing is ever locked: the real user who types the
right password once the wait is over gets in, and a right password resets the user name's count.
An API token is never counted or slowed. An admin clears a user name's count at once (``release``:
the station's /staff page and ``lastmile node user unlock``; ``lastmile central user unlock`` and
the county's API). The counts are in the database, so the CLI sees and clears what the server counts,
and a restart forgets nothing.

The SQL is the subset SQLite and PostgreSQL share; times are integer milliseconds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Protocol

logger = logging.getLogger("lastmile.web")

SCHEMA = ("CREATE TABLE IF NOT EXISTS login_throttle (key TEXT PRIMARY KEY, failures INTEGER NOT NULL, "
          "next_at BIGINT NOT NULL, last_at BIGINT NOT NULL, checks INTEGER NOT NULL)")
INDEX = "CREATE INDEX IF NOT EXISTS login_throttle_last ON login_throttle (last_at)"


class Transactional(Protocol):
    def transaction(self) -> ContextManager[Any]: ...


def create(db: Any) -> None:
    """The table, inside the caller's transaction (both stores call it when they open)."""
    db.execute(SCHEMA)
    db.execute(INDEX)


@dataclass(frozen=True)
class Rule:
    free: int       # attempts within ``forget`` that pass without waiting
    base: float     # seconds to wait after the ``free``-th, doubled after each further one
    cap: float      # the longest wait

    def wait(self, failures: int) -> float:
        if failures < self.free:
            return 0.0
        return float(min(self.cap, self.base * 2 ** min(failures - self.free, 40)))


def _name(username: str) -> str:
    return username.strip().lower()


def name_key(username: str) -> str:
    return "name:" + _name(username)


class Throttle:
    """Counts attempts per key (``kind:value``) in ``store``'s database; ``rules`` maps a kind to its Rule."""

    def __init__(self, rules: dict[str, Rule], forget: float = 3600, clock: Callable[[], float] = time.time) -> None:
        self.rules, self.forget, self.clock = rules, forget, clock

    def admit_keys(self, store: Transactional, keys: dict[str, str]) -> tuple[str, float] | None:
        """Count one attempt under every ``kind → value`` of ``keys`` and return None (go ahead), or,
        without counting anything, (the kind that must wait longest, seconds to wait)."""
        now = int(self.clock() * 1000)
        names = {f"{kind}:{value}": kind for kind, value in keys.items()}
        with store.transaction() as db:
            db.execute("DELETE FROM login_throttle WHERE last_at < ? AND next_at < ?",
                       (now - int(self.forget * 1000), now))
            rows = {}
            for key in names:
                row = db.execute("SELECT failures, next_at FROM login_throttle WHERE key = ?", (key,)).fetchone()
                rows[key] = (int(row[0]), int(row[1])) if row else (0, 0)
            waits = [(names[key], (rows[key][1] - now) / 1000) for key in names if rows[key][1] > now]
            if waits:
                return max(waits, key=lambda w: w[1])
            for key, kind in names.items():
                failures = rows[key][0] + 1
                next_at = now + int(self.rules[kind].wait(failures) * 1000)
                db.execute("INSERT INTO login_throttle (key, failures, next_at, last_at, checks) VALUES (?, ?, ?, ?, 1)"
                           " ON CONFLICT (key) DO UPDATE SET failures = excluded.failures, next_at = excluded.next_at,"
                           " last_at = excluded.last_at, checks = login_throttle.checks + 1",
                           (key, failures, next_at, now))
        return None

    def undo(self, db: Any, kind: str, value: str) -> None:
        """Inside a transaction: this attempt no longer counts against ``kind:value`` (its earlier
        failures still do)."""
        key = f"{kind}:{value}"
        row = db.execute("SELECT failures FROM login_throttle WHERE key = ?", (key,)).fetchone()
        if row:
            failures = max(0, int(row[0]) - 1)
            db.execute("UPDATE login_throttle SET failures = ?, next_at = CASE WHEN ? < ? THEN 0 ELSE next_at END"
                       " WHERE key = ?", (failures, failures, self.rules[kind].free, key))


class LoginThrottle(Throttle):
    """Password checks, per user name (``name``) and per client address (``addr``)."""

    def __init__(self, per_name: Rule = Rule(5, 5, 600), per_address: Rule = Rule(20, 5, 900),
                 forget: float = 3600, clock: Callable[[], float] = time.time) -> None:
        super().__init__({"name": per_name, "addr": per_address}, forget, clock)

    def admit(self, store: Transactional, username: str, address: str) -> tuple[str, float] | None:
        """Count one password check for ``username`` from ``address``: None (go ahead), or, without
        counting anything, (``name`` or ``addr``, seconds to wait)."""
        return self.admit_keys(store, {"name": _name(username), "addr": address})

    def succeeded(self, store: Transactional, username: str, address: str) -> None:
        """The password was right: the user name starts afresh, and this attempt no longer counts
        against the address."""
        with store.transaction() as db:
            db.execute("UPDATE login_throttle SET failures = 0, next_at = 0 WHERE key = ?", (name_key(username),))
            self.undo(db, "addr", address)


def release(store: Transactional, username: str) -> bool:
    """An admin's unlock: forget the user name's count and wait. True if there was one."""
    with store.transaction() as db:
        held = db.execute("SELECT 1 FROM login_throttle WHERE key = ?", (name_key(username),)).fetchone()
        db.execute("DELETE FROM login_throttle WHERE key = ?", (name_key(username),))
    if held:
        logger.warning("login count of %r cleared by an administrator", username)
    return held is not None


def slowed(store: Transactional, clock: Callable[[], float] = time.time) -> dict[str, int]:
    """User names that must wait now → seconds left (for the admin's page)."""
    now = int(clock() * 1000)
    with store.transaction() as db:
        rows = db.execute("SELECT key, next_at FROM login_throttle WHERE key LIKE 'name:%' AND next_at > ?",
                          (now,)).fetchall()
    return {str(k)[5:]: max(1, (int(n) - now + 999) // 1000) for k, n in rows}


def checks(store: Transactional, username: str) -> int:
    """How many password checks were counted for ``username`` since its count was last cleared."""
    with store.transaction() as db:
        row = db.execute("SELECT checks FROM login_throttle WHERE key = ?", (name_key(username),)).fetchone()
    return int(row[0]) if row else 0
