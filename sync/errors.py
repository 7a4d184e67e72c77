"""Errors raised by sync/, classified by what the caller should do.

SyncError
 ├── Retryable          the link or the county is not there now: back off and try again
 └── Rejected           retrying will not help: stop and show a human
      ├── BadEvent          an event is malformed, mis-chained at its source or badly signed
      ├── UnknownStation    the county does not know the sending station
      ├── RevokedStation    the station's enrolment was revoked
      ├── CursorAhead       the other side confirms more than this side ever wrote (a fork)
      └── StaleAnswer       an answer that names no push this station sent (or not the one just sent)

Each error has a stable ``code``; the county maps classes to HTTP statuses in one place
(central/http/pages.py STATUS_OF_ERROR).
"""

from __future__ import annotations


class SyncError(Exception):
    code = "sync"


class Retryable(SyncError):
    code = "retry"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Rejected(SyncError):
    code = "rejected"


class BadEvent(Rejected):
    code = "bad_event"


class UnknownStation(Rejected):
    code = "unknown_station"


class RevokedStation(Rejected):
    code = "revoked_station"


class CursorAhead(Rejected):
    code = "cursor_ahead"


class StaleAnswer(Rejected):
    code = "stale_answer"
