"""One history per case (电子监察): every fact in a station's two streams whose body names the case,
each with a label and the state of its signature.

Both apps use this: the station on its application page and API, the county on its case page and
API. They find the events (sync/log.py ``events_naming``) and check each signature again now
(``log.signature_state``, with the key history the caller passes: the station's keys and the
county's), so an event edited in the database shows as ``invalid``; this module makes the lines.

Generic over kinds: a kind this module has no label for gets a generic one, never an error. Labels
are message ids (``N_``) with parameters; the app translates them (``translate``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from sync.law import transitions
from sync.law.errors import N_

#: a label per kind, for a list of what happened to a case
LABELS: dict[str, str] = {
    transitions.ACCEPTED: N_("Application accepted"),
    transitions.CORRECTION_NOTICE: N_("Correction notice issued"),
    transitions.REFUSED: N_("Application refused"),
    transitions.CASE_DECIDED: N_("County decision"),
    transitions.HAND_OUT: N_("Result handed out"),
    transitions.SUPPLEMENTED: N_("Supplement recorded"),
    transitions.RATED: N_("Rated by the citizen"),
    transitions.RATING_ANSWERED: N_("County answered the rating"),
    transitions.STATION_KEYS_ROTATED: N_("Station keys rotated"),
    transitions.COUNTY_KEYS_ROTATED: N_("County keys rotated"),
    transitions.CATALOG_PUBLISHED: N_("Catalogue published"),
}
GENERIC = N_("Event %(kind)s")
DECIDED_AS = N_("County decision: %(decision)s")


def label_of(kind: str, body: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The message id and parameters that name this fact in a case's history."""
    if kind == transitions.CASE_DECIDED:
        status = transitions.DECISIONS.get(str(body.get("decision")))
        if status in transitions.STATE_LABELS:
            return DECIDED_AS, {"decision": transitions.STATE_LABELS[status]}
    if kind in LABELS:
        return LABELS[kind], {}
    return GENERIC, {"kind": str(kind)[:100]}


def entry(ev: Any, *, signature: str, where: dict[str, str], received_at: str | None,
          set_aside: str | None = None) -> dict[str, Any]:
    """One line of a history, before translation (``label_id``, ``label_args``)."""
    b = ev.body
    by = b.get("by") if isinstance(b.get("by"), str) else b.get("agent") if isinstance(b.get("agent"), str) else ""
    at = b.get("at") if isinstance(b.get("at"), str) else ev.at
    label_id, label_args = label_of(ev.kind, b)
    return {"kind": ev.kind, "label_id": label_id, "label_args": label_args, "at": at, "received_at": received_at,
            "by": by, "where": where, "seq": ev.seq, "stream": ev.stream, "signature": signature,
            "set_aside": set_aside}


def translated(entries: list[dict[str, Any]], gettext: Callable[..., str]) -> list[dict[str, Any]]:
    """The entries with ``label`` in the reader's language (``gettext(message, **params)``); the
    parameters are message ids too and are translated first."""
    out = []
    for e in entries:
        args = {k: gettext(v) if isinstance(v, str) and k != "kind" else v for k, v in e["label_args"].items()}
        try:
            label = gettext(e["label_id"], **args) if args else gettext(e["label_id"])
        except (KeyError, TypeError, ValueError):
            label = e["label_id"]
        out.append({k: v for k, v in e.items() if k not in ("label_id", "label_args")} | {"label": label})
    return out
