"""Walking a stored stream from its first event to its last: the self-check each end runs over its
own copy of the logs (the county: central/services/selfcheck.py, ``lastmile central check``; the station:
node/retention.py ``verify_chain``, ``lastmile node purge``).

Each event must follow the one before it: its ``seq`` one more (none missing), its ``prev`` the
hash before it, its body parse and hash to its ``hash`` (a redacted stub only where the caller
allows one: the station's retention purge, a give-back), its key be one the author had on record
and its signature verify over the hash. A log edited on disk (a row deleted, a body changed, a
signature swapped) fails here, whoever did it and whatever the projections say.

A deleted *last* event leaves a shorter chain that is still whole. So a walk also checks the heads
an earlier walk recorded (``Checkpoint``): the stream must still reach that ``seq``, with the same
hash there. The caller keeps them (the county in ``selfcheck_heads``).

``rows`` reads a stream in pages on the caller's connection (a read-only one); nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from crypto import canonical
from crypto.errors import BadEncoding, BadSignature
from crypto.keys import key_id, unb64, verify
from sync import log
from sync.law import retention
from sync.law.errors import N_
from sync.log import Event

#: What can be wrong, each with the sentence shown for it (translated on the pages).
PROBLEMS = {
    "missing": N_("Events %(first)d to %(last)d are missing."),
    "unlinked": N_("This event does not link to the event before it."),
    "unreadable": N_("This event's body cannot be read."),
    "unknown_key": N_("This event is signed with a key not on record for its author."),
    "bad_signature": N_("This event's signature does not verify."),
    "altered": N_("This event's body does not match its hash: it was changed after it was signed."),
    "truncated": N_("The events after #%(head)d are missing: an earlier check saw this log reach #%(seen)d."),
    "rewritten": N_("This is not the event an earlier check saw at this number."),
}
PAGE = 2000                 # rows read per query
COLS = "stream, seq, prev, hash, author, kind, at, body, sig, key_id"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int
    hash: str
    at: str = ""


@dataclass(slots=True)
class Walk:
    stream: str
    events: int = 0
    redacted: int = 0
    head: int = 0
    head_hash: str = log.GENESIS
    problems: list[dict[str, Any]] = field(default_factory=list)

    def problem(self, seq: int, what: str, **params: Any) -> None:
        self.problems.append({"stream": self.stream, "seq": seq, "what": what, "params": params})


def describe(problem: Mapping[str, Any]) -> str:
    """One problem in English (the CLI, the log)."""
    return f"{problem['stream']}#{problem['seq']}: " + PROBLEMS[problem["what"]] % problem.get("params", {})


def rows(db: Any, stream: str) -> Iterable[Any]:
    """Every row of ``stream`` as stored (``COLS``), in seq order, ``PAGE`` at a time, on the
    caller's connection (a reader's: one snapshot for the whole walk)."""
    after = 0
    while True:
        page = db.execute(f"SELECT {COLS} FROM _sync_events WHERE stream = ? AND seq > ? ORDER BY seq LIMIT ?",
                          (stream, after, PAGE)).fetchall()
        yield from page
        if len(page) < PAGE:
            return
        after = int(page[-1][1])


def walk(stream: str, stored: Iterable[Any], keys: Mapping[str, str], *,
         redacted_ok: Callable[[int], bool] = lambda seq: False, seen: Checkpoint | None = None) -> Walk:
    """Check the rows ``stored`` of ``stream`` (``COLS``, in seq order) with the author's key history
    ``keys`` (key id -> public sign key). ``redacted_ok(seq)``: whether a redacted stub is allowed
    at ``seq``. ``seen``: the head an earlier walk recorded."""
    out = Walk(stream)
    prev_seq, prev_hash = 0, log.GENESIS
    at_seen: str | None = None
    for r in stored:
        seq, h = int(r[1]), str(r[3])
        out.events += 1
        if seq != prev_seq + 1:
            out.problem(seq, "missing", first=prev_seq + 1, last=seq - 1)
        elif r[2] != prev_hash:
            out.problem(seq, "unlinked")
        prev_seq, prev_hash = seq, h
        if seen is not None and seq == seen.seq:
            at_seen = h
        try:
            body = canonical.loads(str(r[7]).encode())
        except Exception:  # noqa: BLE001 - edited into junk: reported, never a crash
            out.problem(seq, "unreadable")
            continue
        ev = Event(stream=r[0], seq=seq, prev=r[2], hash=h, author=r[4], kind=r[5], at=r[6], body=body,
                   sig=r[8], key=r[9])
        sign = keys.get(ev.key)
        try:
            if sign is None or key_id(unb64(sign)) != ev.key:
                out.problem(seq, "unknown_key")
                continue
            verify(sign, unb64(ev.sig), log.SIG_CONTEXT + h.encode())
        except (BadSignature, BadEncoding, ValueError):
            out.problem(seq, "bad_signature")
            continue
        if log.content_hash(ev.content()) != h:
            if retention.is_redacted(body) and redacted_ok(seq):
                out.redacted += 1
            else:
                out.problem(seq, "altered")
    out.head, out.head_hash = prev_seq, prev_hash
    if seen is not None and seen.seq > 0:
        if prev_seq < seen.seq:
            out.problem(prev_seq, "truncated", head=prev_seq, seen=seen.seq)
        elif at_seen != seen.hash:
            out.problem(seen.seq, "rewritten")
    return out
