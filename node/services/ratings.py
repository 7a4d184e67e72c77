"""The station's side of ratings (好差评) and of a case's history (电子监察).

A citizen rates a case once, after its result is handed out, or after a refusal or a correction
notice: ``application.rated`` (sync/law/ratings.py ``check_rating``, the transition table). A rating of 1
or 2 opens a follow-up at the county, whose answer comes down as ``rating.answered`` and is shown
on the case page and in the API. The ratings table is a projection of those two facts.
"""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any, Callable

from crypto.errors import CryptoError
from crypto.keys import PublicKeys, load_retired
from sync import exchange, log, recovery
from sync.law import facts, history, transitions
from sync.law.errors import N_, RuleError
from sync.law.ratings import MAX_COMMENT, check_rated_once
from sync.log import Event

if TYPE_CHECKING:
    from node.services.desk import Desk
    from node.store import Store

COLS = ("id", "score", "comment", "by", "at", "seq", "answer", "answered_by", "answered_department", "answered_at")

#: the five buttons of the rating screen, 1..5
SCORE_LABELS = {1: N_("Very dissatisfied"), 2: N_("Dissatisfied"), 3: N_("Fairly satisfied"), 4: N_("Satisfied"),
                5: N_("Very satisfied")}
NOT_RATABLE = N_("This case cannot be rated now: a case is rated after its result is handed out, or after a "
                 "refusal or a correction notice.")
RATABLE = (transitions.Status.HANDED_OUT, transitions.Status.REFUSED, transitions.Status.CORRECTION_NOTICE)
ALREADY_RATED = N_("This case has already been rated; a case is rated only once.")


class Refused(Exception):
    """A rating the station does not take: ``status`` (404, 409, 422), ``code``, a message id."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def held(db: Any, case_id: str) -> dict[str, Any] | None:
    row = db.execute(f"SELECT {', '.join(COLS)} FROM ratings WHERE id = ?", (case_id,)).fetchone()
    return dict(zip(COLS, row)) if row else None


# projections (node/services/projections.py registers them) -------------------------------------------------

def rated(store: Store, db: sqlite3.Connection, ev: Event) -> None:
    """Our own ``application.rated``: the case must allow it (state) and hold no rating yet (once)."""
    b = ev.body
    row = db.execute("SELECT status FROM applications WHERE id = ?", (b["id"],)).fetchone()
    if row is None:
        raise RuleError(N_("%(fact)s names case %(id)s, which the county does not hold."),
                        fact=transitions.FACT_LABELS[transitions.RATED], id=b["id"])
    facts.next_state(facts.county_state(row[0]), facts.RATED, case_id=b["id"])
    check_rated_once(b["id"], held(db, b["id"]))
    db.execute("INSERT INTO ratings (id, score, comment, by, at, seq) VALUES (?, ?, ?, ?, ?, ?)",
               (b["id"], b["score"], b["comment"], b["by"], b["at"], ev.seq))


def answered(store: Store, db: sqlite3.Connection, ev: Event) -> None:
    """The county's ``rating.answered``: shown with the rating (the county sends only what it allowed)."""
    b = ev.body
    cur = db.execute("UPDATE ratings SET answer = ?, answered_by = ?, answered_department = ?, answered_at = ?"
                     " WHERE id = ?", (b.get("answer", ""), b.get("by", ""), b.get("department", ""),
                                       b.get("at", ""), b["id"]))
    if cur.rowcount != 1:
        if recovery.healing(db):
            return          # the rating comes back from the county's copy, and the answer with it
        raise LookupError(f"no rating of {b['id']} at this station")


def project_own(st: Desk, db: sqlite3.Connection, ev: Event) -> None:
    """A rating of ours the county gave back (self-heal): its row, with the county's answer if held."""
    if held(db, ev.body["id"]) is not None:
        return
    rated(st.store, db, ev)
    row = db.execute("SELECT seq FROM _sync_events WHERE stream = ? AND kind = ? AND body LIKE ? ORDER BY seq",
                     (log.down(st.code), transitions.RATING_ANSWERED, f'%"id":"{ev.body["id"]}"%')).fetchall()
    for (seq,) in row:
        answer = log.get(db, log.down(st.code), int(seq))
        if answer is not None and answer.body.get("id") == ev.body["id"]:
            answered(st.store, db, answer)


# the rating itself -------------------------------------------------------------------------------

def rate(st: Desk, case_id: str, score: Any, comment: Any, by: str) -> dict[str, Any]:
    """Record the citizen's rating of a case; Refused (422 bad input, 404, 409) otherwise."""
    if type(score) is not int or not 1 <= score <= 5:
        raise Refused(422, "bad_score", N_("Choose a score from 1 to 5."))
    if not isinstance(comment, str) or len(comment.strip()) > MAX_COMMENT:
        raise Refused(422, "bad_comment", N_("The comment is at most 500 characters."))
    with st.store.transaction() as db:
        row = db.execute("SELECT status FROM applications WHERE id = ?", (case_id,)).fetchone()
        if row is None:
            raise Refused(404, "not_found", N_("No such application at this station."))
        if held(db, case_id) is not None:
            raise Refused(409, "already_rated", ALREADY_RATED)
        try:
            facts.next_state(facts.county_state(row[0]), facts.RATED, case_id=case_id)
        except RuleError:
            raise Refused(409, "not_ratable", NOT_RATABLE) from None
        st.record(db, facts.Fact(facts.RATED, facts.SPECS[facts.RATED].to_body(
            id=case_id, score=score, comment=comment.strip(), by=by, at=st.now().isoformat(timespec="seconds"))))
    return rating_of(st, case_id) or {}


def may_rate(st: Desk, app: dict[str, Any]) -> bool:
    """The page offers the rating screen: the state allows it and no rating is held."""
    try:
        facts.next_state(facts.county_state(app["status"]), facts.RATED)
    except RuleError:
        return False
    with st.store.lock:
        return held(st.store.conn, app["id"]) is None


def rating_of(st: Desk, case_id: str) -> dict[str, Any] | None:
    """The API form: ``score, comment, by, at, answer, answered_by, answered_at`` (None if unrated)."""
    with st.store.lock:
        r = held(st.store.conn, case_id)
    if r is None:
        return None
    return {"score": r["score"], "comment": r["comment"], "by": r["by"], "at": r["at"], "answer": r["answer"],
            "answered_by": r["answered_by"], "answered_department": r["answered_department"],
            "answered_at": r["answered_at"]}


# history -------------------------------------------------------------------------------------------

def own_sign_keys(st: Desk, db: Any) -> dict[str, str]:
    """The station's sign keys it can vouch for: current, retired, and announced in its own log."""
    keys = {st.me.public.sign_id: st.me.public.sign}
    for ident in load_retired(st.settings.data / "keys.retired").values():
        keys[ident.public.sign_id] = ident.public.sign
    for (body,) in db.execute("SELECT body FROM _sync_events WHERE stream = ? AND kind = ?",
                              (log.up(st.code), transitions.STATION_KEYS_ROTATED)).fetchall():
        try:
            new = PublicKeys.from_dict(json.loads(body))
        except (ValueError, TypeError, KeyError, CryptoError):
            continue
        keys[new.sign_id] = new.sign
    return keys


def history_of(st: Desk, app: dict[str, Any]) -> list[dict[str, Any]]:
    """Every fact of our two streams naming the case, oldest first, each signature checked now with
    our key history (up) and the county's (down). Untranslated (sync/law/history.py ``translated``)."""
    up, down = log.up(st.code), log.down(st.code)
    departments = st.department_names()
    with st.store.lock:
        db = st.store.conn
        events = log.events_naming(db, (up, down), app["id"])
        keys = {up: own_sign_keys(st, db), down: exchange.county_sign_keys(db, st.enrolled_county)}
        aside = {(up, int(r[0])): str(r[1]) for r in db.execute(
            "SELECT seq, reason FROM _sync_reported WHERE stream = ?", (up,)).fetchall()}
        aside.update({(down, int(r[0])): str(r[1]) for r in db.execute(
            "SELECT seq, reason FROM _sync_repairs WHERE stream = ?", (down,)).fetchall()})
    out = []
    for ev in events:
        if ev.stream == up:
            where = {"side": "station", "code": st.code, "name": st.name}
            received = app.get("county_received_at") if ev.kind in transitions.APPLICATION_KINDS else None
        else:
            dept = str(ev.body.get("department") or "")
            where = {"side": "county", "code": dept,
                     "name": departments.get(dept, {}).get("name", dept) or st.county.name}
            received = ev.at
        out.append(history.entry(ev, signature=log.signature_state(ev, keys[ev.stream]), where=where,
                                 received_at=received or None, set_aside=aside.get((ev.stream, ev.seq))))
    return out


def page_json(st: Desk, app: dict[str, Any], gettext: Callable[..., str], reason: Callable[[str], str]
              ) -> dict[str, Any]:
    """``history`` (translated) and ``rating`` for the page and the API. Blocking: a worker thread."""
    entries = history.translated(history_of(st, app), gettext)
    for e in entries:
        if e["set_aside"]:
            e["set_aside"] = reason(e["set_aside"])
    return {"history": entries, "rating": rating_of(st, app["id"])}
