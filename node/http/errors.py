"""How the station's web layer answers a refused intake, in one place: ``STATUS`` maps each error
type of node/services/cases.py to its HTTP status (``status_of``; the pages use it too), and
``intake_refusal`` makes the JSON API's answer.

The names a JSON API error's ``details`` uses: the API's own (``applicant.id_number``,
``fields.birth_date``, ``scans``), never the form's (``id_number``, ``f_birth_date``, ``scan_id_card``).

The intake checks (node/services/cases.py, sync/law/intake.py) report errors under the names of the page's
form; every API answer of the station passes them through :func:`api_names` once."""

from __future__ import annotations

from typing import Callable

from starlette.requests import Request
from starlette.responses import Response

from node.services.cases import IntakeError, NoSuchCase, WrongState
from templates import gettext_for, locale_of
from templates.web import api_error

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


#: each outcome of a refused intake, its status and the API's error code; IntakeError itself is bad input
STATUS: dict[type[IntakeError], tuple[int, str]] = {NoSuchCase: (404, "not_found"), WrongState: (409, "conflict"),
                                                    IntakeError: (422, "invalid")}


def status_of(exc: IntakeError) -> int:
    return next(status for kind, (status, _) in STATUS.items() if isinstance(exc, kind))


def intake_refusal(request: Request, exc: IntakeError,
                   names: Callable[[dict[str, str], Callable[[str], str]], dict[str, str]] = api_names) -> Response:
    """An IntakeError as the JSON API's answer: 404 ``not_found`` (its message as is, no details),
    409 ``conflict`` or 422 ``invalid`` with ``details`` (``names``: the API's names of the fields,
    messages in the reader's language)."""
    status, code = next(v for kind, v in STATUS.items() if isinstance(exc, kind))
    if isinstance(exc, NoSuchCase):
        return api_error(status, code, next(iter(exc.errors.values())))
    details = names(exc.errors, gettext_for(locale_of(request)))
    return api_error(status, code, " ".join(details.values()), details)
