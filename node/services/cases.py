"""Intake rules at the station: pure functions, no HTTP, no SQL.

Error messages are English message ids; the web layer translates them.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

from sync.law import intake, transitions
from sync.law.clock import add_working_days
from sync.law.errors import N_, RuleError

DECISIONS = ("accept", "correction", "refuse")
KIND_OF = {"accept": "application.accepted", "correction": "application.correction_notice",
           "refuse": "application.refused"}
STATUS_OF = {"accept": transitions.Status.ACCEPTED, "correction": transitions.Status.CORRECTION_NOTICE,
             "refuse": transitions.Status.REFUSED}
PHONE = intake.PHONE
logger = logging.getLogger("lastmile.node")


class IntakeError(Exception):
    """The form cannot be taken as it is; ``errors`` maps a field name to a message id. The class
    names the outcome (the web layer maps each to one status, node/http/errors.py): this one is bad
    input; ``NoSuchCase`` and ``WrongState`` are about the case a request names."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


class NoSuchCase(IntakeError):
    """The request names a case this station does not hold."""


class WrongState(IntakeError):
    """The case's state forbids what is asked (not waiting for the citizen, not decided yet …)."""


@dataclass(frozen=True, slots=True)
class Intake:
    kind: str
    status: str
    body: dict[str, Any]


def take(item: dict[str, Any], form: dict[str, Any], *, decision: str, station: str, agent: str,
         catalog_version: int, now: dt.datetime, receipt_no: str, level: str, case_id: str | None = None,
         calendar: Any = None) -> Intake:
    """Validate an application and turn the agent's decision into the event body to record;
    the promised date counts working days by ``calendar`` (the station's, sync/law/workdays.py).
    ``case_id``: the case a correction notice left waiting for the citizen, now completed (the same
    id; its time limit starts now, from completeness)."""
    errors: dict[str, str] = {}
    if decision not in DECISIONS:
        raise IntakeError({"decision": N_("Choose accept, correction notice or refusal.")})
    if level not in item.get("levels", []):
        raise IntakeError({"item": N_("This station may not accept this service item.")})
    applicant = {k: str(form.get(k, "")).strip() for k in ("name", "id_number", "phone", "address")}
    applicant["id_number"] = applicant["id_number"].upper()
    errors.update(intake.applicant_errors(applicant))

    fields: dict[str, Any] = {}
    for f in item["fields"]:
        raw = str(form.get("f_" + f["name"], "")).strip()
        if raw:
            fields[f["name"]] = int(raw) if f["type"] == "int" and re.fullmatch(r"\d{1,9}", raw) else raw
    errors.update({"f_" + k: v for k, v in
                   intake.field_errors(item, fields, accepting=decision == "accept").items()})

    materials, missing = intake.materials_of(item, set(form.get("materials", [])))
    reason = str(form.get("reason", "")).strip()
    errors.update(intake.decision_errors(KIND_OF[decision], missing, reason))
    if errors:
        raise IntakeError(errors)

    today = now.date()
    body: dict[str, Any] = {
        "id": case_id or str(uuid.uuid4()), "receipt_no": receipt_no, "station": station, "agent": agent,
        "item_code": item["code"], "item_name": item["name"], "department": item["department"],
        "catalog_version": catalog_version, "applicant": applicant, "fields": fields,
        "materials": materials, "missing": missing, "reason": reason,
        "at": now.isoformat(timespec="seconds"),
    }
    if decision == "accept":
        body["time_limit_days"] = item["time_limit_days"]
        body["promised_date"] = add_working_days(today, int(item["time_limit_days"]), calendar).isoformat()
    try:        # never sign what the county will set aside: it runs this same check on arrival
        intake.check_application(KIND_OF[decision], body, author=station, level=level, catalog={"items": [item]})
    except RuleError as exc:
        logger.error("intake refused by the shared rules: %s", exc)
        raise IntakeError({"application": N_("This application breaks a rule the county checks; "
                                             "tell your installer.")}) from exc
    return Intake(KIND_OF[decision], STATUS_OF[decision], body)

