"""Append-only event logs with dense sequence numbers, a hash chain and signatures.

A stream is one author's log toward one reader: ``up/<station>`` (written by the station)
and ``down/<station>`` (written by the county). Both ends keep a copy in ``_sync_events``.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Protocol

from crypto import canonical
from crypto.keys import Identity, b64, key_id, unb64, verify
from crypto.errors import BadEncoding, BadSignature
from sync import codes
from sync.errors import BadEvent
from sync.law import retention

GENESIS = "0" * 64
SIG_CONTEXT = b"lastmile-event/1|"


class Conn(Protocol):
    def execute(self, sql: str, params: Any = ...) -> Any: ...


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def up(station: str) -> str:
    return f"up/{station}"


def down(station: str) -> str:
    return f"down/{station}"


@dataclass(frozen=True, slots=True)
class Event:
    stream: str
    seq: int
    prev: str
    author: str
    key: str          # id of the author's signing key (crypto.keys.key_id), so keys can rotate
    kind: str
    at: str
    body: dict[str, Any]
    hash: str
    sig: str

    def content(self) -> dict[str, Any]:
        return {"stream": self.stream, "seq": self.seq, "prev": self.prev, "author": self.author,
                "key": self.key, "kind": self.kind, "at": self.at, "body": self.body}

    def to_wire(self) -> dict[str, Any]:
        return {**self.content(), "hash": self.hash, "sig": self.sig}

    @classmethod
    def from_wire(cls, d: Any) -> Event:
        if not isinstance(d, dict):
            raise BadEvent("event is not an object")
        try:
            ev = cls(stream=d["stream"], seq=d["seq"], prev=d["prev"], author=d["author"], key=d["key"],
                     kind=d["kind"], at=d["at"], body=d["body"], hash=d["hash"], sig=d["sig"])
        except KeyError as exc:
            raise BadEvent(f"event lacks field {exc}") from exc
        if set(d) - {"stream", "seq", "prev", "author", "key", "kind", "at", "body", "hash", "sig"}:
            raise BadEvent("event has unknown fields")
        if type(ev.seq) is not int or ev.seq < 1:
            raise BadEvent("event seq must be a positive integer")
        for name in ("stream", "prev", "author", "key", "kind", "at", "hash", "sig"):
            if not isinstance(getattr(ev, name), str):
                raise BadEvent(f"event field {name} must be a string")
        if not isinstance(ev.body, dict):
            raise BadEvent("event body must be an object")
        return ev

    def check(self, author_sign_key: str | Mapping[str, str]) -> None:
        """Raise BadEvent unless the hash matches the content and the author's signature verifies.

        ``author_sign_key`` is the author's one key, or its key history: key id -> public sign key
        (every key the author ever had on record), looked up by the event's ``key``."""
        if isinstance(author_sign_key, Mapping):
            found = author_sign_key.get(self.key)
            if found is None:
                raise BadEvent(f"event {self.stream}#{self.seq} is signed with key {self.key},"
                               " which is not on record for its author")
            author_sign_key = found
        if self.key != key_id(unb64(author_sign_key)):
            raise BadEvent(f"event {self.stream}#{self.seq} is signed with key {self.key}, not the author's")
        try:
            if content_hash(self.content()) != self.hash:
                raise BadEvent(f"event {self.stream}#{self.seq}: hash does not match its content")
            verify(author_sign_key, unb64(self.sig), SIG_CONTEXT + self.hash.encode())
        except BadSignature as exc:
            raise BadEvent(f"event {self.stream}#{self.seq}: signature does not verify") from exc
        except BadEncoding as exc:
            raise BadEvent(f"event {self.stream}#{self.seq}: {exc}") from exc


def content_hash(content: dict[str, Any]) -> str:
    return hashlib.sha256(canonical.dumps(content)).hexdigest()


def head(db: Conn, stream: str) -> tuple[int, str]:
    """(highest seq, its hash) of a stream, or (0, GENESIS)."""
    row = db.execute("SELECT seq, hash FROM _sync_events WHERE stream = ? ORDER BY seq DESC LIMIT 1",
                     (stream,)).fetchone()
    return (int(row[0]), str(row[1])) if row else (0, GENESIS)


def append(db: Conn, me: Identity, *, stream: str, author: str, kind: str, body: dict[str, Any],
           at: str | None = None) -> Event:
    """Write one signed event at the end of ``stream``; the caller's transaction makes it durable."""
    seq, prev = head(db, stream)
    content = {"stream": stream, "seq": seq + 1, "prev": prev, "author": author, "key": me.public.sign_id,
               "kind": kind, "at": at or utcnow(), "body": body}
    h = content_hash(content)
    ev = Event(**content, hash=h, sig=b64(me.sign(SIG_CONTEXT + h.encode())))
    store(db, ev)
    return ev


def store(db: Conn, ev: Event) -> None:
    db.execute("INSERT INTO _sync_events (stream, seq, prev, hash, author, key_id, kind, at, body, sig, stored_at)"
               " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
               (ev.stream, ev.seq, ev.prev, ev.hash, ev.author, ev.key, ev.kind, ev.at,
                canonical.dumps(ev.body).decode(), ev.sig, utcnow()))
    codes.index_event(db, ev.stream, ev.seq, ev.kind, ev.hash)


def remove_from(db: Conn, stream: str, seq: int) -> list[Event]:
    """Take the events with seq >= ``seq`` out of ``stream`` and return them, in order: only for a
    station's own upstream events the county never got, set aside to be re-appended (self-heal)."""
    out = [_row(r) for r in db.execute(f"SELECT {_COLS} FROM _sync_events WHERE stream = ? AND seq >= ?"
                                       " ORDER BY seq", (stream, seq)).fetchall()]
    db.execute("DELETE FROM _sync_events WHERE stream = ? AND seq >= ?", (stream, seq))
    db.execute("DELETE FROM _sync_codes WHERE stream = ? AND seq >= ?", (stream, seq))
    return out


def _row(r: Any) -> Event:
    return Event(stream=r[0], seq=int(r[1]), prev=r[2], hash=r[3], author=r[4], kind=r[5], at=r[6],
                 body=canonical.loads(r[7].encode()), sig=r[8], key=r[9])


_COLS = "stream, seq, prev, hash, author, kind, at, body, sig, key_id"


def events_after(db: Conn, stream: str, after: int, limit: int = 500,
                 max_bytes: int = 4 * 1024 * 1024) -> list[Event]:
    """Events with seq > after, in order, at most ``limit`` of them and about ``max_bytes``."""
    rows = db.execute(f"SELECT {_COLS} FROM _sync_events WHERE stream = ? AND seq > ? ORDER BY seq LIMIT ?",
                      (stream, after, limit)).fetchall()
    out, size = [], 0
    for r in rows:
        size += len(r[7]) + 300
        if out and size > max_bytes:
            break
        out.append(_row(r))
    return out


def get(db: Conn, stream: str, seq: int) -> Event | None:
    r = db.execute(f"SELECT {_COLS} FROM _sync_events WHERE stream = ? AND seq = ?", (stream, seq)).fetchone()
    return _row(r) if r else None


def acked(db: Conn, stream: str) -> int:
    row = db.execute("SELECT acked FROM _sync_cursors WHERE stream = ?", (stream,)).fetchone()
    return int(row[0]) if row else 0


def set_acked(db: Conn, stream: str, value: int) -> None:
    """Move the confirmed cursor forward; it never moves back (acks are cumulative)."""
    if value <= acked(db, stream):
        return
    if db.execute("SELECT 1 FROM _sync_cursors WHERE stream = ?", (stream,)).fetchone():
        db.execute("UPDATE _sync_cursors SET acked = ?, updated_at = ? WHERE stream = ?",
                   (value, utcnow(), stream))
    else:
        db.execute("INSERT INTO _sync_cursors (stream, acked, updated_at) VALUES (?, ?, ?)",
                   (stream, value, utcnow()))


def rewind_acked(db: Conn, stream: str, value: int) -> None:
    """Move the confirmed cursor back: only when the other side, answering this very request,
    holds less than it once confirmed (it was restored from a backup), so the rest is sent again."""
    db.execute("UPDATE _sync_cursors SET acked = ?, updated_at = ? WHERE stream = ?", (value, utcnow(), stream))


def get_status(db: Conn, name: str) -> str | None:
    row = db.execute("SELECT value FROM _sync_status WHERE name = ?", (name,)).fetchone()
    return str(row[0]) if row else None


def set_status(db: Conn, name: str, value: str) -> None:
    if db.execute("SELECT 1 FROM _sync_status WHERE name = ?", (name,)).fetchone():
        db.execute("UPDATE _sync_status SET value = ? WHERE name = ?", (value, name))
    else:
        db.execute("INSERT INTO _sync_status (name, value) VALUES (?, ?)", (name, value))


# a case's events, and what their signatures say now (sync/law/history.py labels them) --------------

VALID, INVALID, MISSING = "valid", "invalid", "missing"
REDACTED = "redacted"       # personal data removed after the retention period (sync/law/retention.py)


def signature_holds(ev: Event, sign_key: str) -> bool:
    """The event's signature verifies over its recorded hash with ``sign_key`` (what still holds
    for a redacted event, whose body no longer matches the hash)."""
    try:
        if key_id(unb64(sign_key)) != ev.key:
            return False
        verify(sign_key, unb64(ev.sig), SIG_CONTEXT + ev.hash.encode())
    except (BadSignature, BadEncoding, ValueError, TypeError):
        return False
    return True


def check_event(ev: Event, author_sign_key: Any) -> None:
    """``Event.check``, except for a redacted stub: its body no longer hashes to ``hash``, so only
    the signature over the recorded hash is checked (BadEvent if it does not verify). A receiver
    stores such a stub and sets it aside (a county restored from a backup older than a station's
    purge is given back what the station still holds; PROTOCOL.md §8.7)."""
    if not retention.is_redacted(ev.body):
        ev.check(author_sign_key)
        return
    key = author_sign_key.get(ev.key) if isinstance(author_sign_key, Mapping) else author_sign_key
    if not isinstance(key, str) or not signature_holds(ev, key):
        raise BadEvent(f"event {ev.stream}#{ev.seq}: signature does not verify")


def signature_state(ev: Event, keys: Mapping[str, str], revoked: Callable[[Event], bool] | None = None) -> str:
    """``valid`` if the hash matches the content and the key the event names (in ``keys``, key id ->
    public sign key) verifies it; ``missing`` if there is no signature or that key is not on record
    here; ``redacted`` for a body replaced by its stub after the retention period whose signature
    over the recorded hash verifies; ``invalid`` otherwise (an edited body, a wrong signature, a key
    revoked before it was stored)."""
    if not ev.sig or ev.key not in keys:
        return MISSING
    if retention.is_redacted(ev.body):
        if not signature_holds(ev, keys[ev.key]) or (revoked is not None and revoked(ev)):
            return INVALID
        return REDACTED
    try:
        ev.check(keys)
    except (BadEvent, ValueError, TypeError):
        return INVALID
    if revoked is not None and revoked(ev):
        return INVALID
    return VALID


def events_naming(db: Conn, streams: Iterable[str], case_id: str) -> list[Event]:
    """Every stored event of ``streams`` whose body's ``id`` is ``case_id``: in seq order within a
    stream, the streams interleaved by the events' UTC times of writing."""
    needle = canonical.dumps({"id": case_id}).decode()[1:-1]          # "id":"<case id>", as stored
    pattern = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    per_stream: list[list[Event]] = []
    for stream in streams:
        found: list[Event] = []
        per_stream.append(found)
        rows = db.execute("SELECT stream, seq, prev, hash, author, kind, at, body, sig, key_id FROM _sync_events"
                          " WHERE stream = ? AND body LIKE ? ESCAPE '\\' ORDER BY seq", (stream, pattern)).fetchall()
        for r in rows:
            try:
                body = canonical.loads(r[7].encode())
            except Exception:  # noqa: BLE001 - a body edited into junk: shown as such, never a crash
                body = {"id": case_id, "unreadable": True}
            if isinstance(body, dict) and body.get("id") == case_id:
                found.append(Event(stream=r[0], seq=int(r[1]), prev=r[2], hash=r[3], author=r[4], kind=r[5],
                                   at=r[6], body=body, sig=r[8], key=r[9]))
    # Each stream stays in seq order (a wrong clock reorders nothing within it); the streams are
    # interleaved by the events' UTC times of writing.
    return list(heapq.merge(*per_stream, key=lambda e: e.at))
