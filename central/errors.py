"""What the county refuses, shared by its modules (cases, catalogue, stations, the facade)."""

from __future__ import annotations


def N_(message: str) -> str:
    """Mark a message id for translation; the web layer translates it."""
    return message


class CountyError(Exception):
    """A request the county refuses; ``status`` is the HTTP status, the message a message id."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code
