"""One history per case (电子监察): every fact in a station's two streams whose body names the case.

Both apps use this: the station on its application page and API, the county on its case page and
API. Each entry's signature is checked again now, with the key history the caller passes (the
station's keys and the county's), so an event edited in the database shows as ``invalid``.

Generic over kinds: a kind this module has no label for gets a generic one, never an error. Labels
are message ids (``N_``) with parameters; the app translates them (``translate``). Works on any
connection with ``execute(sql, params)`` (portable SQL: ``LIKE`` on the canonical body, then an
exact check of ``body.id`` in Python). Blocking: call it in a worker thread.
"""

from __future__ import annotations

import heapq
from typing import Any, Callable, Iterable, Mapping

from crypto import canonical
from sync import log, retention
from sync.errors import BadEvent
from sync.law import transitions
from sync.law.errors import N_

#: a label per kind, for a list of what happened to a case
LABELS: dict[str, str] = {
    transitions.ACCEPTED: N_("Application accepted"),
    transitions.CORRECTION_NOTICE: N_("Correction notice issued"),
    transitions.REFUSED: N_("Application refused"),
    transitions.CASE_DECIDED: N_("County decision"),
    transitions.HAND_OUT: N_("Result handed out"),
    transitions.SUPPLEMENTED: N_("Supplement recorded"),
    transitions.RATED: N_("Rated by the citizen"),
    transitions.RATING_ANSWERED: N_("County answered the rating"),
    transitions.STATION_KEYS_ROTATED: N_("Station keys rotated"),
    transitions.COUNTY_KEYS_ROTATED: N_("County keys rotated"),
    transitions.CATALOG_PUBLISHED: N_("Catalogue published"),
}
GENERIC = N_("Event %(kind)s")
DECIDED_AS = N_("County decision: %(decision)s")

VALID, INVALID, MISSING = "valid", "invalid", "missing"
REDACTED = "redacted"       # personal data removed after the retention period (sync/retention.py)


def label_of(kind: str, body: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The message id and parameters that name this fact in a case's history."""
    if kind == transitions.CASE_DECIDED:
        status = transitions.DECISIONS.get(str(body.get("decision")))
        if status in transitions.STATE_LABELS:
            return DECIDED_AS, {"decision": transitions.STATE_LABELS[status]}
    if kind in LABELS:
        return LABELS[kind], {}
    return GENERIC, {"kind": str(kind)[:100]}


def events_naming(db: log.Conn, streams: Iterable[str], case_id: str) -> list[log.Event]:
    """Every stored event of ``streams`` whose body's ``id`` is ``case_id``: in seq order within a
    stream, the streams interleaved by the events' UTC times of writing."""
    needle = canonical.dumps({"id": case_id}).decode()[1:-1]          # "id":"<case id>", as stored
    pattern = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    per_stream: list[list[log.Event]] = []
    for stream in streams:
        found: list[log.Event] = []
        per_stream.append(found)
        rows = db.execute("SELECT stream, seq, prev, hash, author, kind, at, body, sig, key_id FROM _sync_events"
                          " WHERE stream = ? AND body LIKE ? ESCAPE '\\' ORDER BY seq", (stream, pattern)).fetchall()
        for r in rows:
            try:
                body = canonical.loads(r[7].encode())
            except Exception:  # noqa: BLE001 - a body edited into junk: shown as such, never a crash
                body = {"id": case_id, "unreadable": True}
            if isinstance(body, dict) and body.get("id") == case_id:
                found.append(log.Event(stream=r[0], seq=int(r[1]), prev=r[2], hash=r[3], author=r[4], kind=r[5],
                                       at=r[6], body=body, sig=r[8], key=r[9]))
    # Each stream stays in seq order (a wrong clock reorders nothing within it); the streams are
    # interleaved by the events' UTC times of writing.
    return list(heapq.merge(*per_stream, key=lambda e: e.at))


def signature_state(ev: log.Event, keys: Mapping[str, str], revoked: Callable[[log.Event], bool] | None = None) -> str:
    """``valid`` if the hash matches the content and the key the event names (in ``keys``, key id ->
    public sign key) verifies it; ``missing`` if there is no signature or that key is not on record
    here; ``redacted`` for a body replaced by its stub after the retention period whose signature
    over the recorded hash verifies; ``invalid`` otherwise (an edited body, a wrong signature, a key
    revoked before it was stored)."""
    if not ev.sig or ev.key not in keys:
        return MISSING
    if retention.is_redacted(ev.body):
        if not retention.signature_holds(ev, keys[ev.key]) or (revoked is not None and revoked(ev)):
            return INVALID
        return REDACTED
    try:
        ev.check(keys)
    except (BadEvent, ValueError, TypeError):
        return INVALID
    if revoked is not None and revoked(ev):
        return INVALID
    return VALID


def entry(ev: log.Event, *, signature: str, where: dict[str, str], received_at: str | None,
          set_aside: str | None = None) -> dict[str, Any]:
    """One line of a history, before translation (``label_id``, ``label_args``)."""
    b = ev.body
    by = b.get("by") if isinstance(b.get("by"), str) else b.get("agent") if isinstance(b.get("agent"), str) else ""
    at = b.get("at") if isinstance(b.get("at"), str) else ev.at
    label_id, label_args = label_of(ev.kind, b)
    return {"kind": ev.kind, "label_id": label_id, "label_args": label_args, "at": at, "received_at": received_at,
            "by": by, "where": where, "seq": ev.seq, "stream": ev.stream, "signature": signature,
            "set_aside": set_aside}


def translated(entries: list[dict[str, Any]], gettext: Callable[..., str]) -> list[dict[str, Any]]:
    """The entries with ``label`` in the reader's language (``gettext(message, **params)``); the
    parameters are message ids too and are translated first."""
    out = []
    for e in entries:
        args = {k: gettext(v) if isinstance(v, str) and k != "kind" else v for k, v in e["label_args"].items()}
        try:
            label = gettext(e["label_id"], **args) if args else gettext(e["label_id"])
        except (KeyError, TypeError, ValueError):
            label = e["label_id"]
        out.append({k: v for k, v in e.items() if k not in ("label_id", "label_args")} | {"label": label})
    return out

