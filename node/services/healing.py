"""Self-heal at the station: our own events the county gives back (a restored
station, a replacement PC, a cloned one) rebuild their rows with the same projections that wrote
them, events set aside or re-numbered keep their rows in step, and a restored station marks
itself so its next receipt number starts a new block (PROTOCOL.md §8.5)."""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING

from node.services import projections
from node.services import ratings
from sync import exchange, log
from sync.law import transitions
from sync.log import Event
from sync.law.transitions import Status

if TYPE_CHECKING:
    from node.services.desk import Desk


def hooks(st: Desk) -> exchange.HealHooks:
    """What sync/exchange.py calls with our own events the county gives back."""
    return exchange.HealHooks(lambda db, ev: _project_own(st, db, ev), lambda db, ev: _displace_own(st, db, ev),
                              lambda db, old, new: _resequence_own(st, db, old, new))

def _project_own(st: Desk, db: sqlite3.Connection, ev: Event) -> None:
    """One of our events the county gave back (a restored station, a new PC): rebuild its row,
    with the decision already among our downstream events."""
    b = ev.body
    _mark_restored(st, db)
    if ev.kind in transitions.APPLICATION_KINDS:
        held = db.execute("SELECT seq, body FROM applications WHERE id = ?", (b["id"],)).fetchone()
        if held and json.loads(held[1]) == b:       # this very fact, re-numbered or displaced
            db.execute("UPDATE applications SET seq = ?, event_hash = ?, event_sig = ?, status = CASE status"
                       " WHEN 'accepted' THEN 'received' ELSE status END WHERE id = ?",
                       (ev.seq, ev.hash, ev.sig, b["id"]))
        elif held and abs(held[0]) > ev.seq:
            pass    # held as a later fact (the acceptance that completed this correction notice)
        else:       # not held, or held as an earlier fact (the correction notice this acceptance completes)
            status = Status.RECEIVED if ev.kind == transitions.ACCEPTED else projections.TAKEN_STATUS[ev.kind]
            st.store.insert_application(db, ev, status)
            decided = db.execute("SELECT seq FROM _sync_events WHERE stream = ? AND kind = 'case.decided'"
                                 " AND json_extract(body, '$.id') = ? ORDER BY seq DESC LIMIT 1",
                                 (log.down(st.code), b["id"])).fetchone()
            if decided:
                st.apply_down(db, log.get(db, log.down(st.code), int(decided[0])))  # type: ignore[arg-type]
    elif ev.kind == transitions.HAND_OUT:
        projections.handed_out(st.store, db, ev)      # the same projection as when it was written
    elif ev.kind == transitions.SUPPLEMENTED:
        projections.supplemented(st.store, db, ev)
    elif ev.kind == transitions.RATED:
        ratings.project_own(st, db, ev)

def _mark_restored(st: Desk, db: sqlite3.Connection) -> None:
    """The county holds events of ours we do not (a restore, a replacement PC) or others at our
    numbers (a cloned PC): receipt numbers the lost or other copy issued may be unknown here, so
    the next one starts a new block (``_receipt_no``). Not again while the heal of a restore
    whose block was already taken goes on (``restore_jumped``, cleared once healed): that block
    was started after the restore was known, so nothing unknown can be in it."""
    if not st.store.meta("restored_at") and not st.store.meta("restore_jumped"):
        st.store.set_meta(db, "restored_at", log.utcnow())

def _displace_own(st: Desk, db: sqlite3.Connection, ev: Event) -> None:
    """Set aside: the county holds another event at its number. Its application stays, off the
    numbered log (seq < 0) until it is re-appended."""
    _mark_restored(st, db)
    if ev.kind in transitions.APPLICATION_KINDS:
        db.execute("UPDATE applications SET seq = ?, status = CASE status WHEN 'received' THEN 'accepted'"
                   " ELSE status END WHERE id = ? AND seq = ?", (-ev.seq, ev.body["id"], ev.seq))

def _resequence_own(st: Desk, db: sqlite3.Connection, old: Event, new: Event) -> None:
    if old.kind in transitions.APPLICATION_KINDS:
        db.execute("UPDATE applications SET seq = ?, event_hash = ?, event_sig = ? WHERE id = ? AND seq IN (?, ?)",
                   (new.seq, new.hash, new.sig, old.body["id"], old.seq, -old.seq))
    elif old.kind == transitions.SUPPLEMENTED:
        db.execute("UPDATE applications SET last_seq = ? WHERE id = ? AND last_seq = ?",
                   (new.seq, old.body["id"], old.seq))
