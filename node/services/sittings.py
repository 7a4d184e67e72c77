"""一件事一次办 at the station: one sitting, one applicant, several items.

The agent enters the applicant once, each item's fields (a field two items share by name is asked
once), and ticks and scans the union of the items' materials once (a material two items need is one
tick and one scan, listed on both cases). One submission makes one sitting (a ``bundle_id``) and one
case per item: each its own signed ``application.accepted`` (or, for the whole sitting,
``application.correction_notice``) with its own gapless receipt number and promised date, and the
body field ``bundle`` linking it to the others (sync/law/sittings.py). All of it is one transaction
through the ordinary intake (node/services/cases.py ``take``, ``Station.record``): a crash or any item's
error leaves either every case or none, and no receipt number is used by a refused sitting.

A station offers a catalogue bundle only if its level may accept every item of it (a bundle is
done at one counter in one sitting, or not at all). Pure orchestration, no HTTP.
"""

from __future__ import annotations

import sqlite3
import uuid
from typing import TYPE_CHECKING, Any, Callable

from node.services import cases, receipts
from node.services import search
from node.services.scans import Scan
from sync.law import facts, sittings, workdays
from sync.law.errors import N_, RuleError
from sync.law.intake import materials_of

if TYPE_CHECKING:
    from node.services.desk import Desk
    from node.store import Store

DECISIONS = ("accept", "correction")
APPLICANT = ("name", "id_number", "phone", "address")
# The note a correction notice of a sitting carries on an item whose own materials are complete: it
# waits for the others (the citizen's document, in the catalogue's language like the item names).
WAITS_FOR_SITTING = "本事项材料齐全，待同次办理的其他事项补齐材料后一并受理（一件事一次办）。"


class BundleError(Exception):
    """The sitting cannot be taken as it is. ``common``: errors of what the items share (applicant
    keys, ``scans``, ``decision``, ``items``); ``per_item``: one dict per item as node/services/cases.py names
    them (``f_<field>``, ``materials``, ``item`` …); ``missing``: per item, the required materials not
    received (names), for the one correction notice the agent should issue instead."""

    def __init__(self, common: dict[str, str], per_item: list[dict[str, str]] | None = None,
                 missing: list[list[str]] | None = None) -> None:
        self.common, self.per_item, self.missing = common, per_item or [], missing or []
        super().__init__("; ".join(f"{k}: {v}" for k, v in self.flat().items()))

    def flat(self) -> dict[str, str]:
        """Every error keyed as the page's form names it (a shared field's first message wins)."""
        out = dict(self.common)
        for errors in self.per_item:
            for key, message in errors.items():
                out.setdefault(key, message)
        return out


def offered(st: Desk) -> list[dict[str, Any]]:
    """The catalogue's bundles this station may take, each with ``item_list`` (the catalogue items)."""
    catalog = st.store.catalog()
    by_code = {i["code"]: i for i in catalog.get("items", [])}
    try:
        bundles = sittings.check_catalog_bundles(catalog)
    except RuleError:
        return []           # the county checks before it publishes; a broken list offers nothing
    return [{**b, "item_list": [by_code[c] for c in b["items"]]} for b in bundles
            if all(st.level in by_code[c].get("levels", []) for c in b["items"])]


def bundle(st: Desk, code: str) -> dict[str, Any] | None:
    return next((b for b in offered(st) if b["code"] == code), None)


def find(st: Desk, q: str) -> list[dict[str, Any]]:
    """Bundles whose name, code, description or items' names match ``q`` (the search box)."""
    q = q.strip()
    if not q:
        return []
    return [b for b in offered(st) if search.items([{"name": b["name"], "name_en": b["name_en"], "code": b["code"],
                                                     "keywords": [b["description"], *(i["name"] for i in b["item_list"])]}],
                                                   q)]


def merged(items: list[dict[str, Any]]) -> dict[str, Any]:
    """What the one form asks: ``fields`` as ``[(item, [its fields not asked before])]`` (a field name
    is asked under the first item that has it) and ``materials``, the union by code in item order, each
    with ``items`` (the codes of the items that need it) and ``required`` if any of them requires it."""
    asked: set[str] = set()
    fields = []
    for item in items:
        own = [f for f in item["fields"] if f["name"] not in asked]
        asked.update(f["name"] for f in own)
        fields.append((item, own))
    materials: dict[str, dict[str, Any]] = {}
    for item in items:
        for m in item["materials"]:
            if m["code"] not in materials:
                materials[m["code"]] = {**m, "items": [], "required": False}
            materials[m["code"]]["items"].append(item["code"])
            materials[m["code"]]["required"] = materials[m["code"]]["required"] or bool(m.get("required"))
    return {"fields": fields, "materials": list(materials.values())}


def take(st: Desk, entries: list[tuple[str, dict[str, Any]]], decision: str, agent: str,
         attached: list[Scan] | tuple[Scan, ...] = (), *, code: str | None = None,
         within: Callable[[sqlite3.Connection, str], None] | None = None) -> list[dict[str, Any]]:
    """Record one sitting: ``entries`` is ``[(item code, form)]`` (each form as node/services/cases.py reads
    it: applicant keys, ``f_<field>``, ``materials``, ``reason``). ``within(db, first case id)`` runs
    last in the transaction (node/services/idem.py). Returns the cases in item order; BundleError otherwise."""
    if decision not in DECISIONS:
        raise BundleError({"decision": N_("A sitting of several items is accepted, or given one correction notice "
                                          "for all its items.")})
    codes = [c for c, _ in entries]
    if not sittings.MIN_ITEMS <= len(codes) <= sittings.MAX_ITEMS:
        raise BundleError({"items": N_("A sitting has 2 to 10 items.")})
    if len(set(codes)) != len(codes):
        raise BundleError({"items": N_("Each item is applied for once in a sitting.")})
    items = [st.item(c) for c in codes]
    unknown = [{"item": N_("This service item is not in the station's catalogue.")} if i is None else {}
               for i in items]
    if any(unknown):
        raise BundleError({}, unknown)
    asked = {m["code"] for i in items if i for m in i["materials"]}
    if any(s.material not in asked for s in attached):
        raise BundleError({"scans": N_("A scan is attached to a material none of these items asks for.")})
    if code is not None and code not in {b["code"] for b in offered(st)}:
        raise BundleError({"bundle": N_("This station does not offer this bundle.")})
    sealed = {s.sha256: st.seal_scan(s) for s in attached}          # once per file, before the transaction
    now = st.now()
    sitting = str(uuid.uuid4())
    ids = [str(uuid.uuid4()) for _ in items]
    link = {"id": sitting, "code": code, "cases": ids}
    with st.store.transaction() as db:
        calendar = workdays.calendar_from(db)
        version = int(st.store.catalog()["version"])
        taken: list[cases.Intake] = []
        errors: list[dict[str, str]] = []
        missing: list[list[str]] = []
        for n, ((_, form), item) in enumerate(zip(entries, items)):
            assert item is not None
            _, lacking = materials_of(item, set(form.get("materials", [])))
            missing.append([m["name"] for m in item["materials"] if m["code"] in lacking])
            if decision == "correction" and not lacking and not str(form.get("reason", "")).strip():
                form = {**form, "reason": WAITS_FOR_SITTING}
            try:
                taken.append(cases.take(item, form, decision=decision, station=st.code, agent=agent,
                                        catalog_version=version, now=now, receipt_no=receipts.next_number(st, db, now),
                                        level=st.level, case_id=ids[n], calendar=calendar))
                errors.append({})
            except cases.IntakeError as exc:
                errors.append(dict(exc.errors))
        if any(errors):             # the transaction rolls back: no case, no receipt number used
            common = {k: v for e in errors for k, v in e.items() if k in APPLICANT}
            raise BundleError(common, [{k: v for k, v in e.items() if k not in APPLICANT} for e in errors],
                              missing)
        for intake, item in zip(taken, items):
            assert item is not None
            own = {m["code"] for m in item["materials"]}
            listed = [{"sha256": s.sha256, "size": len(s.data), "name": s.name, "mime": s.mime,
                       "material": s.material} for s in attached if s.material in own]
            body = {**intake.body, "bundle": link}
            st.record(db, facts.Fact(intake.kind, {**body, "scans": listed} if listed else body),
                      check=facts.Fact(intake.kind, body))
            for scan in listed:
                st.store.db["scans"].insert({**scan, "app_id": body["id"], "sealed_size": sealed[scan["sha256"]],
                                             "sent": 0, "done": 0, "created_at": now.isoformat()}, ignore=True)
        if within is not None:
            within(db, ids[0])
    return [st.store.application(i) or {} for i in ids]


def link_json(body: Any) -> dict[str, Any]:
    """``bundle_id``, ``bundle_code`` and ``bundle_cases`` (the sitting's other case ids) of a case."""
    link = sittings.link_of(body)
    if link is None:
        return {"bundle_id": None, "bundle_code": None, "bundle_cases": []}
    own = body.get("id")
    return {"bundle_id": link["id"], "bundle_code": link["code"], "bundle_cases": [c for c in link["cases"] if c != own]}


def carried(store: Store, case_id: str, intake: cases.Intake) -> cases.Intake:
    """``intake`` completing a case a correction notice left waiting, with the ``bundle`` of the case's
    earlier body if it had one: the completed case stays linked to its sitting. Read through the
    store (inside the caller's transaction: the store's lock is re-entrant)."""
    earlier = store.application(case_id)
    link = sittings.link_of(earlier["body"]) if earlier else None
    return intake if link is None else cases.Intake(intake.kind, intake.status, {**intake.body, "bundle": link})


def sitting_of(st: Desk, app: dict[str, Any]) -> list[dict[str, Any]]:
    """Every case of ``app``'s sitting held here, in item order (just ``app`` outside a sitting)."""
    link = sittings.link_of(app["body"])
    if link is None:
        return [app]
    found = [app if c == app["id"] else st.store.application(c) for c in link["cases"]]
    return [a for a in found if a is not None and (sittings.link_of(a["body"]) or {}).get("id") == link["id"]]
