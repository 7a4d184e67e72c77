"""办不成事 reports (seed 004): a citizen who could not get something done, anywhere in the county,
files a report at a station; the county takes it (首问负责: whoever takes it answers for it) and
answers; both come back down to the station. The facts, their checks and their own small table
of what may follow what, shared by both apps (like sync/law/transitions.py for cases)."""

from __future__ import annotations

from typing import Any

from sync.law.errors import N_, RuleError
from sync.law.intake import LOCAL_TIME, MAX_TEXT, PHONE, UUID4, id_number_error, receipt_pattern

FILED = "report.filed"          # upstream: the station files what the citizen told
TAKEN = "report.taken"          # downstream: a person at the county takes it and answers for it
ANSWERED = "report.answered"    # downstream: the answer, for the station to pass on

OPEN, TAKEN_STATE, ANSWERED_STATE = "open", "taken", "answered"
NEW = None
TRANSITIONS: dict[tuple[str | None, str], str] = {
    (NEW, FILED): OPEN, (OPEN, TAKEN): TAKEN_STATE, (TAKEN_STATE, ANSWERED): ANSWERED_STATE,
}
STATE_LABELS = {OPEN: N_("Waiting for someone at the county to take it"), TAKEN_STATE: N_("Taken, waiting for the answer"),
                ANSWERED_STATE: N_("Answered")}
FACT_LABELS = {FILED: N_("a report"), TAKEN: N_("taking a report"), ANSWERED: N_("an answer to a report")}
MAX_SHORT = 200


def next_state(state: str | None, kind: str, report_id: str = "") -> str:
    new = TRANSITIONS.get((state, kind))
    if new is None:
        raise RuleError(N_("Report %(id)s cannot take %(fact)s while it is in state \u201c%(state)s\u201d."),
                        id=report_id, fact=FACT_LABELS.get(kind, kind),
                        state=STATE_LABELS.get(str(state), N_("not held")))
    return new


def _text(body: dict[str, Any], name: str, limit: int, *, required: bool = True) -> str:
    value = body.get(name)
    if not isinstance(value, str) or len(value) > limit or (required and not value.strip()):
        raise RuleError(N_("The report's field %(field)s is missing, of the wrong type or too long."), field=name)
    return value


def check_filed(body: Any, *, author: str, items: list[dict[str, Any]] | None) -> str:
    """A ``report.filed`` body; ``items``: the catalogue's items (None: the codes are not checked)."""
    if not isinstance(body, dict) or set(body) != {"id", "receipt_no", "station", "agent", "at", "citizen", "tried",
                                                   "where", "item_code", "contact"}:
        raise RuleError(N_("A report needs exactly id, receipt_no, station, agent, at, citizen, tried, where, "
                           "item_code and contact."))
    if not isinstance(body["id"], str) or not UUID4.fullmatch(body["id"]):
        raise RuleError(N_("The report id %(id)s is not a UUID."), id=str(body["id"])[:40])
    if body["station"] != author:
        raise RuleError(N_("The report names station %(named)s but was sent by station %(author)s."),
                        named=str(body["station"]), author=author)
    if not isinstance(body["receipt_no"], str) or not receipt_pattern(author).fullmatch(body["receipt_no"]):
        raise RuleError(N_("The receipt number %(receipt)s is not of the form %(station)s-YYYYMMDD-00001."),
                        receipt=str(body["receipt_no"]), station=author)
    if not isinstance(body["at"], str) or not LOCAL_TIME.fullmatch(body["at"]):
        raise RuleError(N_("The time of %(fact)s is not of the form YYYY-MM-DDTHH:MM:SS+08:00."), fact=FACT_LABELS[FILED])
    _text(body, "agent", 50)
    _text(body, "tried", MAX_TEXT)
    _text(body, "where", MAX_SHORT)
    _text(body, "contact", MAX_SHORT)
    citizen = body["citizen"]
    if not isinstance(citizen, dict) or set(citizen) != {"name", "phone", "id_number"} \
            or not all(isinstance(v, str) for v in citizen.values()):
        raise RuleError(N_("The report's citizen needs a name, a phone and an ID number (the last two may be empty)."))
    if not citizen["name"].strip() or len(citizen["name"]) > 50:
        raise RuleError(N_("Enter the citizen's name."))
    if citizen["phone"] and not PHONE.match(citizen["phone"]):
        raise RuleError(N_("Enter an 11-digit mobile number or a landline with area code."))
    if citizen["id_number"] and (id_number_error(citizen["id_number"]) or citizen["id_number"] != citizen["id_number"].upper()):
        raise RuleError(N_("The ID number: %(problem)s"), problem=id_number_error(citizen["id_number"]) or "")
    code = body["item_code"]
    if not isinstance(code, str) or (code and items is not None and code not in {i.get("code") for i in items}):
        raise RuleError(N_("The report names item %(code)s, which the catalogue does not have."), code=str(code)[:40])
    return body["id"]


def check_county(kind: str, body: Any) -> str:
    """``report.taken`` (``id, by, department, at``) or ``report.answered`` (the same and ``answer``)."""
    want = {"id", "by", "department", "at"} | ({"answer"} if kind == ANSWERED else set())
    if not isinstance(body, dict) or set(body) != want or not all(isinstance(body[k], str) for k in want):
        raise RuleError(N_("%(fact)s needs exactly the fields %(fields)s."), fact=FACT_LABELS[kind],
                        fields=", ".join(sorted(want)))
    if not UUID4.fullmatch(body["id"]) or not body["by"].strip():
        raise RuleError(N_("%(fact)s names no report or no person."), fact=FACT_LABELS[kind])
    if kind == ANSWERED and (not body["answer"].strip() or len(body["answer"]) > MAX_TEXT):
        raise RuleError(N_("An answer to a report must say something, in at most 2000 characters."))
    return body["id"]
