"""What the county refuses, shared by its modules (cases, catalogue, stations, the facade)."""

from __future__ import annotations


def N_(message: str) -> str:
    """Mark a message id for translation; the web layer translates it."""
    return message


class CountyError(Exception):
    """A request the county refuses; ``status`` is the HTTP status, the message a message id."""

    def __init__(self, status: int, code: str, message: str, params: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.params = status, code, params or {}

    def text(self, gettext: object) -> str:
        """The message in the reader's language (``gettext``: the request's translation function)."""
        translated = gettext(str(self))  # type: ignore[operator]
        try:
            return str(translated % self.params) if self.params else str(translated)
        except (KeyError, TypeError, ValueError):
            return str(translated)
