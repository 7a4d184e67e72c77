"""How long a station keeps personal data (ARCHITECTURE.md "Retention of personal data").

The county sets the period and sends it down as ``retention.set`` (PROTOCOL.md §4); the station
then removes the personal fields of every case handed out longer ago than that, once the county
has acknowledged every fact of the case (node/retention.py). An event body is replaced there by
its *redacted stub*: the same object with every personal field blanked and ``"_redacted":
"retention"`` added. The event keeps its ``prev``, ``hash`` and ``sig``: the chain's links and the
signature over the recorded hash still verify; only the body can no longer be matched to the hash
(a case's history says "personal data removed after the retention period" for it: sync/log.py
``signature_state``, ``check_event`` for a receiver).

Shared by both apps (the county checks the fact it writes with the same code); imports nothing of
node/ or central/.
"""

from __future__ import annotations

from typing import Any

from sync.law.errors import N_, RuleError

RETENTION_SET = "retention.set"
DEFAULT_DAYS = 30
MIN_DAYS, MAX_DAYS = 1, 3650
REDACTED_KEY = "_redacted"
REDACTED_VALUE = "retention"
#: body keys that can hold personal data (names, ID numbers, phones, free text an agent or the
#: county wrote); their values are blanked in a redacted stub, every other key is kept
PERSONAL = frozenset({"applicant", "fields", "collector", "note", "comment", "answer", "citizen", "contact",
                      "reason", "basis", "tried", "where", "materials", "scans", "missing", "attachments"})
REMOVED = N_("Personal data removed after the retention period")


def check_body(body: Any) -> int:
    """The shape of a ``retention.set`` body; returns the number of days."""
    if not isinstance(body, dict) or set(body) - {"retention_days", "at", "by"} \
            or not {"retention_days", "at", "by"} <= set(body):
        raise RuleError(N_("A retention setting has exactly the fields retention_days, at and by."))
    days = body["retention_days"]
    if type(days) is not int or not MIN_DAYS <= days <= MAX_DAYS:
        raise RuleError(N_("The retention period is a whole number of days from %(min)s to %(max)s."),
                        min=MIN_DAYS, max=MAX_DAYS)
    if not isinstance(body["at"], str) or not isinstance(body["by"], str):
        raise RuleError(N_("A retention setting names when and by whom it was set."))
    return days


def days_of(text: Any) -> int:
    """A period typed by an operator (CLI, API): a whole number of days in range, else ValueError."""
    if isinstance(text, bool):
        raise ValueError("not a number")
    try:
        days = int(text) if isinstance(text, (int, str)) and str(text).strip().isdigit() else None
    except ValueError:
        days = None
    if days is None or not MIN_DAYS <= days <= MAX_DAYS:
        raise ValueError(f"the retention period is a whole number of days from {MIN_DAYS} to {MAX_DAYS}")
    return days


def _blank(value: Any) -> Any:
    if isinstance(value, str):
        return ""
    if isinstance(value, dict):
        return {k: _blank(v) for k, v in value.items()}
    if isinstance(value, list):
        return []
    return None if value is not None and not isinstance(value, (bool, int, float)) else value


def redact(body: Any) -> dict[str, Any]:
    """The redacted stub of an event body (or of a stored application body): personal keys blanked
    (a string becomes "", a list [], an object keeps its keys with blank values), the rest kept."""
    if not isinstance(body, dict):
        return {REDACTED_KEY: REDACTED_VALUE}
    out = {k: (_blank(v) if k in PERSONAL else v) for k, v in body.items()}
    out[REDACTED_KEY] = REDACTED_VALUE
    return out


def is_redacted(body: Any) -> bool:
    return isinstance(body, dict) and body.get(REDACTED_KEY) == REDACTED_VALUE


PURGED_AT_STATION = N_("The station removed this record's personal data after the retention period and the county "
                       "no longer held it (restored from an older backup): only its signed hash is kept.")
