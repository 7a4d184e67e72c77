"""What the station's pages and API answer while it is locked (node/vault.py): 423 ``locked``."""

from __future__ import annotations

import logging
import sqlite3

from starlette.requests import Request
from starlette.responses import Response

from node.vault import Locked
from templates import N_, gettext_for, locale_of, render
from templates.web import api_error

logger = logging.getLogger("lastmile.node")

LOCKED = N_("The station is locked: since it started, its personal data stays encrypted until an agent "
            "logs in with a password (or a program uses its API token). Log in again to unlock it.")


async def locked(request: Request, exc: Exception) -> Response:
    """A database error while the station is locked is the lock: 423, a JSON error on the API, a
    page that says so elsewhere. Any other database error is raised on (a 500)."""
    if not (isinstance(exc, Locked) or request.app.state.station.store.vault.locked):
        raise exc
    logger.warning("%s %s refused: the station is locked", request.method, request.url.path)
    message = gettext_for(locale_of(request))(LOCKED)
    if request.url.path.startswith("/api/"):
        return api_error(423, "locked", message, {})
    return render(request, "error.html", 423, message=message)


HANDLERS = {sqlite3.OperationalError: locked}
