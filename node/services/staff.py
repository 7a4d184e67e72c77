"""The station's accounts: an admin manages the agents from the page (/staff) or the API
(/api/v1/staff); the installer creates the first admin with ``lastmile node user add --role admin``.

Rules (docs/ARCHITECTURE.md, "Accounts at the station"):

- Two roles: ``admin`` (manages accounts, and does everything an agent does) and ``agent``.
- Disabling an account ends its sessions and stops its API token at once (checked on every
  request); enabling it again brings the same token back, and the agent logs in again.
- A password reset ends every session of the account; its API token keeps working, so the
  automation that holds it keeps running.
- An admin cannot disable themself, and the last active admin cannot be disabled.
- ``require_admin`` is the one permission check the page and the API share.

Account changes are local to the station: they are not facts and never go up to the county.
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

from crypto import passwords
from node.store import Store
from templates import N_, throttle

logger = logging.getLogger("lastmile.node.staff")

ROLES = ("agent", "admin")
ACTIONS = ("disable", "enable", "password", "unlock")
USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,31}")
NAME_MAX = 60
NAME_FORBIDDEN = set('<>&"`\\')
ALPHABET = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789"   # no 0/O, 1/l/I


class StaffError(Exception):
    """A refused account change: HTTP status, API error code, a sentence (a message id) and the
    form field it is about."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def generate_password() -> str:
    """A password to read out or write down: 3 groups of 4 unambiguous characters."""
    while True:
        pw = "-".join("".join(secrets.choice(ALPHABET) for _ in range(4)) for _ in range(3))
        try:
            passwords.check_strength(pw)
        except ValueError:
            continue
        return pw


def check_new(username: str, name: str, role: str) -> None:
    if not USERNAME.fullmatch(username):
        raise StaffError(422, "invalid", N_("A user name is 2 to 32 letters, digits, dots, dashes or underscores, "
                                            "starting with a letter or a digit."), "username")
    if not name or len(name) > NAME_MAX or not name.isprintable() or NAME_FORBIDDEN & set(name):
        raise StaffError(422, "invalid", N_("A full name is 1 to 60 characters, without angle brackets, quotes, "
                                            "backquotes, backslashes or ampersands."), "name")
    if role not in ROLES:
        raise StaffError(422, "invalid", N_("The role is agent or admin."), "role")


def check_password(password: str, username: str) -> None:
    try:
        passwords.check_strength(password, username)
    except ValueError as exc:
        raise StaffError(422, "invalid", str(exc), "password") from exc


def listing(store: Store) -> list[dict[str, Any]]:
    with store.lock:
        rows = store.conn.execute("SELECT username, name, role, active, last_login, created_at FROM users "
                                  "ORDER BY role = 'agent', username").fetchall()
    waits = throttle.slowed(store)
    return [{"username": r[0], "name": r[1], "role": r[2] or "agent", "active": r[3] != 0,
             "last_login": r[4] or None, "created_at": r[5], "login_wait_s": waits.get(str(r[0]).lower(), 0)}
            for r in rows]


def unlock(store: Store, actor: str, username: str) -> None:
    """Forget the wrong passwords counted for ``username``: its next login is checked at once
    (templates/throttle.py). An admin's way out when an agent is slowed down by someone's guessing."""
    if account(store, username) is None:
        raise StaffError(404, "not_found", N_("There is no such account at this station."))
    throttle.release(store, username)
    logger.info("%r cleared the login count of %r", actor, username)


def add(store: Store, actor: str, username: str, name: str, role: str, password: str) -> str:
    """A new active account; its API token (shown once). Nothing is stored on a refusal."""
    name = name.strip()
    check_new(username, name, role)
    check_password(password, username)
    try:
        token = store.add_user(username, name, password, role, replace=False)
    except KeyError as exc:
        raise StaffError(409, "exists", N_("There is already an account with this user name."), "username") from exc
    logger.info("%r added the %s account %r", actor, role, username)
    return token


def set_active(store: Store, actor: str, username: str, active: bool) -> None:
    """Enable or disable an account; disabling ends its sessions (a new session key) and its token
    stops at once (user_by_token and session_user read ``active`` on every request)."""
    if not active and username == actor:
        raise StaffError(409, "own_account", N_("You cannot disable your own account."))
    with store.transaction() as db:
        row = db.execute("SELECT role FROM users WHERE username = ?", (username,)).fetchone()
        if row is None:
            raise StaffError(404, "not_found", N_("There is no such account at this station."))
        if not active and row[0] == "admin" and not db.execute(
                "SELECT count(*) FROM users WHERE role = 'admin' AND active != 0 AND username != ?",
                (username,)).fetchone()[0]:
            raise StaffError(409, "last_admin", N_("This is the station's last administrator; it cannot be disabled."))
        if active:
            db.execute("UPDATE users SET active = 1 WHERE username = ?", (username,))
        else:
            db.execute("UPDATE users SET active = 0, session_key = ? WHERE username = ?",
                       (passwords.new_session_key(), username))
            # node/vault.py: its password and token no longer open the station's data, on a copied
            # disk either; enabled again, it is wrapped anew at its first use while unlocked.
            db.execute("DELETE FROM vault_keys WHERE username = ?", (username,))
    logger.info("%r %s the account %r", actor, "enabled" if active else "disabled", username)


def reset_password(store: Store, actor: str, username: str, password: str) -> None:
    """A new password; every session of the account ends, its API token keeps working."""
    check_password(password, username)
    try:
        store.set_password(username, password)
    except LookupError as exc:
        raise StaffError(404, "not_found", N_("There is no such account at this station.")) from exc
    logger.info("%r reset the password of %r; its sessions ended", actor, username)


def account(store: Store, username: str) -> dict[str, Any] | None:
    return next((a for a in listing(store) if a["username"] == username), None)
