"""Ratings (好差评) and the county's answer to a poor one (整改反馈): the shapes of
``application.rated`` and ``rating.answered``, and the once-per-case rules checked beside the
transition table (sync/law/transitions.py)."""

from __future__ import annotations

from typing import Any

from sync.law.errors import N_, RuleError
from sync.law.intake import LOCAL_TIME, UUID4

MAX_COMMENT = 500
MAX_ANSWER = 2000
POOR_SCORES = (1, 2)      # a rating this low opens a follow-up the county must answer


def check_rating(body: Any) -> str:
    """The shape of an ``application.rated`` body; returns the case id it names."""
    if not isinstance(body, dict):
        raise RuleError(N_("The rating is not an object."))
    case_id = body.get("id")
    if not isinstance(case_id, str) or not UUID4.fullmatch(case_id):
        raise RuleError(N_("The rating does not name a case id."))
    score = body.get("score")
    if type(score) is not int or not 1 <= score <= 5:
        raise RuleError(N_("A rating's score is a whole number from 1 to 5."))
    comment = body.get("comment")
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
        raise RuleError(N_("A rating's comment is text of at most %(n)s characters."), n=MAX_COMMENT)
    if not isinstance(body.get("by"), str) or not body["by"].strip():
        raise RuleError(N_("The rating does not name the agent who collected it."))
    at = body.get("at")
    if not isinstance(at, str) or not LOCAL_TIME.fullmatch(at):
        raise RuleError(N_("The rating's time is not of the form YYYY-MM-DDTHH:MM:SS+08:00."))
    return case_id


def check_rating_answer(body: Any) -> str:
    """The shape of a ``rating.answered`` body; returns the case id it names."""
    if not isinstance(body, dict):
        raise RuleError(N_("The answer to a rating is not an object."))
    case_id = body.get("id")
    if not isinstance(case_id, str) or not UUID4.fullmatch(case_id):
        raise RuleError(N_("The answer to a rating does not name a case id."))
    answer = body.get("answer")
    if not isinstance(answer, str) or not answer.strip() or len(answer) > MAX_ANSWER:
        raise RuleError(N_("An answer to a rating is text of 1 to %(n)s characters."), n=MAX_ANSWER)
    for name in ("by", "department", "at"):
        if not isinstance(body.get(name), str) or not body[name].strip():
            raise RuleError(N_("The answer to a rating lacks the field %(field)s."), field=name)
    return case_id


def check_rated_once(case_id: str, held: Any) -> None:
    """A case is rated once: ``held`` is the rating already on record for it (None if none)."""
    if held is not None:
        raise RuleError(N_("Case %(id)s has already been rated; a case is rated only once."), id=case_id)


def check_answerable(case_id: str, rating: dict[str, Any] | None) -> None:
    """The county answers only a rating of 1-2, and only once. ``rating``: ``score`` and ``answer``."""
    if rating is None or rating.get("score") is None:
        raise RuleError(N_("Case %(id)s has no rating to answer."), id=case_id)
    if rating["score"] not in POOR_SCORES:
        raise RuleError(N_("Only a rating of 1 or 2 is answered; case %(id)s was rated %(score)s."),
                        id=case_id, score=rating["score"])
    if rating.get("answer"):
        raise RuleError(N_("The rating of case %(id)s has already been answered."), id=case_id)
