"""The names a JSON API error's ``details`` uses: the API's own (``applicant.id_number``,
``fields.birth_date``, ``scans``), never the form's (``id_number``, ``f_birth_date``, ``scan_id_card``).

The intake checks (node/services/cases.py, sync/law/intake.py) report errors under the names of the page's
form; every API answer of the station passes them through :func:`api_names` once."""

from __future__ import annotations

from typing import Callable

APPLICANT = ("name", "id_number", "phone", "address")


def api_name(form_name: str, prefix: str = "") -> str:
    """One form field's name in the application body of the API, under ``prefix`` (e.g. ``items[1].``
    for the items of a bundle): ``id_number`` → ``applicant.id_number``, ``f_x`` → ``fields.x``,
    ``scan_<material>`` → ``scans``; every other name (``materials``, ``reason``, ``decision``) is the same."""
    if form_name in APPLICANT:
        return f"{prefix}applicant.{form_name}"
    if form_name.startswith("f_"):
        return f"{prefix}fields.{form_name[2:]}"
    if form_name.startswith("scan_"):
        return f"{prefix}scans"
    return prefix + form_name


def api_names(errors: dict[str, str], translate: Callable[[str], str] = str, prefix: str = "") -> dict[str, str]:
    """An IntakeError's ``errors`` (form name → message id) as the API's ``details``: API names,
    messages in the reader's language (``translate``). Two form names never meet on one API name
    except the scans, whose messages are joined."""
    details: dict[str, str] = {}
    for key, message in errors.items():
        name = api_name(key, prefix)
        text = translate(message)
        details[name] = f"{details[name]} {text}" if name in details else text
    return details
