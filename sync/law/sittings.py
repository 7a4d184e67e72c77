"""一件事一次办: several items at one sitting, the rules both ends share (PROTOCOL.md §4).

Two things travel: the catalogue's ``bundles`` (what the county publishes: a code, a name, a
description and the codes of two or more items, of any departments) and, on each application of a
sitting, the optional body field ``bundle``: ``{"id": <UUID v4 of the sitting>, "code": <the bundle's
code, or null for a free combination>, "cases": [<every case id of the sitting, in item order>]}``.
Each item stays its own case with its own receipt number and time limit; the field only links them.
Pure functions, no HTTP, no SQL.
"""

from __future__ import annotations

import re
from typing import Any

from sync.law.errors import N_, RuleError
from sync.law.intake import UUID4

MIN_ITEMS, MAX_ITEMS = 2, 10
CODE = re.compile(r"[A-Z]{2,5}-\d{3}")
MAX_NAME, MAX_DESCRIPTION = 50, 500


def check_catalog_bundles(catalog: dict[str, Any]) -> list[dict[str, Any]]:
    """The catalogue's ``bundles`` (absent: none); RuleError naming the first broken rule. Each is
    exactly ``code`` (``YJS-001``: 2-5 capitals, a dash, 3 digits; unique), ``name`` (1-50 characters,
    not blank), ``name_en`` and ``description``/``description_en`` (strings, at most 50 and 500),
    ``items``: 2-10 distinct codes of items of the same catalogue; items that share a field name define
    it alike (type and option values), since the sitting asks it once."""
    bundles = catalog.get("bundles", [])
    if not isinstance(bundles, list):
        raise RuleError(N_("The catalogue's bundles are not a list."))
    items = {i.get("code") for i in catalog.get("items", []) if isinstance(i, dict)}
    seen: set[str] = set()
    for n, b in enumerate(bundles, 1):
        keys = {"code", "name", "name_en", "description", "description_en", "items"}
        if not isinstance(b, dict) or set(b) != keys:
            raise RuleError(N_("Bundle %(n)s must have exactly the keys code, name, name_en, description, "
                               "description_en and items."), n=n)
        code = b["code"]
        if not isinstance(code, str) or not CODE.fullmatch(code) or code in seen:
            raise RuleError(N_("Bundle %(n)s: its code must look like YJS-001 and be unique."), n=n)
        seen.add(code)
        if not all(isinstance(b[k], str) for k in keys - {"items"}) or not b["name"].strip() \
                or len(b["name"]) > MAX_NAME or len(b["name_en"]) > MAX_NAME \
                or len(b["description"]) > MAX_DESCRIPTION or len(b["description_en"]) > MAX_DESCRIPTION:
            raise RuleError(N_("Bundle %(code)s: a name of 1 to 50 characters and a description of at most "
                               "500 are needed."), code=code)
        listed = b["items"]
        if not isinstance(listed, list) or not MIN_ITEMS <= len(listed) <= MAX_ITEMS \
                or len(set(map(str, listed))) != len(listed):
            raise RuleError(N_("Bundle %(code)s must list 2 to 10 different items."), code=code)
        unknown = [str(c) for c in listed if c not in items]
        if unknown:
            raise RuleError(N_("Bundle %(code)s names items the catalogue does not have: %(items)s."),
                            code=code, items=", ".join(unknown))
        shapes: dict[str, Any] = {}
        for item in (i for i in catalog.get("items", []) if isinstance(i, dict) and i.get("code") in listed):
            for f in item.get("fields", []):
                shape = (f.get("type"), [o.get("value") for o in f.get("options", [])])
                if shapes.setdefault(f.get("name"), shape) != shape:
                    raise RuleError(N_("Bundle %(code)s: its items share the field %(field)s but define it "
                                       "differently; the sitting asks it once."), code=code, field=str(f.get("name")))
    return bundles


def check_bundle_field(body: dict[str, Any]) -> None:
    """An application body's optional ``bundle`` field: exactly ``id`` (UUID v4), ``code`` (a
    bundle code or null) and ``cases`` (2-10 distinct UUID v4 case ids, the body's own among them)."""
    if "bundle" not in body:
        return
    b = body["bundle"]
    if not isinstance(b, dict) or set(b) != {"id", "code", "cases"}:
        raise RuleError(N_("The application's bundle must have exactly the keys id, code and cases."))
    if not isinstance(b["id"], str) or not UUID4.fullmatch(b["id"]):
        raise RuleError(N_("The bundle id %(id)s is not a UUID."), id=str(b["id"]))
    if b["code"] is not None and (not isinstance(b["code"], str) or not CODE.fullmatch(b["code"])):
        raise RuleError(N_("The bundle code is not of the form YJS-001."))
    cases = b["cases"]
    if not isinstance(cases, list) or not MIN_ITEMS <= len(cases) <= MAX_ITEMS \
            or not all(isinstance(c, str) and UUID4.fullmatch(c) for c in cases) or len(set(cases)) != len(cases):
        raise RuleError(N_("The bundle must list 2 to 10 different case ids."))
    if body.get("id") not in cases:
        raise RuleError(N_("The bundle does not list the case itself."))


def link_of(body: Any) -> dict[str, Any] | None:
    """The ``bundle`` field of an application body if it is well formed, else None."""
    if not isinstance(body, dict) or "bundle" not in body:
        return None
    try:
        check_bundle_field(body)
    except RuleError:
        return None
    return dict(body["bundle"])
