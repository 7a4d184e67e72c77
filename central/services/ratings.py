"""The county's side of ratings (好差评), their follow-up (整改反馈), and a case's history (电子监察).

A station's ``application.rated`` is checked again here (shape, the case's state, its owner, once
per case); a rating of 1 or 2 opens a follow-up that a supervisor or a clerk of the case's
department answers with ``rating.answered``, sent down to the case's station through
``County.record``. Who may list and answer: central/services/permissions.py, for page and API alike.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Callable

from central.services import permissions
from central.store import RATING_COLS as COLS, held_rating as held
from central.errors import CountyError
from sync import log
from sync.law import facts, history
from sync.law.errors import N_, RuleError
from sync.law.ratings import MAX_ANSWER, POOR_SCORES, check_answerable, check_rated_once
from sync.log import Event

if TYPE_CHECKING:
    from central.services.context import Context

OPEN = f"r.score IN ({', '.join(str(s) for s in POOR_SCORES)}) AND r.answer IS NULL"


# projections (central/services/projections.py registers them) ----------------------------------------------

def rated(county: Context, db: Any, ev: Event) -> None:
    """A station's rating: of a case it owns, in a state that allows it, and the case's first."""
    b, station = ev.body, ev.author
    case = county.store.case(b["id"], db)
    if case is not None and case["station"] != station:
        raise RuleError(N_("Station %(author)s rated case %(id)s, which belongs to station %(owner)s."),
                        author=station, id=b["id"], owner=case["station"])
    facts.next_state(case["status"] if case else facts.NEW, ev.kind, case_id=b["id"])
    rating = held(db, b["id"])
    check_rated_once(b["id"], rating if rating and rating["score"] is not None else None)
    db.execute("INSERT INTO ratings (case_id, station, score, comment, by, at, seq, received_at)"
               " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (case_id) DO UPDATE SET score = excluded.score,"
               " comment = excluded.comment, by = excluded.by, at = excluded.at, seq = excluded.seq,"
               " received_at = excluded.received_at",
               (b["id"], station, b["score"], b["comment"], b["by"], b["at"], ev.seq, log.utcnow()))


def answered(county: Context, db: Any, ev: Event) -> None:
    """The county's answer, written now or given back after a restore (before its rating came back:
    it is kept, and the rating joins it when it arrives)."""
    b, station = ev.body, ev.stream.split("/", 1)[1]
    rating = held(db, b["id"])
    if rating is not None and rating["score"] is not None:
        check_answerable(b["id"], rating)
        case = county.store.case(b["id"], db)
        facts.next_state(case["status"] if case else facts.NEW, ev.kind, case_id=b["id"])
    db.execute("INSERT INTO ratings (case_id, station, answer, answered_by, answered_department, answered_at)"
               " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (case_id) DO UPDATE SET answer = excluded.answer,"
               " answered_by = excluded.answered_by, answered_department = excluded.answered_department,"
               " answered_at = excluded.answered_at",
               (b["id"], station, b["answer"], b["by"], b["department"], b["at"]))


# answering ------------------------------------------------------------------------------------------

def answer(county: Context, case_id: str, text: Any, user: dict[str, Any]) -> dict[str, Any]:
    """Answer the follow-up of a rating of 1-2: 422 (empty or too long), 404, 403, 409."""
    if not isinstance(text, str) or not text.strip():
        raise CountyError(422, "answer_required", N_("Write the answer to the citizen's rating."))
    text = text.strip()
    if len(text) > MAX_ANSWER:
        raise CountyError(422, "answer_too_long", N_("The answer is at most 2000 characters."))
    with county.store.transaction() as db:
        case = county.store.case(case_id, db)
        if case is None:
            raise CountyError(404, "not_found", N_("No such case."))
        if not permissions.may_answer_rating(user, case):
            raise CountyError(403, "other_department", permissions.OTHER_DEPARTMENT)
        rating = held(db, case_id)
        try:
            check_answerable(case_id, rating)
        except RuleError:
            if rating is not None and rating["answer"]:
                raise CountyError(409, "already_answered", N_("This rating has already been answered.")) from None
            raise CountyError(409, "not_answerable", N_("Only a rating of 1 or 2 opens a follow-up to answer.")) from None
        county.record(db, case["station"], facts.Fact(facts.RATING_ANSWERED, facts.SPECS[facts.RATING_ANSWERED].to_body(
            id=case_id, answer=text, by=user["name"], department=case["department"], at=log.utcnow())))
        return rating_json(held(db, case_id))


def rating_json(r: dict[str, Any] | None) -> dict[str, Any] | None:
    if r is None or r["score"] is None:
        return None
    return {"score": r["score"], "comment": r["comment"], "by": r["by"], "at": r["at"], "received_at": r["received_at"],
            "answer": r["answer"], "answered_by": r["answered_by"], "answered_department": r["answered_department"],
            "answered_at": r["answered_at"], "follow_up": r["score"] in POOR_SCORES,
            "open": r["score"] in POOR_SCORES and not r["answer"]}


def rating_of(county: Context, case_id: str) -> dict[str, Any] | None:
    with county.store.lock:
        return rating_json(held(county.store.conn, case_id))


def _where(user: dict[str, Any]) -> tuple[str, list[Any]]:
    seen = permissions.visible_departments(user)
    if seen is None:
        return "", []
    return f" AND c.department IN ({', '.join('?' for _ in seen) or 'NULL'})", sorted(seen)


def listing(county: Context, user: dict[str, Any], *, open_only: bool = False, limit: int = 500) -> list[dict[str, Any]]:
    """The ratings ``user`` may read: open follow-ups first (oldest first), then the others (newest
    first), each with the case's receipt number, item, department and ``age_hours`` since received."""
    cond, params = _where(user)
    sql = (f"SELECT {', '.join('r.' + c for c in COLS)}, c.receipt_no, c.item_name, c.department, c.applicant_name"
           f" FROM ratings r JOIN cases c ON c.id = r.case_id WHERE r.score IS NOT NULL{cond}"
           f"{' AND ' + OPEN if open_only else ''}"
           f" ORDER BY CASE WHEN {OPEN} THEN 0 ELSE 1 END,"
           f" CASE WHEN {OPEN} THEN r.received_at END, r.received_at DESC LIMIT ?")
    with county.store.lock:
        rows = county.store.conn.execute(sql, (*params, limit)).fetchall()
    now = dt.datetime.now(dt.timezone.utc)
    out = []
    for row in rows:
        r = dict(zip(COLS, row[:len(COLS)]))
        case = dict(zip(("receipt_no", "item_name", "department", "applicant_name"), row[len(COLS):]))
        since = dt.datetime.fromisoformat(str(r["received_at"]).replace("Z", "+00:00")) if r["received_at"] else now
        out.append({"case_id": r["case_id"], "station": r["station"], **case, **(rating_json(r) or {}),
                    "age_hours": max(0, int((now - since).total_seconds() // 3600))})
    return out


def open_count(county: Context, user: dict[str, Any]) -> int:
    """How many follow-ups ``user`` may answer are still open (the navigation shows it)."""
    cond, params = _where(user)
    with county.store.lock:
        return int(county.store.conn.execute(
            f"SELECT count(*) FROM ratings r JOIN cases c ON c.id = r.case_id WHERE {OPEN}{cond}", params).fetchone()[0])


# history -------------------------------------------------------------------------------------------

def history_of(county: Context, case: dict[str, Any]) -> list[dict[str, Any]]:
    """Every fact of the case's station's two streams naming the case, oldest first, each signature
    checked now: the station's with its key history (a key revoked before the event was stored does
    not count), the county's with its own keys. Untranslated (sync/law/history.py ``translated``)."""
    code = case["station"]
    up, down = log.up(code), log.down(code)
    station = county.store.station(code) or {}
    departments = {d["code"]: d for d in county.catalog().get("departments", [])}
    keys_on_record = county.store.station_key_history(code)
    station_keys = {k["sign_id"]: k["sign_key"] for k in keys_on_record}
    revoked_at = {k["sign_id"]: k["revoked_at"] for k in keys_on_record if k["revoked_at"]}
    with county.store.lock:
        db = county.store.conn
        events = log.events_naming(db, (up, down), case["id"])
        stored = {(r[0], int(r[1])): str(r[2]) for r in db.execute(
            "SELECT stream, seq, stored_at FROM _sync_events WHERE stream IN (?, ?) AND seq IN"
            f" ({', '.join('?' for _ in events) or 'NULL'})", (up, down, *(e.seq for e in events))).fetchall()}
        aside = {int(r[0]): str(r[1]) for r in db.execute("SELECT seq, reason FROM _sync_repairs WHERE stream = ?",
                                                          (up,)).fetchall()}

    def revoked(ev: Event) -> bool:
        at = revoked_at.get(ev.key)
        return bool(at) and stored.get((ev.stream, ev.seq), "") >= at

    own = county.own_keys()
    out = []
    for ev in events:
        if ev.stream == up:
            where = {"side": "station", "code": code, "name": station.get("name") or code}
            state = log.signature_state(ev, station_keys, revoked)
        else:
            dept = str(ev.body.get("department") or "")
            where = {"side": "county", "code": dept, "name": departments.get(dept, {}).get("name", dept) or county.name}
            state = log.signature_state(ev, own)
        out.append(history.entry(ev, signature=state, where=where, received_at=stored.get((ev.stream, ev.seq)),
                                 set_aside=aside.get(ev.seq) if ev.stream == up else None))
    return out


def case_json(county: Context, case: dict[str, Any], gettext: Callable[..., str], reason: Callable[[str], str]
              ) -> dict[str, Any]:
    """``history`` (translated) and ``rating`` for the case page and API. Blocking: a worker thread."""
    entries = history.translated(history_of(county, case), gettext)
    for e in entries:
        if e["set_aside"]:
            e["set_aside"] = reason(e["set_aside"])
    return {"history": entries, "rating": rating_of(county, case["id"])}

