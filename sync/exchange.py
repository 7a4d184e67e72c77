"""One exchange = one sealed push from a station and one sealed answer from the county.

The push carries the station's upstream events beyond what the county confirmed, and how far
the station holds the downstream log. The answer carries the county's cumulative ack of the
upstream log and the downstream events beyond what the station holds. Both are envelopes
(crypto.envelope), so the same bytes can travel over HTTP or on a USB stick.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from crypto import envelope
from crypto.errors import CryptoError
from crypto.keys import Identity, PublicKeys
from sync import inbox, log, recovery
from sync import payload as payload_fields
from sync.errors import BadEvent, CursorAhead, StaleAnswer
from sync.inbox import Apply
from sync.law.errors import N_, RuleError
from sync.log import Conn

logger = logging.getLogger("lastmile.sync")
BATCH_EVENTS = 500


@dataclass(frozen=True, slots=True)
class Push:
    blob: bytes
    first: int
    last: int          # 0 when the push carries no events (a pull)
    id: str = ""       # the envelope header's id: the county's answer names it in ``in_reply_to``


KEEP_SENT = 200        # ids of network pushes remembered (USB pushes are kept for good)


@dataclass(slots=True)
class StationResult:
    sent: int = 0
    acked: int = 0
    received: int = 0
    forks: list[int] = field(default_factory=list)
    repairs: list[list[Any]] = field(default_factory=list)
    more: bool = False
    server_time: str | None = None
    healed: int = 0                                   # own events stored from the county's copy
    resequenced: list[tuple[int, int]] = field(default_factory=list)   # own events re-appended: (old, new)


@dataclass(frozen=True, slots=True)
class HealHooks:
    """The station's projections of its own upstream events while it heals (node/station.py)."""
    on_own: Apply                                    # a county copy stored: project it
    on_displace: Apply                               # an own event set aside
    on_resequence: Callable[[Conn, log.Event, log.Event], None]    # (old, new): re-appended


# seq -> QR text for the document events among a push's events (node/verify.qr_texts)
QrTexts = Callable[[Sequence[log.Event]], Mapping[int, str]]
# the station's ``applied`` report (PROTOCOL.md §6), read in the transaction that builds the push
Applied = Callable[[Conn], Mapping[str, Any]]
# county: (db, station, [(seq, hash of the pushed event, QR text)]) -> how many it kept
TakeQr = Callable[[Conn, str, list[tuple[int, str, str]]], int]

# county: (db, station, the push asks for the station's own log back) -> may it be returned
MayReturn = Callable[[Conn, str, bool], bool]
# county: (db, event of up/<station>) -> the event as it may go back (a purged case: its stub)
RedactUp = Callable[[Conn, log.Event], log.Event]
#: the answer header's ``up_refused`` (PROTOCOL.md §6): the county gives a station its own log back
#: only after the station was marked restored or replaced at the county
RESTORE_NOT_MARKED = "restore_not_marked"
UP_REFUSED = "up_refused"          # _sync_status at the station: the code of the last refusal, or ""
#: the answer header's ``down_refused`` (PROTOCOL.md §6): a push whose ``down_have`` is below what the
#: station once confirmed of ``down/<station>`` asks for the county's events to it again; without a
#: restore mark the county sends from what was confirmed instead
DOWN_REFUSED = "down_refused"

NO_HOOKS = HealHooks(lambda _db, _ev: None, lambda _db, _ev: None, lambda _db, _old, _new: None)


# the county's key history, as a station holds it (PROTOCOL.md §3, §10) ------------------------

COUNTY_KEYS = "county_keys"          # _sync_status: JSON list, oldest first
ROTATED = "county.keys_rotated"


def county_keys(db: Conn, enrolled: PublicKeys | None = None) -> list[dict[str, Any]]:
    """Station: every county key set it holds, oldest first: ``sign``, ``enc``, ``sign_id``,
    ``enc_id``, ``valid_from`` (the first down/<station> seq it may sign) and ``added_at``.
    ``enrolled`` (the key set exchanged at enrolment) is first if the record predates the history."""
    raw = log.get_status(db, COUNTY_KEYS)
    history: list[dict[str, Any]] = json.loads(raw) if raw else []
    if enrolled is not None and not any(k["sign_id"] == enrolled.sign_id for k in history):
        history.insert(0, _entry(enrolled, 1, ""))
    return history


def _entry(keys: PublicKeys, valid_from: int, at: str) -> dict[str, Any]:
    return {"sign": keys.sign, "enc": keys.enc, "sign_id": keys.sign_id, "enc_id": keys.enc_id,
            "valid_from": valid_from, "added_at": at}


def add_county_keys(db: Conn, keys: PublicKeys, valid_from: int, enrolled: PublicKeys | None = None) -> None:
    """Station: put a county key set on record (at enrolment, or from a verified county.keys_rotated)."""
    history = county_keys(db, enrolled)
    if any(k["sign_id"] == keys.sign_id for k in history):
        return
    history.append(_entry(keys, valid_from, log.utcnow()))
    log.set_status(db, COUNTY_KEYS, json.dumps(history))


def county_sign_keys(db: Conn, enrolled: PublicKeys) -> dict[str, str]:
    """Station: the county's sign keys by key id, to verify its envelopes and events by the id they name."""
    return {k["sign_id"]: k["sign"] for k in county_keys(db, enrolled)}


def county_newest(db: Conn, enrolled: PublicKeys) -> PublicKeys:
    """Station: the county's newest key set: pushes and scans are sealed to its ``enc`` key."""
    k = county_keys(db, enrolled)[-1]
    return PublicKeys(sign=k["sign"], enc=k["enc"])


def county_signing(db: Conn, enrolled: PublicKeys) -> PublicKeys:
    """Station: the newest ``enc`` key, and the sign key the county signed its last answer with (what
    it signs a scan answer with too): the old one until it has seen us hold its rotation event."""
    newest, signs = county_newest(db, enrolled), county_sign_keys(db, enrolled)
    used = log.get_status(db, "county_from_key")
    return PublicKeys(sign=signs.get(used or "", enrolled.sign), enc=newest.enc)


def rotated_keys(ev: log.Event) -> PublicKeys:
    """The new keys a ``county.keys_rotated`` (or ``station.keys_rotated``) event announces: its body
    is exactly ``sign`` and ``enc``, two 32-byte public keys. Raises ValueError otherwise."""
    if set(ev.body) != {"sign", "enc"}:
        raise ValueError("the body must be exactly sign and enc")
    try:
        return PublicKeys.from_dict(ev.body)
    except CryptoError as exc:
        raise ValueError(str(exc)) from None


def _learn_in_order(events: list[Any], stream: str, county_name: str, keys: dict[str, str]) -> None:
    """Verify the county's events in seq order, each with the keys known at that point: a
    ``county.keys_rotated`` verified under a key we trust makes its new key known for the events
    after it (it is put on record only when stored). Raises BadEvent at the first that fails."""
    parsed = sorted((log.Event.from_wire(e) for e in events), key=lambda e: e.seq)
    for ev in parsed:
        if ev.stream != stream or ev.author != county_name:
            raise BadEvent(f"event {ev.stream}#{ev.seq} does not belong to stream {stream}")
        ev.check(keys)
        if ev.kind == ROTATED:
            try:
                new = rotated_keys(ev)
            except ValueError:
                continue                     # set aside when stored (inbox), teaches no key
            keys.setdefault(new.sign_id, new.sign)


def build_push(db: Conn, *, me: Identity, station: str, county: PublicKeys, county_name: str,
               limit: int = BATCH_EVENTS, max_bytes: int = 4 * 1024 * 1024, after: int | None = None,
               bundle: str | None = None, qr_texts: QrTexts | None = None,
               applied: Applied | None = None) -> Push:
    """Seal the upstream events after ``after`` (default: after the county's last ack).

    ``qr_texts(events)``: what goes beside the events (the station's: seq -> the QR text it prints
    for that document event, PROTOCOL.md §6 ``qr_texts``); nothing is added if it gives none.
    ``applied(db)``: how far the station has applied the county's events and catalogue (§6 ``applied``).

    The push's envelope id is recorded (``_sync_sent``; with the id of the USB ``bundle`` that
    carries it, if any) and becomes the status ``last_push``: an answer is taken only if it names
    a push this station sent, and a network answer only if it names the push just sent."""
    stream = log.up(station)
    start = log.acked(db, stream) if after is None else after
    heal_from = recovery.heal_from(db)
    # While healing from the county's copy, send none of our events: the county holds others at
    # their numbers; ours go again, re-sequenced, once healed (PROTOCOL.md §8.5).
    events = [] if heal_from is not None else log.events_after(db, stream, start, limit, max_bytes)
    down_have, _ = log.head(db, log.down(station))
    first, last = (events[0].seq, events[-1].seq) if events else (0, 0)
    payload = {"events": [e.to_wire() for e in events], "down_have": down_have,
               "up_high": log.head(db, stream)[0], "station_time": log.utcnow()}
    texts = qr_texts(events) if qr_texts is not None and events else {}
    if texts:
        pushed = {e.seq for e in events}
        payload["qr_texts"] = {str(seq): text for seq, text in sorted(texts.items()) if seq in pushed}
    if applied is not None:
        payload["applied"] = dict(applied(db))
    confirm = recovery.to_confirm(db)
    if confirm:
        payload["confirm"] = confirm           # the reports of the last answer are recorded here
    if heal_from is not None:
        payload["up_from"] = heal_from         # send me your copies of my events from here
    returned = recovery.to_return(db, log.down(station), max_bytes=max_bytes // 2)
    if returned:
        payload["down_return"] = [e.to_wire() for e in returned]   # the county lost these: give them back
    # The link, not the CPU, is a station's bottleneck: compress as hard as zstd goes.
    blob = envelope.seal(payload, sender=me, sender_name=station, recipient=county, recipient_name=county_name,
                         kind="push", extra={"first": first, "last": last}, level=19)
    push_id = envelope.parse(blob).header["id"]
    db.execute("INSERT INTO _sync_sent (id, bundle, first, last, at) VALUES (?, ?, ?, ?, ?)",
               (push_id, bundle, first, last, log.utcnow()))
    db.execute("DELETE FROM _sync_sent WHERE bundle IS NULL AND id NOT IN (SELECT id FROM _sync_sent"
               " WHERE bundle IS NULL ORDER BY at DESC LIMIT ?)", (KEEP_SENT,))
    if bundle is None:
        log.set_status(db, "last_push", push_id)
    # The USB bundle exported last, with no network push since: its answers are the newest word of
    # the county, so they may move the cursor back (a county restored, a USB-only station).
    log.set_status(db, "last_export", bundle or "")
    return Push(blob, first, last, push_id)


def sent_push(db: Conn, push_id: object) -> tuple[str | None] | None:
    """(bundle id or None,) if this station sent a push with this envelope id, else None."""
    if not isinstance(push_id, str):
        return None
    row = db.execute("SELECT bundle FROM _sync_sent WHERE id = ?", (push_id,)).fetchone()
    return (row[0],) if row else None


def sent_bundle(db: Conn, bundle_id: str) -> int | None:
    """How many pushes this station exported in the USB bundle ``bundle_id``; None if none."""
    row = db.execute("SELECT count(*) FROM _sync_sent WHERE bundle = ?", (bundle_id,)).fetchone()
    return int(row[0]) if row and row[0] else None


def apply_answer(db: Conn, blob: bytes, *, me: Identity, station: str, county: PublicKeys,
                 county_name: str, apply: Apply, fresh: bool = False, expect: str | None = None,
                 bundle: str | None = None, hooks: HealHooks = NO_HOOKS,
                 own_keys: dict[str, str] | None = None) -> StationResult:
    """Open the county's answer, move the upstream cursor, and take the downstream events.

    ``fresh`` says the answer comes straight back from the push just sent (HTTP), not from a
    USB stick that may be old: it must answer that very push (``expect``, default the status
    ``last_push``), and only then may it move the cursor back or set the clock offset. Any other
    answer must name a push this station sent (of ``bundle``, when given) and is applied only in
    the never-rewinding way. Raises StaleAnswer, changing nothing, otherwise."""
    # Signed by any county key we hold (the one its from_key names); refused (BadSignature) otherwise.
    county_signs = county_sign_keys(db, county)
    header, payload = envelope.open_sealed(blob, recipient=me, recipient_name=station, sender=county_signs)
    if header["kind"] != "answer" or header["from"] != county_name or not isinstance(payload, dict):
        raise BadEvent("not an answer from our county")
    payload_fields.check("answer", payload)      # only known top-level keys (sync/payload.py)
    ack, events = payload.get("ack"), payload.get("events")
    if type(ack) is not int or ack < 0 or not isinstance(events, list):
        raise BadEvent("answer lacks ack or events")
    reply_to = payload.get("in_reply_to")
    if header.get("in_reply_to") != reply_to:
        raise BadEvent("the answer's header and payload name different pushes")
    if fresh:
        wanted = expect if expect is not None else log.get_status(db, "last_push")
        if not wanted or reply_to != wanted:
            raise StaleAnswer(f"the answer names push {reply_to!r}, not the push just sent ({wanted!r}):"
                              " a replayed or misrouted answer")
    else:
        sent = sent_push(db, reply_to)
        if sent is None:
            raise StaleAnswer(f"the answer names push {reply_to!r}, which this station never sent"
                              " (an answer to an export made before a restore?)")
        if bundle is not None and sent[0] != bundle:
            raise StaleAnswer(f"push {reply_to!r} was not in the exported bundle this answer file names")
    up_stream = log.up(station)
    before = log.acked(db, up_stream)
    # Self-heal first (a restored station, a new PC): our own events from the county's copy, so
    # that the decisions among the downstream events below find their applications.
    keys = {k: v for k, v in (payload.get("up_keys") or {}).items() if isinstance(k, str) and isinstance(v, str)}
    keys.update(own_keys or {})
    keys[me.public.sign_id] = me.public.sign
    healed = recovery.heal(db, me=me, station=station, county_high=payload.get("up_high"),
                           county_hash=payload.get("up_hash"), returned=payload.get("up_return"), keys=keys,
                           on_own=hooks.on_own, on_displace=hooks.on_displace, on_resequence=hooks.on_resequence)
    # The county gives our own log back only once we are marked restored at the county (§6, §8.5):
    # behind it and refused, we say so on the sync page and do not ask again in this run.
    refused = header.get(UP_REFUSED) if isinstance(header.get(UP_REFUSED), str) else ""
    log.set_status(db, UP_REFUSED, "" if healed.consistent else refused[:100])
    if healed.consistent:
        high, _ = log.head(db, up_stream)
        if ack > high:
            raise CursorAhead(f"county confirms {ack} events but this station wrote only {high}")
        now_acked = log.acked(db, up_stream)
        latest_export = bundle is not None and bundle == log.get_status(db, "last_export")
        if (fresh or latest_export) and ack < now_acked:
            # The county answering this very push (or the last bundle exported, with no network push
            # since) holds less than it once confirmed: it was restored from a backup. Send the rest
            # again (the county takes repeats as no-ops).
            log.rewind_acked(db, up_stream, ack)
            log.set_status(db, "county_rewound", f"{now_acked}->{ack} at {log.utcnow()}")
        log.set_acked(db, up_stream, ack)
    # The county's events that do not extend ours are not a fork: a county restored from a backup
    # wrote new ones at numbers we hold; we give ours back from there and it re-appends its own (§8.5).
    # Each by the key its ``key`` names, among those known before it in seq order (§10). The county's
    # older sign keys it vouches for in this answer (signed by a key we hold) verify older events
    # (a new PC enrolled after a county rotation); they are never sealed to nor trusted for envelopes.
    vouched = payload.get("down_keys") or {}
    verify_with = {k: v for k, v in vouched.items() if isinstance(k, str) and isinstance(v, str)}
    verify_with.update(county_signs)
    _learn_in_order(events, log.down(station), county_name, verify_with)

    def take(db: Conn, ev: log.Event) -> None:
        if ev.kind != ROTATED:
            apply(db, ev)
            return
        try:
            new = rotated_keys(ev)
        except ValueError:
            raise RuleError(N_("The keys the county announced are not two valid public keys.")) from None
        add_county_keys(db, new, ev.seq + 1, county)
        logger.warning("the county announced new keys %s at %s#%d", new.sign_id, ev.stream, ev.seq)

    got = inbox.accept(db, stream=log.down(station), author=county_name, author_sign_key=verify_with,
                       events=events, apply=take, diverge="stop")
    # We hold less of the county's events than we once confirmed (``down_confirmed``: restored from a
    # backup) and the county, with no restore mark for us, sends only what comes after that: said
    # like ``up_refused``, and not asked again in this run. Ignored when we do hold that much (an old
    # USB answer file, taken after a network sync had moved on).
    confirmed = header.get("down_confirmed")
    held_back = (isinstance(header.get(DOWN_REFUSED), str) and type(confirmed) is int
                 and log.head(db, log.down(station))[0] < confirmed)
    if held_back:
        log.set_status(db, UP_REFUSED, str(header[DOWN_REFUSED])[:100])
    log.set_status(db, "county_from_key", header["from_key"])
    down_high = payload.get("down_high", 0)
    recovery.note_county_down(db, log.down(station), down_high, payload.get("down_from"), payload.get("down_hash"),
                              got.diverged_at)
    # Every report the station has not confirmed yet comes in every answer: record and confirm them.
    repairs = recovery.record_reports(db, up_stream, payload.get("repairs"), payload.get("forks"))
    # Only the answer to the push just sent says what the county's clock reads now.
    server_time = payload.get("server_time") if fresh and isinstance(payload.get("server_time"), str) else None
    return StationResult(acked=max(0, log.acked(db, up_stream) - before), received=got.stored + healed.stored,
                         forks=got.forks, repairs=repairs,
                         more=not held_back and (bool(payload.get("more")) or (isinstance(down_high, int) and down_high > got.high)
                                                 or (recovery.heal_from(db) is not None and not refused)),
                         server_time=server_time, healed=healed.stored, resequenced=healed.resequenced)


def answer_push(db: Conn, blob: bytes, *, me: Identity, county_name: str,
                station_keys: Callable[[str], PublicKeys], apply: Apply,
                limit: int = BATCH_EVENTS, max_size: int = envelope.MAX_ENVELOPE,
                take_back: Apply | None = None,
                key_history: Callable[[str], dict[str, str]] | None = None,
                held: Sequence[Identity] = (), own_keys: Mapping[str, str] | None = None,
                signer: Callable[[Conn, str, int | None], Identity] | None = None,
                take_qr: TakeQr | None = None, may_return: MayReturn | None = None,
                redact_up: RedactUp | None = None) -> tuple[bytes, dict[str, Any]]:
    """County side: verify and take a push, return (sealed answer, summary for logs and status).

    After the county rotated its keys (PROTOCOL.md §10): ``held`` are its retired identities (a push
    sealed to any X25519 key it still holds opens), ``own_keys`` its sign keys by id (events a station
    gives back verify by the key they name), and ``signer(db, station, down_have)`` the identity that
    signs for this station: the old one until the station holds the rotation event (``down_have``;
    None: by what it confirmed before), then ``me``. ``take_qr`` takes the push's ``qr_texts``
    (checked for form here, against the stored events there) once its events are stored.

    ``may_return(db, station, needed)``: whether the county may give the station its own log back
    (``up_return``): asked with ``needed=True`` when the push asks for it (``up_from``, ``up_high``
    below the county's head, or a push that does not extend the county's copy); when it says no, the
    answer carries no ``up_return`` and its header says why (``up_refused``: ``restore_not_marked``,
    PROTOCOL.md §6, §8.5). Asked with ``needed=False`` otherwise (the county may then end a restore
    mark that was used). ``redact_up(db, event)``: the event as it may be returned (a case purged at
    the station under the retention period goes back as its redacted stub, §8.7). The same gate holds
    for ``down/<station>``: a push whose ``down_have`` is below what the station once confirmed asks
    for the county's events to it again (a restored station, or a copy of its disk); without the
    mark they are sent from what was confirmed, and the header says ``down_refused``.

    Raises EnvelopeError or a sync Rejected before anything is stored if the push is not
    well-formed, not for us, or not from a known, active station."""
    parsed = envelope.parse(blob, max_size=max_size)
    station = parsed.header["from"]
    keys = station_keys(station)           # raises UnknownStation / RevokedStation
    header, payload = envelope.open_sealed(blob, recipient=[me, *held], recipient_name=county_name, sender=keys,
                                           max_size=max_size)
    if header["kind"] != "push" or not isinstance(payload, dict):
        raise BadEvent("not a push")
    payload_fields.check("push", payload)        # only known top-level keys (sync/payload.py)
    events, down_have = payload.get("events"), payload.get("down_have")
    if not isinstance(events, list) or type(down_have) is not int or down_have < 0:
        raise BadEvent("push lacks events or down_have")
    payload_fields.heal_numbers(payload)         # up_high ≥ 0; up_from ≥ 1 and only with no events (§6)
    texts = payload_fields.qr_texts(payload)     # its exact form, before anything is stored
    applied = payload_fields.applied(payload)
    # Downstream events the station gives back (the county lost them in a restore) come first:
    # they carry decisions that the upstream events behind them (hand-outs) build on.
    returned, down_from = recovery.take_back(db, log.down(station), county_name,
                                             dict(own_keys) if own_keys else me.public.sign,
                                             payload.get("down_return"), take_back,
                                             signer(db, station, None) if signer else me)
    history = key_history(station) if key_history else {keys.sign_id: keys.sign}
    # A push that does not extend our copy of its log is a station restored from a backup (or a
    # twin): nothing of it is stored from there; the answer gives the station our copy to heal.
    got = inbox.accept(db, stream=log.up(station), author=station, author_sign_key=history,
                       events=events, apply=apply, diverge="stop")
    up_stream = log.up(station)
    kept_qr = 0
    if texts and take_qr is not None:
        hashes = {e["seq"]: e["hash"] for e in events}
        kept_qr = take_qr(db, station, [(seq, hashes[seq], text) for seq, text in texts.items()])
    up_high_c, up_hash_c = log.head(db, up_stream)
    up_from, station_high = payload.get("up_from"), payload.get("up_high")
    start = (up_from if up_from is not None and up_from >= 1 else got.diverged_at if got.diverged_at
             else station_high + 1 if type(station_high) is int and 0 <= station_high < up_high_c else None)
    down_stream = log.down(station)
    down_high, down_hash = log.head(db, down_stream)
    confirmed = min(log.acked(db, down_stream), down_high)      # the most it ever said it holds
    send_from = down_have
    refused_up = refused_down = None
    if may_return is not None and not may_return(db, station, start is not None or down_have < confirmed):
        # A station's records go back only after a restore mark (PROTOCOL.md §8.5): its own log
        # not at all, the county's events to it not again below what it confirmed.
        if start is not None:
            refused_up, start = RESTORE_NOT_MARKED, None
        if down_have < confirmed:
            refused_down, send_from = RESTORE_NOT_MARKED, confirmed
    returned_up = recovery.up_return(db, up_stream, start)
    if redact_up is not None:
        returned_up = [redact_up(db, e) for e in returned_up]
    if got.diverged_at:
        logger.warning("%s: the push does not extend the county's copy from #%d (a station restored from a"
                       " backup?); it heals from the county's copy", up_stream, got.diverged_at)
        db.execute("INSERT INTO _sync_recoveries (stream, at, what, first, last) VALUES (?, ?, ?, ?, ?)",
                   (up_stream, log.utcnow(), "up_diverged", got.diverged_at, up_high_c))
    recovery.take_confirm(db, log.up(station), payload.get("confirm"))
    repairs, forks = recovery.open_reports(db, log.up(station))
    # A station holding more than the county wrote: the county was restored from an old backup.
    # Not an error: the answer's down_high tells the station to give the rest back (down_return).
    log.set_acked(db, down_stream, min(down_have, down_high))
    out = log.events_after(db, down_stream, send_from, limit)
    answer = {"ack": got.high, "events": [e.to_wire() for e in out], "down_high": down_high,
              "forks": forks, "repairs": repairs, "server_time": log.utcnow(),
              "more": (bool(out) and out[-1].seq < down_high) or (bool(returned_up) and returned_up[-1].seq < up_high_c),
              "in_reply_to": header["id"], "up_high": up_high_c, "up_hash": up_hash_c, "down_hash": down_hash}
    if down_from is not None:
        answer["down_from"] = down_from        # send your copy of down/<station> from here (§8.5)
    if returned_up:
        answer["up_return"] = [e.to_wire() for e in returned_up]
        answer["up_keys"] = history
    answer_signer = signer(db, station, down_have) if signer else me
    if own_keys and any(e.key != answer_signer.public.sign_id for e in out):
        # Events signed by another of our keys: name them, so a station that never held that key
        # (a new PC enrolled after a rotation) can verify them (§10).
        answer["down_keys"] = {e.key: own_keys[e.key] for e in out if e.key in own_keys}
    sealed = envelope.seal(answer, sender=answer_signer,
                           sender_name=county_name, recipient=keys,
                           recipient_name=station, kind="answer",
                           extra={"ack": got.high, "first": out[0].seq if out else 0,
                                  "last": out[-1].seq if out else 0, "in_reply_to": header["id"],
                                  **({"up_refused": refused_up} if refused_up else {}),
                                  **({"down_refused": refused_down, "down_confirmed": confirmed} if refused_down else {})})
    up_high = payload.get("up_high")
    summary = {"station": station, "station_time": payload.get("station_time"), "stored": got.stored,
               "duplicates": got.duplicates, "qr_texts": kept_qr, "ack": got.high, "forks": got.forks,
               "repairs": got.repairs,
               "sent_down": len(out), "gap_at": got.gap_at, "taken_back": returned,
               "diverged_at": got.diverged_at, "up_returned": len(returned_up), "up_refused": refused_up,
               "down_refused": refused_down,
               "down_behind": max(0, down_have - down_high), "down_have": down_have, "applied": applied,
               "up_waiting": max(0, up_high - got.high) if type(up_high) is int else None}
    return sealed, summary

