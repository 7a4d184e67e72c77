"""Keep personal data out of the station's logs: a search (``/search?q=张三``,
``/api/v1/applications?q=<ID number>``) would otherwise put the name or ID number into uvicorn's
access log, which journald or a log file keeps long after the case is purged (node/services/retention.py).
The access log keeps the method, the path and the status; the query string is replaced by ``?…``."""

from __future__ import annotations

import logging

ACCESS_LOGGER = "uvicorn.access"


class DropQuery(logging.Filter):
    """Rewrites uvicorn's access record (client, method, full path, HTTP version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?…", *args[3:])
        return True


def install() -> None:
    """Once per process; the filter survives uvicorn's own logging configuration."""
    access = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, DropQuery) for f in access.filters):
        access.addFilter(DropQuery())
