"""Who at the county may read and decide which case: the one place that says so.

A clerk reads and decides only the cases of its own department; a supervisor reads and
decides all. Every page and API handler that shows or changes a case asks here; the web
error handler turns ``Forbidden`` into a translated sentence on pages and JSON on the API.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException


def N_(message: str) -> str:
    """Mark a message id for translation; the web layer translates it."""
    return message


ROLES = ("clerk", "supervisor")
OTHER_DEPARTMENT = N_("This case belongs to another department.")


class Forbidden(HTTPException):
    """403 with an error code for the API: ``other_department``."""

    def __init__(self, message: str = OTHER_DEPARTMENT, code: str = "other_department") -> None:
        super().__init__(403, message)
        self.code = code


class NotFound(HTTPException):
    """404 with the same error code pages and API use for a case that is not there: ``not_found``."""

    def __init__(self, message: str = N_("No such case.")) -> None:
        super().__init__(404, message)
        self.code = "not_found"


def visible_departments(user: dict[str, Any]) -> frozenset[str] | None:
    """The departments whose cases ``user`` may read; None means all of them."""
    if user.get("role") == "supervisor":
        return None
    return frozenset([user["department"]]) if user.get("role") == "clerk" and user.get("department") else frozenset()


def may_read(user: dict[str, Any], case: dict[str, Any]) -> bool:
    seen = visible_departments(user)
    return seen is None or case["department"] in seen


def may_decide(user: dict[str, Any], case: dict[str, Any]) -> bool:
    return may_read(user, case)


def check_read(user: dict[str, Any], case: dict[str, Any]) -> dict[str, Any]:
    """The case, if ``user`` may read it; else Forbidden (403)."""
    if not may_read(user, case):
        raise Forbidden()
    return case


def check_department_filter(user: dict[str, Any], department: str | None) -> None:
    """A clerk asking for another department's list gets 403, not an empty list."""
    seen = visible_departments(user)
    if department and seen is not None and department not in seen:
        raise Forbidden(N_("You may only list the cases of your own department."), "other_department")


def is_supervisor(user: dict[str, Any]) -> bool:
    return user.get("role") == "supervisor"


def check_mark_restored(user: dict[str, Any]) -> None:
    """Who may mark a station restored or replaced (the county then gives the station its own records
    back, once, for 24 hours): a supervisor. The stations page's button and ``POST
    /api/v1/stations/{code}/restore`` both ask here; Forbidden (403 ``supervisor_only``) otherwise."""
    if not is_supervisor(user):
        raise Forbidden(N_("Only a supervisor may mark a station restored."), "supervisor_only")


def may_answer_rating(user: dict[str, Any], case: dict[str, Any]) -> bool:
    """Who answers a rating's follow-up (整改反馈): a supervisor, or a clerk of the case's department;
    the ratings list is filtered by ``visible_departments`` the same way."""
    return may_read(user, case)


def check_run_selfcheck(user: dict[str, Any]) -> None:
    """Who may start the log self-check now (it walks every log: seconds to minutes at a large
    county): a supervisor. Its last result is for every staff member to read. The stations page's
    button and ``POST /api/v1/selfcheck`` both ask here; Forbidden (403 ``supervisor_only``) otherwise."""
    if not is_supervisor(user):
        raise Forbidden(N_("Only a supervisor may start the log self-check."), "supervisor_only")
