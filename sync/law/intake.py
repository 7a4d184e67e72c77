"""Intake rules both ends enforce: the station when it takes an application, the county again
when the signed fact arrives (a station with a valid key may still be wrong or hostile).

Pure functions, no HTTP, no SQL. Every refusal is a message id (English, marked with ``N_``)
plus parameters, so the page can show it in the reader's language:

- ``applicant_errors`` / ``field_errors`` / ``decision_errors`` return ``{field: message id}``
  for the station's form (the station's agent fixes one entry at a time);
- ``check_application`` / ``check_hand_out`` / ``check_supplement`` / ``check_correction`` /
  ``check_voided`` raise :class:`RuleError` (one message id and its parameters), what the county
  stores as a repair reason.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sync.law.errors import N_, RuleError
from sync.law.transitions import APPLICATION_KINDS, FACT_LABELS, SUPPLEMENTED

# --- identity numbers and phones ------------------------------------------------------------------

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
PHONE = re.compile(r"^(1\d{10}|0\d{2,3}-?\d{7,8})$")


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


def valid_id_for_demo(prefix17: str) -> str:
    """Complete 17 digits with their check character (used by demo data and tests)."""
    total = sum(int(d) * w for d, w in zip(prefix17, _WEIGHTS))
    return prefix17 + _CHECK[total % 11]


# --- the application body ---------------------------------------------------------------------------

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
LOCAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$")
SCAN_MIMES = ("image/jpeg", "application/pdf")
MAX_SCAN_BYTES = 4 * 1024 * 1024
MAX_TEXT = 2000
MAX_INT_FIELD = 999_999_999


APPLICANT_LABELS = {"name": N_("Name"), "id_number": N_("ID number"), "phone": N_("Phone"), "address": N_("Address")}
LEVEL_LABELS = {"village": N_("village"), "township": N_("township"), "county": N_("county")}


def receipt_pattern(station: str) -> re.Pattern[str]:
    """``<station>-<YYYYMMDD>-<5 or more digits>``: the one place receipt numbers are checked.
    The station makes them in node/station.py ``_receipt_no``; a change of format there changes this too."""
    return re.compile(rf"^{re.escape(station)}-(\d{{8}})-(\d{{5,}})$")


def _day(value: str) -> dt.date | None:
    if not DAY.fullmatch(value):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def applicant_errors(applicant: dict[str, Any]) -> dict[str, str]:
    """Problems with the applicant (name, id_number, phone, address: strings, already trimmed)."""
    errors: dict[str, str] = {}
    for key in ("name", "id_number", "phone", "address"):
        if not isinstance(applicant.get(key), str):
            errors[key] = N_("This entry has the wrong type.")
    if errors:
        return errors
    if not applicant["name"].strip():
        errors["name"] = N_("Enter the applicant's name.")
    elif len(applicant["name"]) > 50:
        errors["name"] = N_("The name is too long.")
    number = applicant["id_number"]
    err = id_number_error(number) or (None if number == number.strip().upper() else
                                      N_("An ID number has 17 digits followed by a digit or X."))
    if err:
        errors["id_number"] = err
    if applicant["phone"] and not PHONE.match(applicant["phone"]):
        errors["phone"] = N_("Enter an 11-digit mobile number or a landline with area code.")
    if len(applicant["address"]) > 200:
        errors["address"] = N_("The address is too long.")
    return errors


def field_errors(item: dict[str, Any], fields: dict[str, Any], *, accepting: bool) -> dict[str, str]:
    """Problems with the item's form fields: ``int`` fields hold an int, the others a string;
    required fields are needed only to accept. Keys are field names."""
    errors: dict[str, str] = {}
    known = {f["name"] for f in item.get("fields", [])}
    for name in fields:
        if name not in known:
            errors[name] = N_("This item's form has no such field.")
    for f in item.get("fields", []):
        name, value = f["name"], fields.get(f["name"])
        if value is None or value == "":
            if f.get("required") and accepting:
                errors[name] = N_("This field is required.")
            continue
        if isinstance(value, str) and len(value) > MAX_TEXT:
            errors[name] = N_("This entry is too long.")
        elif f["type"] == "int":
            if type(value) is not int or not 0 <= value <= MAX_INT_FIELD:
                errors[name] = N_("Enter a whole number.")
        elif not isinstance(value, str):
            errors[name] = N_("This entry has the wrong type.")
        elif f["type"] == "date":
            if _day(value) is None:
                errors[name] = N_("Enter a date as YYYY-MM-DD.")
        elif f["type"] == "select" and value not in {o["value"] for o in f.get("options", [])}:
            errors[name] = N_("Choose one of the options.")
    return errors


def materials_of(item: dict[str, Any], received: set[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """The materials list an application body carries, and the codes of required ones missing."""
    materials = [{"code": m["code"], "name": m["name"], "received": m["code"] in received,
                  "required": bool(m.get("required"))} for m in item.get("materials", [])]
    return materials, [m["code"] for m in materials if m["required"] and not m["received"]]


def decision_errors(kind: str, missing: list[str], reason: str) -> dict[str, str]:
    """What each decision needs: accept every required material; correction something to correct;
    refusal a reason."""
    errors: dict[str, str] = {}
    if kind == "application.accepted" and missing:
        errors["materials"] = N_("Required materials are missing: issue a correction notice instead.")
    if kind == "application.correction_notice" and not missing and not reason:
        errors["materials"] = N_("Nothing is missing: list the defects in the note, or accept.")
    if kind == "application.refused" and not reason:
        errors["reason"] = N_("Give the reason for refusing.")
    if len(reason) > MAX_TEXT:
        errors["reason"] = N_("This entry is too long.")
    return errors


_BODY_TYPES: dict[str, type] = {
    "id": str, "receipt_no": str, "station": str, "agent": str, "item_code": str, "item_name": str,
    "department": str, "catalog_version": int, "applicant": dict, "fields": dict, "materials": list,
    "missing": list, "reason": str, "at": str,
}


def _typed(body: dict[str, Any], name: str, want: type) -> Any:
    value = body.get(name)
    if name not in body:
        raise RuleError(N_("The application lacks the field %(field)s."), field=name)
    if not isinstance(value, want) or isinstance(value, bool) and want is int:
        raise RuleError(N_("The application's field %(field)s has the wrong type."), field=name)
    return value


def check_application(kind: str, body: Any, *, author: str, level: str | None,
                      catalog: dict[str, Any] | None) -> dict[str, Any]:
    """Check an application body the way the station had to, against ``catalog`` (the version the
    body names, None if never published) and the author station's ``level``. Returns the
    catalogue item; raises RuleError naming the first problem."""
    if kind not in APPLICATION_KINDS:
        raise RuleError(N_("Unknown event kind %(kind)s."), kind=kind)
    if not isinstance(body, dict):
        raise RuleError(N_("The application is not an object."))
    for name, want in _BODY_TYPES.items():
        _typed(body, name, want)
    if body["station"] != author:
        raise RuleError(N_("The application names station %(named)s but was sent by station %(author)s."),
                        named=body["station"], author=author)
    if not UUID4.fullmatch(body["id"]):
        raise RuleError(N_("The case id %(id)s is not a UUID."), id=body["id"])
    at = body["at"]
    try:
        accepted_on = dt.datetime.fromisoformat(at).date() if LOCAL_TIME.fullmatch(at) else None
    except ValueError:
        accepted_on = None
    if accepted_on is None:
        raise RuleError(N_("The application's time %(at)s is not of the form YYYY-MM-DDTHH:MM:SS+08:00."), at=at)
    m = receipt_pattern(author).fullmatch(body["receipt_no"])
    if m is None or _day(f"{m[1][:4]}-{m[1][4:6]}-{m[1][6:]}") is None:
        raise RuleError(N_("The receipt number %(receipt)s is not of the form %(station)s-YYYYMMDD-00001."),
                        receipt=body["receipt_no"], station=author)
    version = body["catalog_version"]
    if catalog is None:
        raise RuleError(N_("Catalogue version %(version)s was never published."), version=version)
    code = body["item_code"]
    item = next((i for i in catalog.get("items", []) if i.get("code") == code), None)
    if item is None:
        raise RuleError(N_("Item %(code)s is not in catalogue version %(version)s."), code=code, version=version)
    if level not in item.get("levels", []):
        raise RuleError(N_("Item %(code)s may not be accepted at a station of level %(level)s."),
                        code=code, level=LEVEL_LABELS.get(str(level), str(level)))
    if body["item_name"] != item["name"]:
        raise RuleError(N_("The item name %(name)s differs from catalogue version %(version)s."),
                        name=body["item_name"], version=version)
    if body["department"] != item["department"]:
        raise RuleError(N_("The department %(department)s is not the one catalogue version %(version)s names "
                           "for item %(code)s."), department=body["department"], version=version, code=code)
    if not body["agent"].strip():
        raise RuleError(N_("The application does not name the agent who took it."))

    problems = applicant_errors(body["applicant"])
    if problems:
        field, message = next(iter(problems.items()))
        raise RuleError(N_("Applicant's %(field)s: %(problem)s"), field=APPLICANT_LABELS[field], problem=message)
    problems = field_errors(item, body["fields"], accepting=kind == "application.accepted")
    if problems:
        field, message = next(iter(problems.items()))
        raise RuleError(N_("Form field %(field)s: %(problem)s"), field=field, problem=message)

    expected, missing = materials_of(item, {m["code"] for m in body["materials"] if isinstance(m, dict)
                                            and isinstance(m.get("code"), str) and m.get("received") is True})
    if body["materials"] != expected:
        raise RuleError(N_("The materials list differs from the one catalogue version %(version)s gives "
                           "for item %(code)s."), version=version, code=code)
    if body["missing"] != missing:
        raise RuleError(N_("The list of missing materials does not match the materials received."))
    problems = decision_errors(kind, missing, body["reason"])
    if problems:
        raise RuleError(next(iter(problems.values())))

    _check_scans(body, item)
    if kind == "application.accepted":
        limit = body.get("time_limit_days")
        if type(limit) is not int or limit != item["time_limit_days"]:
            raise RuleError(N_("The time limit %(got)s differs from the item's %(want)s working days."),
                            got=str(limit), want=item["time_limit_days"])
        promised = body.get("promised_date")
        day = _day(promised) if isinstance(promised, str) else None
        if day is None:
            raise RuleError(N_("An acceptance needs a promised date as YYYY-MM-DD."))
        if day < accepted_on:
            raise RuleError(N_("The promised date %(date)s is before the acceptance date."), date=promised)
    return item


def _check_scans(body: dict[str, Any], item: dict[str, Any]) -> None:
    if "scans" not in body:
        return
    scans = body["scans"]
    if not isinstance(scans, list):
        raise RuleError(N_("The application's field %(field)s has the wrong type."), field="scans")
    materials = {m["code"] for m in item.get("materials", [])}
    for n, scan in enumerate(scans, 1):
        if not isinstance(scan, dict):
            raise RuleError(N_("Scan %(n)s is not an object."), n=n)
        sha, size, name = scan.get("sha256"), scan.get("size"), scan.get("name")
        if not isinstance(sha, str) or not SHA256.fullmatch(sha):
            raise RuleError(N_("Scan %(n)s: its SHA-256 is not 64 lowercase hex characters."), n=n)
        if type(size) is not int or not 0 < size <= MAX_SCAN_BYTES:
            raise RuleError(N_("Scan %(n)s: its size must be a whole number of bytes, at most 4 MiB."), n=n)
        if not isinstance(name, str) or not 0 < len(name) <= 255:
            raise RuleError(N_("Scan %(n)s: its file name is missing or too long."), n=n)
        if scan.get("mime") not in SCAN_MIMES:
            raise RuleError(N_("Scan %(n)s: only JPEG images and PDF files are taken."), n=n)
        if scan.get("material") not in materials:
            raise RuleError(N_("Scan %(n)s is attached to a material this item does not ask for."), n=n)


def check_hand_out(body: Any) -> str:
    """The shape of a hand-out body; returns the case id it names."""
    if not isinstance(body, dict):
        raise RuleError(N_("The hand-out is not an object."))
    case_id = body.get("id")
    if not isinstance(case_id, str) or not UUID4.fullmatch(case_id):
        raise RuleError(N_("The hand-out does not name a case id."))
    if not isinstance(body.get("by"), str) or not body["by"].strip():
        raise RuleError(N_("The hand-out does not name who handed out the result."))
    at = body.get("at")
    if not isinstance(at, str) or not LOCAL_TIME.fullmatch(at):
        raise RuleError(N_("The hand-out's time is not of the form YYYY-MM-DDTHH:MM:SS+08:00."))
    if body.get("identity_checked") is not True:
        raise RuleError(N_("A result may be handed out only after checking the citizen's identity."))
    if "collector" in body:
        check_collector(body["collector"])
    return case_id


# --- corrections, supplements, hand-out to a proxy ---------------------------------------------------

#: What is wrong with a material the county asks for again (``case.decided`` ``materials[].problem``).
PROBLEMS: dict[str, str] = {"missing": N_("Missing"), "unclear": N_("Not legible"), "expired": N_("Expired"),
                            "mismatch": N_("Details do not match"), "other": N_("Other problem")}
MAX_PROBLEM_TEXT = 200


def check_correction(materials: Any, item: dict[str, Any]) -> list[dict[str, str]]:
    """The materials a county correction request lists: ``[{"code", "problem", "text"}]``, each code
    one of the item's materials (once), each problem one of PROBLEMS, ``text`` needed for "other".
    Returns them with ``text`` always present; RuleError for the first problem."""
    if not isinstance(materials, list):
        raise RuleError(N_("The list of materials to correct is not a list."))
    names = {m["code"]: m["name"] for m in item.get("materials", [])}
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for n, m in enumerate(materials, 1):
        if not isinstance(m, dict) or not set(m) <= {"code", "problem", "text"}:
            raise RuleError(N_("Material %(n)s to correct is not an object with code, problem and text."), n=n)
        code, problem, text = m.get("code"), m.get("problem"), m.get("text", "")
        if not isinstance(code, str) or code not in names:
            raise RuleError(N_("Material %(n)s to correct is not one this item asks for."), n=n)
        if code in seen:
            raise RuleError(N_("Material %(code)s is listed twice."), code=code)
        if problem not in PROBLEMS:
            raise RuleError(N_("Material %(code)s: choose what is wrong with it."), code=code)
        if not isinstance(text, str) or len(text) > MAX_PROBLEM_TEXT:
            raise RuleError(N_("Material %(code)s: the description is too long."), code=code)
        if problem == "other" and not text.strip():
            raise RuleError(N_("Material %(code)s: say what the other problem is."), code=code)
        seen.add(code)
        out.append({"code": code, "problem": problem, "text": text.strip()})
    return out


def _check_time(body: dict[str, Any], what: str) -> None:
    at = body.get("at")
    if not isinstance(at, str) or not LOCAL_TIME.fullmatch(at):
        raise RuleError(N_("The time of %(fact)s is not of the form YYYY-MM-DDTHH:MM:SS+08:00."), fact=what)
    try:
        dt.datetime.fromisoformat(at)
    except ValueError:
        raise RuleError(N_("The time of %(fact)s is not of the form YYYY-MM-DDTHH:MM:SS+08:00."), fact=what) from None


def _check_case_id(body: Any, what: str) -> str:
    if not isinstance(body, dict):
        raise RuleError(N_("%(fact)s is not an object."), fact=what)
    case_id = body.get("id")
    if not isinstance(case_id, str) or not UUID4.fullmatch(case_id):
        raise RuleError(N_("%(fact)s does not name a case id."), fact=what)
    by = body.get("by")
    if not isinstance(by, str) or not by.strip() or len(by) > 50:
        raise RuleError(N_("%(fact)s does not name the agent who recorded it."), fact=what)
    return case_id


def check_supplement(body: Any, item: dict[str, Any] | None) -> str:
    """An ``application.supplemented`` body: what the citizen brought after the county asked for
    corrections. ``item`` is the case's catalogue item (None when the case is unknown: only the shape
    is checked, the transition table refuses the rest). Returns the case id."""
    what = FACT_LABELS[SUPPLEMENTED]
    case_id = _check_case_id(body, what)
    _check_time(body, what)
    if set(body) - {"id", "by", "at", "materials", "scans", "note"}:
        raise RuleError(N_("%(fact)s has fields nobody defined."), fact=what)
    materials, note = body.get("materials"), body.get("note")
    if not isinstance(materials, list) or not all(isinstance(m, str) for m in materials) \
            or len(set(materials)) != len(materials):
        raise RuleError(N_("The supplement's materials are not a list of distinct material codes."))
    if not isinstance(note, str) or len(note) > MAX_TEXT:
        raise RuleError(N_("The supplement's note is missing or too long."))
    if not materials and not body.get("scans") and not note.strip():
        raise RuleError(N_("A supplement needs at least one material, scan or note."))
    if item is not None:
        codes = {m["code"] for m in item.get("materials", [])}
        if any(m not in codes for m in materials):
            raise RuleError(N_("The supplement lists a material this item does not ask for."))
        _check_scans(body, item)
    return case_id


def check_collector(collector: Any) -> dict[str, str]:
    """Who collected a result for the applicant (代领): name, ID number and relation."""
    if not isinstance(collector, dict) or set(collector) != {"name", "id_number", "relation"} \
            or not all(isinstance(v, str) for v in collector.values()):
        raise RuleError(N_("A proxy who collects needs a name, an ID number and a relation to the applicant."))
    if not collector["name"].strip() or len(collector["name"]) > 50:
        raise RuleError(N_("Enter the name of the person who collects."))
    problem = id_number_error(collector["id_number"])
    if problem or collector["id_number"] != collector["id_number"].strip().upper():
        raise RuleError(N_("The collector's ID number: %(problem)s"), problem=problem or "")
    if not collector["relation"].strip() or len(collector["relation"]) > 30:
        raise RuleError(N_("Say how the person who collects is related to the applicant."))
    return collector


# --- receipt numbers a restored station skips ---------------------------------------------------------

#: After a restore the day's counter jumps to the next block of this many numbers.
RESTORE_BLOCK = 1000


def check_voided(body: Any, author: str) -> None:
    """``station.receipts_voided``: numbers ``first``..``last`` of ``day`` (YYYYMMDD) that a station
    restored from a backup will never issue, because the lost copy may have issued them."""
    if not isinstance(body, dict) or set(body) != {"day", "first", "last", "reason", "at"}:
        raise RuleError(N_("A record of voided receipt numbers needs day, first, last, reason and at."))
    day, first, last = body["day"], body["first"], body["last"]
    if not isinstance(day, str) or _day(f"{day[:4]}-{day[4:6]}-{day[6:]}") is None or len(day) != 8:
        raise RuleError(N_("A record of voided receipt numbers names no valid day."))
    if type(first) is not int or type(last) is not int or not 1 <= first <= last <= 99999:
        raise RuleError(N_("A record of voided receipt numbers has a bad range."))
    if not isinstance(body["reason"], str) or len(body["reason"]) > 200:
        raise RuleError(N_("A record of voided receipt numbers has a bad reason."))
    _check_time(body, N_("voided receipt numbers"))
