"""The county's refusals as JSON API errors whose ``details`` name the field of the API body at fault
(``reason``, ``materials``, ``answer``), in the API's own names."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from central.errors import CountyError
from templates import gettext_for, locale_of
from templates.web import api_error

# a refusal's code → the field of the API body it is about, for ``details``
FIELD_OF = {"bad_decision": "decision", "note_required": "note", "note_too_long": "note",
            "reason_required": "reason", "reason_too_long": "reason", "basis_required": "basis",
            "basis_too_long": "basis", "bad_attachment": "attachments", "bad_materials": "materials",
            "answer_required": "answer", "answer_too_long": "answer"}


def refusal(request: Request, exc: CountyError) -> Response:
    """A CountyError as the API's answer; ``details`` names the body's field when the code says which."""
    text = exc.text(gettext_for(locale_of(request)))
    field = FIELD_OF.get(exc.code)
    return api_error(exc.status, exc.code, text, {field: text} if field else None)
