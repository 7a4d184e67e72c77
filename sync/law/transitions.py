"""A case's life: the statuses, the fact kinds by name, and the one transition table both ends
apply (the station before it writes a fact, the county again when the signed fact arrives).

The per-kind specs, with body fields and checks, are in sync/law/facts.py; this is the vocabulary
they and both apps share. ``next_state`` raises :class:`RuleError`, naming the broken rule in words
(what the county stores as a repair reason).
"""

from __future__ import annotations

from sync.law.errors import N_, RuleError


class Status:
    """A case's status, as both apps store it and the pages label it: defined once, here."""
    ACCEPTED = "accepted"                          # station only: taken, not yet stored by the county
    RECEIVED = "received"                          # stored by the county, waiting for a decision
    CORRECTION_NOTICE = "correction_notice"        # the station asked the citizen for corrections
    REFUSED = "refused"                            # the station refused the application
    APPROVED = "approved"
    REJECTED = "rejected"
    CORRECTION_REQUESTED = "correction_requested"  # the county asks for corrections
    HANDED_OUT = "handed_out"

    ALL = (ACCEPTED, RECEIVED, CORRECTION_NOTICE, REFUSED, APPROVED, REJECTED, CORRECTION_REQUESTED, HANDED_OUT)
    #: decided by the county
    DECIDED = (APPROVED, REJECTED, CORRECTION_REQUESTED)
    #: a result that waits at the station to be handed out
    RESULTS = (APPROVED, REJECTED)
    #: waiting for the citizen to bring what is missing: the time limit is suspended (中止计时)
    WAITING = (CORRECTION_NOTICE, CORRECTION_REQUESTED)


# The fact kinds, by name (their specs: sync/law/facts.py).
ACCEPTED = "application.accepted"
CORRECTION_NOTICE = "application.correction_notice"
REFUSED = "application.refused"
HAND_OUT = "application.handed_out"
SUPPLEMENTED = "application.supplemented"
RECEIPTS_VOIDED = "station.receipts_voided"
STATION_KEYS_ROTATED = "station.keys_rotated"
CATALOG_PUBLISHED = "catalog.published"
CASE_DECIDED = "case.decided"
CALENDAR_PUBLISHED = "calendar.published"
COUNTY_KEYS_ROTATED = "county.keys_rotated"
RATED = "application.rated"            # the citizen's rating (好差评), once per case; state unchanged
RATING_ANSWERED = "rating.answered"    # the county's answer to a rating of 1-2 (整改反馈), once

APPLICATION_KINDS = (ACCEPTED, CORRECTION_NOTICE, REFUSED)
NEW = None           # the state of a case id nobody holds yet

#: ``case.decided``'s ``decision`` -> the status it gives the case.
DECISIONS: dict[str, str] = {"approve": Status.APPROVED, "reject": Status.REJECTED,
                             "correction": Status.CORRECTION_REQUESTED}


def decided(decision: str) -> str:
    """The transition-table name of a ``case.decided`` with this decision."""
    return f"{CASE_DECIDED}:{decision}"


#: The one table of what a fact may do to a case (states as the county names them; the station
#: holds ``accepted`` where the county has ``received``, see ``county_state``).
TRANSITIONS: dict[tuple[str | None, str], str] = {
    (NEW, ACCEPTED): Status.RECEIVED,
    (NEW, CORRECTION_NOTICE): Status.CORRECTION_NOTICE,
    (NEW, REFUSED): Status.REFUSED,
    # the citizen came back with what the station's correction notice asked for: the same case
    (Status.CORRECTION_NOTICE, ACCEPTED): Status.RECEIVED,
    (Status.CORRECTION_NOTICE, REFUSED): Status.REFUSED,
    **{(Status.RECEIVED, decided(d)): s for d, s in DECISIONS.items()},
    # the citizen brought what the county's correction request asked for: back in review
    (Status.CORRECTION_REQUESTED, SUPPLEMENTED): Status.RECEIVED,
    **{(s, HAND_OUT): Status.HANDED_OUT for s in Status.RESULTS},
    **{(s, k): s for s in (Status.HANDED_OUT, Status.REFUSED, Status.CORRECTION_NOTICE)   # ratings keep the state
       for k in (RATED, RATING_ANSWERED)},
}

STATE_LABELS = {
    Status.RECEIVED: N_("Waiting for decision"), Status.APPROVED: N_("Approved"), Status.REJECTED: N_("Rejected"),
    Status.CORRECTION_REQUESTED: N_("Correction requested"), Status.HANDED_OUT: N_("Handed out"),
    Status.CORRECTION_NOTICE: N_("Correction notice issued"), Status.REFUSED: N_("Refused"),
}
FACT_LABELS = {
    ACCEPTED: N_("an acceptance"), CORRECTION_NOTICE: N_("a correction notice"),
    REFUSED: N_("a refusal"), HAND_OUT: N_("a hand-out"), SUPPLEMENTED: N_("a supplement"),
    **{decided(d): N_("a decision") for d in DECISIONS},
    RATED: N_("a rating"), RATING_ANSWERED: N_("an answer to a rating"),
}


def county_state(station_status: str | None) -> str | None:
    """A station's status as the transition table names it (``accepted`` is ``received`` not yet acked)."""
    return Status.RECEIVED if station_status == Status.ACCEPTED else station_status


def next_state(state: str | None, kind: str, *, case_id: str = "") -> str:
    """The state a case moves to when fact ``kind`` arrives (for a decision: ``decided(decision)``);
    RuleError, naming the rule in words, if the table forbids it."""
    if kind not in FACT_LABELS:
        raise RuleError(N_("Unknown event kind %(kind)s."), kind=kind)
    new = TRANSITIONS.get((state, kind))
    if new is not None:
        return new
    if state is NEW:
        raise RuleError(N_("%(fact)s names case %(id)s, which the county does not hold."),
                        fact=FACT_LABELS[kind], id=case_id)
    if kind in APPLICATION_KINDS and state not in Status.WAITING:
        raise RuleError(N_("Case id %(id)s is already held by the county; a new application needs a new case id."),
                        id=case_id)
    raise RuleError(N_("Case %(id)s cannot take %(fact)s while it is in state \u201c%(state)s\u201d."),
                    id=case_id, fact=FACT_LABELS[kind], state=STATE_LABELS.get(state, state))
