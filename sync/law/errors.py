"""A broken rule, as both ends report it: ``RuleError`` carries an English message id (marked
with ``N_``) and its parameters, so the page can show it in the reader's language and the county
can store and send it as a repair reason (PROTOCOL.md §8.3)."""

from __future__ import annotations

import json
from typing import Any


def N_(message: str) -> str:
    """Mark a message id for translation; the page translates it."""
    return message


class RuleError(Exception):
    """A fact breaks a rule. ``message`` is an English message id with ``%(name)s`` parameters,
    ``params`` their values; ``reason()`` is the form stored and sent as a repair reason."""

    def __init__(self, message: str, **params: Any) -> None:
        self.message = message
        self.params = {k: (v[:200] if isinstance(v, str) else v) for k, v in params.items()}
        super().__init__(self.english())

    def english(self) -> str:
        try:
            return self.message % self.params
        except (KeyError, TypeError, ValueError):
            return self.message

    def reason(self) -> str:
        """``{"m": message id, "a": {parameters}}`` as compact JSON (see PROTOCOL.md §8.3)."""
        return json.dumps({"m": self.message, "a": self.params}, ensure_ascii=False, separators=(",", ":"),
                          sort_keys=True)
