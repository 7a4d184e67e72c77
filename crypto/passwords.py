"""Password hashes (argon2id), the password rules, and API tokens. Only hashes are stored.

Hashes made before argon2id (``scrypt$N$r$p$salt$key``) are still accepted; ``needs_rehash``
says so, and the apps store a fresh argon2id hash at the next successful login.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 10
_HASHER = PasswordHasher()   # argon2id, RFC 9106 low-memory profile: t=3, m=64 MiB, p=4


def N_(message: str) -> str:
    """Mark a message id for translation; the web layer or the CLI shows it."""
    return message


class WeakPassword(ValueError):
    """A password the rules refuse; the message is a message id."""


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def check_password(password: str, stored: str) -> bool:
    if stored.startswith("scrypt$"):
        return _check_scrypt(password, stored)
    try:
        return _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """True for a hash of an older kind or with weaker parameters than today's."""
    if not stored.startswith("$argon2id$"):
        return True
    try:
        return _HASHER.check_needs_rehash(stored)
    except (InvalidHashError, ValueError):
        return True


def verify(password: str, stored: str | None) -> tuple[bool, str | None]:
    """Check a login: (right password?, the hash to store instead, if ``stored`` is of an old
    kind). ``stored`` None (no such user) checks the password against a fixed dummy hash of today's
    parameters: one argon2id verification either way, so timing tells no user names. Nothing is
    cached: a password never stays in memory beyond the call, and every guess costs a full check."""
    if stored is None:
        check_password(password, _dummy_hash())
        return False, None
    if not check_password(password, stored):
        return False, None
    return True, hash_password(password) if needs_rehash(stored) else None


@functools.cache
def _dummy_hash() -> str:
    """Made once per process (a hash costs as much as a check: making it per unknown name made those
    answers take twice as long, issue 15 finding 8)."""
    return _HASHER.hash(secrets.token_hex(16))


def spend_time(password: str) -> None:
    """As long as a check against a real hash: a login for an unknown user takes no less time."""
    check_password(password, _dummy_hash())


def _check_scrypt(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, dk = stored.split("$")
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(dk) // 2, maxmem=2**26)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), dk)


@functools.cache
def _common() -> frozenset[str]:
    """The 30,000 most common passwords of leaked lists, as zxcvbn ships them."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS
    return frozenset(FREQUENCY_LISTS["passwords"])


def check_strength(password: str, username: str = "") -> None:
    """Raise WeakPassword unless the password has at least 10 characters, is not one of the
    common passwords (any case) and is not the user name."""
    if len(password) < MIN_LENGTH:
        raise WeakPassword(N_("The password must have at least 10 characters."))
    lowered = password.lower()
    if lowered in _common() or len(set(lowered)) < 4:
        raise WeakPassword(N_("This password is too common; choose another."))
    if username and username.lower() in lowered:
        raise WeakPassword(N_("The password must not contain the user name."))


def new_token() -> str:
    return "lm_" + secrets.token_urlsafe(24)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_session_key() -> str:
    """A user's session key: changing it ends every session of that user."""
    return secrets.token_hex(16)
