"""Every fact (event kind) as a typed value: who writes it, its body fields, its check, its wire form.

The one home of what the station and the county both need to know about a fact (PROTOCOL.md §4):
``SPECS[kind]`` gives its author side, its body fields and ``validate(body, context)``; the case
statuses (``Status``), the kind names and the transition table (``TRANSITIONS`` / ``next_state``)
are defined once in sync/law/transitions.py and re-exported here. Both apps import this module; node/
and central/ never import each other.

Wire form: a fact's body is the event body exactly as before (``to_body`` only checks the field
names), so nothing on the wire changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from crypto.errors import CryptoError
from crypto.keys import PublicKeys, key_id, unb64
from sync.law import decisions, intake, ratings, reports, retention, sittings, workdays
from sync.law.errors import N_, RuleError
from sync.law.transitions import (  # noqa: F401 - the shared vocabulary, re-exported: import it from here
    ACCEPTED, APPLICATION_KINDS, CALENDAR_PUBLISHED, CASE_DECIDED, CATALOG_PUBLISHED, CORRECTION_NOTICE,
    COUNTY_KEYS_ROTATED, DECISIONS, HAND_OUT, NEW, RATED, RATING_ANSWERED, RECEIPTS_VOIDED, REFUSED,
    STATION_KEYS_ROTATED, SUPPLEMENTED, TRANSITIONS, Status, county_state, decided, next_state)

STATION, COUNTY = "station", "county"
HANDED_OUT = HAND_OUT


@dataclass(frozen=True, slots=True)
class Context:
    """What a check needs beyond the body: the event's author, the author station's level, the
    catalogue version the body names (None if never published), and for a fact about a case held
    already, the case's item as its signed application lists it (``{"materials": [...]}``, None if
    the case is unknown)."""
    author: str = ""
    level: str | None = None
    catalog: Mapping[str, Any] | None = None
    item: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class FactSpec:
    kind: str
    author: str                                  # STATION (upstream) or COUNTY (downstream)
    fields: tuple[str, ...]                      # required body fields
    optional: tuple[str, ...] = ()
    check: Callable[[Any, Context], Any] | None = field(default=None, repr=False)

    def validate(self, body: Any, context: Context = Context()) -> Any:
        """Raise RuleError naming the first broken rule; returns what the check found (the catalogue
        item of an application, the case id of a hand-out …)."""
        if self.check is not None:
            return self.check(body, context)
        if not isinstance(body, dict):
            raise RuleError(N_("The application is not an object."))
        for name in self.fields:
            if name not in body:
                raise RuleError(N_("The application lacks the field %(field)s."), field=name)
        return None

    def to_body(self, **values: Any) -> dict[str, Any]:
        """The wire body: exactly the values given, which must name every required field and no other."""
        missing = [f for f in self.fields if f not in values]
        unknown = [f for f in values if f not in self.fields and f not in self.optional]
        if missing or unknown:
            raise ValueError(f"{self.kind}: missing {missing}, unknown {unknown}")
        return dict(values)


def _check_application(kind: str) -> Callable[[Any, Context], Any]:
    def check(body: Any, ctx: Context) -> Any:
        item = intake.check_application(kind, body, author=ctx.author, level=ctx.level,
                                        catalog=dict(ctx.catalog) if ctx.catalog is not None else None)
        sittings.check_bundle_field(body)       # 一件事一次办: the optional link to the sitting's other cases
        return item
    return check


def _check_hand_out(body: Any, ctx: Context) -> str:
    return intake.check_hand_out(body)


def _check_supplement(body: Any, ctx: Context) -> str:
    return intake.check_supplement(body, dict(ctx.item) if ctx.item is not None else None)


def _check_decision(body: Any, ctx: Context) -> str:
    """A county decision: its fields, and for a correction request the materials it lists, which
    must be the case's own (checked where the case is known)."""
    _check_decided(body, ctx)          # the six fields, and a written decision's (decisions.py)
    if "materials" in body:
        if body["decision"] != "correction":
            raise RuleError(N_("Only a correction request lists materials to correct."))
        if ctx.item is not None:
            intake.check_correction(body["materials"], dict(ctx.item))
        elif not isinstance(body["materials"], list):
            raise RuleError(N_("The list of materials to correct is not a list."))
    return body["id"]


def _check_voided(body: Any, ctx: Context) -> None:
    intake.check_voided(body, ctx.author)


def _check_report(body: Any, ctx: Context) -> str:
    return reports.check_filed(body, author=ctx.author,
                               items=list(ctx.catalog.get("items", [])) if ctx.catalog is not None else None)


def _check_report_down(kind: str) -> Callable[[Any, Context], Any]:
    def check(body: Any, ctx: Context) -> str:
        return reports.check_county(kind, body)
    return check


def case_item(application_body: Any) -> dict[str, Any] | None:
    """The item of a case as its signed application lists it: what a correction or a supplement
    may name, the same at both ends whatever the catalogue has become since."""
    if not isinstance(application_body, dict) or not isinstance(application_body.get("materials"), list):
        return None
    return {"materials": [m for m in application_body["materials"] if isinstance(m, dict)
                          and isinstance(m.get("code"), str) and isinstance(m.get("name"), str)]}


def _check_calendar(body: Any, ctx: Context) -> Any:
    try:
        return workdays.check_body(body)
    except workdays.ScheduleError as exc:
        raise RuleError(exc.message, **exc.params) from None


def _check_keys(body: Any, ctx: Context) -> Any:
    try:
        if not isinstance(body, dict) or set(body) != {"sign", "enc"}:
            raise ValueError("fields")
        return PublicKeys.from_dict(body)
    except (ValueError, CryptoError):
        raise RuleError(N_("The keys a station announced are not two valid public keys.")) from None


def _check_decided(body: Any, ctx: Context) -> Any:
    return decisions.check_decided(body, tuple(DECISIONS))     # reason, basis, appeal, attachments


def _check_rating(body: Any, ctx: Context) -> str:
    return ratings.check_rating(body)


def _check_rating_answer(body: Any, ctx: Context) -> str:
    return ratings.check_rating_answer(body)


def check_directory(body: Any) -> dict[str, dict[str, Any]]:
    """The body of a ``stations.directory`` fact as station code -> entry; RuleError if malformed."""
    bad = RuleError(N_("The directory of station keys is malformed."))
    if not isinstance(body, dict) or set(body) != {"stations", "at"} or not isinstance(body["at"], str) \
            or not isinstance(body["stations"], list):
        raise bad
    out: dict[str, dict[str, Any]] = {}
    for st in body["stations"]:
        if not isinstance(st, dict) or set(st) != {"code", "name", "keys"} or not isinstance(st["code"], str) \
                or not isinstance(st["name"], str) or not isinstance(st["keys"], list) or st["code"] in out:
            raise bad
        for k in st["keys"]:
            if not isinstance(k, dict) or set(k) != {"sign_id", "sign_key", "valid_from", "valid_until", "revoked_at"}:
                raise bad
            try:
                if key_id(unb64(k["sign_key"])) != k["sign_id"]:
                    raise bad
            except CryptoError:
                raise bad from None
            if not isinstance(k["valid_from"], str) or any(
                    k[f] is not None and not isinstance(k[f], str) for f in ("valid_until", "revoked_at")):
                raise bad
        out[st["code"]] = st
    return out


_APPLICATION_FIELDS = ("id", "receipt_no", "station", "agent", "item_code", "item_name", "department",
                       "catalog_version", "applicant", "fields", "materials", "missing", "reason", "at")

SPECS: dict[str, FactSpec] = {s.kind: s for s in (
    FactSpec(ACCEPTED, STATION, _APPLICATION_FIELDS, ("time_limit_days", "promised_date", "scans", "bundle"),
             _check_application(ACCEPTED)),
    FactSpec(CORRECTION_NOTICE, STATION, _APPLICATION_FIELDS, ("scans", "bundle"), _check_application(CORRECTION_NOTICE)),
    FactSpec(REFUSED, STATION, _APPLICATION_FIELDS, ("scans",), _check_application(REFUSED)),
    FactSpec(HANDED_OUT, STATION, ("id", "by", "at", "identity_checked"), ("collector",), _check_hand_out),
    FactSpec(SUPPLEMENTED, STATION, ("id", "by", "at", "materials", "note"), ("scans",), _check_supplement),
    FactSpec(STATION_KEYS_ROTATED, STATION, ("sign", "enc"), (), _check_keys),
    FactSpec(RECEIPTS_VOIDED, STATION, ("day", "first", "last", "reason", "at"), (), _check_voided),
    FactSpec(reports.FILED, STATION, ("id", "receipt_no", "station", "agent", "at", "citizen", "tried", "where",
                                       "item_code", "contact"), (), _check_report),
    FactSpec(reports.TAKEN, COUNTY, ("id", "by", "department", "at"), (), _check_report_down(reports.TAKEN)),
    FactSpec(reports.ANSWERED, COUNTY, ("id", "by", "department", "at", "answer"), (),
             _check_report_down(reports.ANSWERED)),
    FactSpec(CATALOG_PUBLISHED, COUNTY, ("catalog",)),
    FactSpec(CASE_DECIDED, COUNTY, ("id", "decision", "note", "by", "department", "at"),
             ("materials", "reason", "basis", "appeal", "attachments"), _check_decision),
    FactSpec(COUNTY_KEYS_ROTATED, COUNTY, ("sign", "enc")),
    FactSpec(CALENDAR_PUBLISHED, COUNTY, ("year", "holidays", "workdays", "at", "by"), (), _check_calendar),
    FactSpec(RATED, STATION, ("id", "score", "comment", "by", "at"), (), _check_rating),
    FactSpec(RATING_ANSWERED, COUNTY, ("id", "answer", "by", "department", "at"), (), _check_rating_answer),
    FactSpec("stations.directory", COUNTY, ("stations", "at"), (), lambda body, ctx: check_directory(body)),
    FactSpec(retention.RETENTION_SET, COUNTY, ("retention_days", "at", "by"), (),
             lambda body, ctx: retention.check_body(body)),
)}
STATIONS_DIRECTORY = "stations.directory"

UPSTREAM = tuple(k for k, s in SPECS.items() if s.author == STATION)
DOWNSTREAM = tuple(k for k, s in SPECS.items() if s.author == COUNTY)


def spec(kind: str) -> FactSpec:
    """The spec of ``kind``; RuleError (the repair reason) for a kind nobody defined."""
    try:
        return SPECS[kind]
    except KeyError:
        raise RuleError(N_("Unknown event kind %(kind)s."), kind=kind) from None


@dataclass(frozen=True, slots=True)
class Fact:
    """A fact about to be recorded: its kind and wire body."""
    kind: str
    body: dict[str, Any]

    @property
    def spec(self) -> FactSpec:
        return spec(self.kind)

    def validate(self, context: Context = Context()) -> Any:
        return self.spec.validate(self.body, context)
