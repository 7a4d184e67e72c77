"""Key pairs of a station or a county centre, stored as files only the owner can read.

Each party holds two keys: Ed25519 to sign what it writes, X25519 to receive HPKE envelopes.
A key's id is the first 16 hex digits of SHA-256 over its raw public bytes; envelope headers
name keys by id, so keys can rotate while old signatures stay verifiable.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from crypto.errors import BadEncoding, BadSignature

_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def private_dir(folder: Path) -> Path:
    """Make ``folder`` (and any missing parent) a directory only its owner can enter (0700),
    whatever the umask; an existing ``folder`` is tightened to 0700."""
    missing = []
    p = folder
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            pass
        os.chmod(d, 0o700)
    os.chmod(folder, 0o700)
    return folder


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists and only its owner can read or write it (0600), whatever the
    umask: a new file is created with that mode (never a moment readable by others).

    An existing file is only chmod-ed, never opened: closing any descriptor of a database file
    drops every POSIX lock this process holds on it, SQLite's included, which corrupts it."""
    if not path.exists():
        try:
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
    os.chmod(path, 0o600)
    return path


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def unb64(text: str) -> bytes:
    """Strict unpadded base64url: one text for each byte string, nothing else accepted."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise BadEncoding("not unpadded base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64(data) != text:
        raise BadEncoding("not the canonical base64url form")
    return data


def key_id(raw_public: bytes) -> str:
    return hashlib.sha256(raw_public).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class PublicKeys:
    """What one party tells the other at enrolment: raw public keys, base64url."""

    sign: str
    enc: str

    @property
    def sign_id(self) -> str:
        return key_id(unb64(self.sign))

    @property
    def enc_id(self) -> str:
        return key_id(unb64(self.enc))

    def fingerprint(self) -> str:
        """A short string an installer can read aloud to check a key over the phone."""
        h = hashlib.sha256(unb64(self.sign) + unb64(self.enc)).hexdigest()[:20].upper()
        return "-".join(h[i:i + 4] for i in range(0, 20, 4))

    def to_dict(self) -> dict[str, str]:
        return {"sign": self.sign, "enc": self.enc}

    @classmethod
    def from_dict(cls, d: object) -> PublicKeys:
        if not isinstance(d, dict):
            raise BadEncoding("public keys must be an object")
        sign, enc = d.get("sign"), d.get("enc")
        if not isinstance(sign, str) or not isinstance(enc, str):
            raise BadEncoding("public keys need 'sign' and 'enc' strings")
        if len(unb64(sign)) != 32 or len(unb64(enc)) != 32:
            raise BadEncoding("public keys must be 32 bytes each")
        return cls(sign=sign, enc=enc)


@dataclass(frozen=True, slots=True)
class Identity:
    """A party's private keys."""

    sign_key: ed25519.Ed25519PrivateKey = field(repr=False)
    enc_key: x25519.X25519PrivateKey = field(repr=False)

    @classmethod
    def generate(cls) -> Identity:
        return cls(ed25519.Ed25519PrivateKey.generate(), x25519.X25519PrivateKey.generate())

    @property
    def public(self) -> PublicKeys:
        return PublicKeys(sign=b64(self.sign_key.public_key().public_bytes(*_RAW)),
                          enc=b64(self.enc_key.public_key().public_bytes(*_RAW)))

    def sign(self, data: bytes) -> bytes:
        return self.sign_key.sign(data)

    def save(self, folder: Path) -> None:
        """Write both keys as PEM files with mode 0600; refuse to overwrite existing keys."""
        private_dir(folder)
        for name, key in (("sign.pem", self.sign_key), ("enc.pem", self.enc_key)):
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())

    @classmethod
    def load(cls, folder: Path) -> Identity:
        sign = serialization.load_pem_private_key((folder / "sign.pem").read_bytes(), None)
        enc = serialization.load_pem_private_key((folder / "enc.pem").read_bytes(), None)
        if not isinstance(sign, ed25519.Ed25519PrivateKey) or not isinstance(enc, x25519.X25519PrivateKey):
            raise BadEncoding(f"unexpected key types in {folder}")
        return cls(sign, enc)


def save_retired(identity: Identity, folder: Path) -> Path:
    """Keep a party's old private keys after a rotation, in ``folder/<sign key id>/`` (0700 / 0600):
    the old X25519 key still opens what was sealed to it, the old Ed25519 key signs only for a peer
    that has not learnt the new one yet. An existing copy is left as it is."""
    target = folder / identity.public.sign_id
    if not (target / "sign.pem").exists():
        private_dir(folder)
        if target.exists():                 # a copy cut short: write it again
            for name in ("sign.pem", "enc.pem"):
                (target / name).unlink(missing_ok=True)
        identity.save(target)
    return target


def load_retired(folder: Path) -> dict[str, Identity]:
    """The retired identities ``save_retired`` kept under ``folder``, by sign key id."""
    out: dict[str, Identity] = {}
    if folder.is_dir():
        for sub in sorted(folder.iterdir()):
            if (sub / "sign.pem").exists() and (sub / "enc.pem").exists():
                ident = Identity.load(sub)
                out[ident.public.sign_id] = ident
    return out


def verify(public_sign_key: str, signature: bytes, data: bytes) -> None:
    """Raise BadSignature unless ``signature`` is the Ed25519 signature of ``data``."""
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(unb64(public_sign_key)).verify(signature, data)
    except (InvalidSignature, ValueError) as exc:
        raise BadSignature("signature does not verify") from exc
