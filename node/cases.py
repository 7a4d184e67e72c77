"""Intake rules at the station: pure functions, no HTTP, no SQL.

Error messages are English message ids; the web layer translates them.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from typing import Any

import chinese_calendar


def N_(message: str) -> str:
    """Mark a message id for translation; the web layer translates it."""
    return message

DECISIONS = ("accept", "correction", "refuse")
KIND_OF = {"accept": "application.accepted", "correction": "application.correction_notice",
           "refuse": "application.refused"}
STATUS_OF = {"accept": "accepted", "correction": "correction_notice", "refuse": "refused"}
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
PHONE = re.compile(r"^(1\d{10}|0\d{2,3}-?\d{7,8})$")


class IntakeError(Exception):
    """The form cannot be taken as it is; ``errors`` maps a field name to a message id."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def id_number_error(value: str) -> str | None:
    """Check an 18-character resident ID number (GB 11643-1999): shape, birth date, check digit."""
    v = value.strip().upper()
    if not re.fullmatch(r"\d{17}[\dX]", v):
        return N_("An ID number has 17 digits followed by a digit or X.")
    try:
        born = dt.date(int(v[6:10]), int(v[10:12]), int(v[12:14]))
    except ValueError:
        return N_("The birth date inside the ID number is not a real date.")
    if born.year < 1890 or born > dt.date.today():
        return N_("The birth date inside the ID number is not a real date.")
    total = sum(int(d) * w for d, w in zip(v[:17], _WEIGHTS))
    if _CHECK[total % 11] != v[17]:
        return N_("The ID number's check digit is wrong; please check each digit again.")
    return None


def is_workday(day: dt.date) -> bool:
    """Chinese working day, counting public holidays and make-up working days.

    chinese_calendar knows the State Council's schedule only up to the years it ships;
    past them we count Monday to Friday, and the county can correct later."""
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        return day.weekday() < 5


def add_working_days(start: dt.date, days: int) -> dt.date:
    """The date by which ``days`` working days after ``start`` have passed (the day itself not counted)."""
    day = start
    left = days
    while left > 0:
        day += dt.timedelta(days=1)
        if is_workday(day):
            left -= 1
    return day


@dataclass(frozen=True, slots=True)
class Intake:
    kind: str
    status: str
    body: dict[str, Any]


def take(item: dict[str, Any], form: dict[str, Any], *, decision: str, station: str, agent: str,
         catalog_version: int, now: dt.datetime, receipt_no: str, level: str) -> Intake:
    """Validate an application and turn the agent's decision into the event body to record."""
    errors: dict[str, str] = {}
    if decision not in DECISIONS:
        raise IntakeError({"decision": N_("Choose accept, correction notice or refusal.")})
    if level not in item.get("levels", []):
        raise IntakeError({"item": N_("This station may not accept this service item.")})
    applicant = {k: str(form.get(k, "")).strip() for k in ("name", "id_number", "phone", "address")}
    if not applicant["name"]:
        errors["name"] = N_("Enter the applicant's name.")
    elif len(applicant["name"]) > 50:
        errors["name"] = N_("The name is too long.")
    applicant["id_number"] = applicant["id_number"].upper()
    err = id_number_error(applicant["id_number"])
    if err:
        errors["id_number"] = err
    if applicant["phone"] and not PHONE.match(applicant["phone"]):
        errors["phone"] = N_("Enter an 11-digit mobile number or a landline with area code.")
    if len(applicant["address"]) > 200:
        errors["address"] = N_("The address is too long.")

    fields: dict[str, Any] = {}
    for f in item["fields"]:
        raw = str(form.get("f_" + f["name"], "")).strip()
        if not raw:
            if f.get("required") and decision == "accept":
                errors["f_" + f["name"]] = N_("This field is required.")
            continue
        if len(raw) > 2000:
            errors["f_" + f["name"]] = N_("This entry is too long.")
        elif f["type"] == "int":
            if not re.fullmatch(r"\d{1,9}", raw):
                errors["f_" + f["name"]] = N_("Enter a whole number.")
            else:
                fields[f["name"]] = int(raw)
                continue
        elif f["type"] == "date":
            try:
                dt.date.fromisoformat(raw)
            except ValueError:
                errors["f_" + f["name"]] = N_("Enter a date as YYYY-MM-DD.")
        elif f["type"] == "select" and raw not in {o["value"] for o in f.get("options", [])}:
            errors["f_" + f["name"]] = N_("Choose one of the options.")
        fields[f["name"]] = raw

    received = set(form.get("materials", []))
    materials = [{"code": m["code"], "name": m["name"], "received": m["code"] in received,
                  "required": bool(m.get("required"))} for m in item["materials"]]
    missing = [m["code"] for m in materials if m["required"] and not m["received"]]
    reason = str(form.get("reason", "")).strip()
    if decision == "accept" and missing:
        errors["materials"] = N_("Required materials are missing: issue a correction notice instead.")
    if decision == "correction" and not missing and not reason:
        errors["materials"] = N_("Nothing is missing: list the defects in the note, or accept.")
    if decision == "refuse" and not reason:
        errors["reason"] = N_("Give the reason for refusing.")
    if len(reason) > 2000:
        errors["reason"] = N_("This entry is too long.")
    if errors:
        raise IntakeError(errors)

    today = now.date()
    body: dict[str, Any] = {
        "id": str(uuid.uuid4()), "receipt_no": receipt_no, "station": station, "agent": agent,
        "item_code": item["code"], "item_name": item["name"], "department": item["department"],
        "catalog_version": catalog_version, "applicant": applicant, "fields": fields,
        "materials": materials, "missing": missing, "reason": reason,
        "at": now.isoformat(timespec="seconds"),
    }
    if decision == "accept":
        body["time_limit_days"] = item["time_limit_days"]
        body["promised_date"] = add_working_days(today, int(item["time_limit_days"])).isoformat()
    return Intake(KIND_OF[decision], STATUS_OF[decision], body)


def valid_id_for_demo(prefix17: str) -> str:
    """Complete 17 digits with their check character (used by demo data and tests)."""
    total = sum(int(d) * w for d, w in zip(prefix17, _WEIGHTS))
    return prefix17 + _CHECK[total % 11]
