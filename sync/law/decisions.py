"""A written decision (PROTOCOL.md §4 ``case.decided``): the body fields that make one (the
rejection's reason, legal basis and rights of appeal; the approval's result documents) and the
catalogue's ``appeal`` block, checked alike by the county before it signs and by the station when
the decision arrives. The download of the result documents is sync/docs.py."""

from __future__ import annotations

import re
from typing import Any, Sequence

from sync.law.errors import N_, RuleError

SHA = re.compile(r"[0-9a-f]{64}")
APPEAL_KEYS = ("review_body", "review_days", "court", "court_months")
ATTACHMENT_KEYS = ("sha256", "name", "mime", "size")
ATTACHMENT_TYPES = ("application/pdf", "image/jpeg", "image/png")
MAX_ATTACHMENT = 8 * 1024 * 1024
MAX_ATTACHMENTS = 10
MAX_REASON, MAX_BASIS, MAX_NAME = 2000, 500, 255


def check_appeal(appeal: Any) -> dict[str, Any]:
    """The catalogue's (and a rejection's) ``appeal`` object: exactly ``review_body`` and ``court``
    (non-blank strings ≤ 100 characters), ``review_days`` (integer 1-365) and ``court_months``
    (integer 1-24). Raises RuleError naming what is wrong."""
    if not isinstance(appeal, dict) or set(appeal) != set(APPEAL_KEYS):
        raise RuleError(N_("The appeal block needs exactly review_body, review_days, court and court_months."))
    for name in ("review_body", "court"):
        if not isinstance(appeal[name], str) or not appeal[name].strip() or len(appeal[name]) > 100:
            raise RuleError(N_("The appeal block's review body and court are names of 1 to 100 characters."))
    for name, high in (("review_days", 365), ("court_months", 24)):
        if type(appeal[name]) is not int or not 1 <= appeal[name] <= high:
            raise RuleError(N_("The appeal block's time limits are whole numbers of days (1-365) and months (1-24)."))
    return appeal


def check_attachments(items: Any) -> list[dict[str, Any]]:
    """An approval's ``attachments``: 1-10 objects of exactly ``sha256`` (64 lowercase hex, no two
    alike), ``name`` (1-255 characters), ``mime`` (PDF, JPEG or PNG) and ``size`` (1 to 8 MiB)."""
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ATTACHMENTS:
        raise RuleError(N_("A decision lists 1 to 10 result documents."))
    seen = set()
    for a in items:
        if not isinstance(a, dict) or set(a) != set(ATTACHMENT_KEYS) or not isinstance(a["sha256"], str) \
                or not SHA.fullmatch(a["sha256"]) or a["sha256"] in seen or not isinstance(a["name"], str) \
                or not 1 <= len(a["name"]) <= MAX_NAME or a["mime"] not in ATTACHMENT_TYPES \
                or type(a["size"]) is not int or not 1 <= a["size"] <= MAX_ATTACHMENT:
            raise RuleError(N_("A result document of the decision is not described as it must be."))
        seen.add(a["sha256"])
    return items


DECIDED_FIELDS = ("id", "decision", "note", "by", "department", "at")


def check_decided(body: Any, decisions: Sequence[str]) -> dict[str, Any]:
    """``case.decided``: the six base fields (strings, ``decision`` one of ``decisions``), and the
    body fields of a written decision. A ``reject`` carries ``reason`` (≤ 2000) and ``basis`` (≤ 500),
    both non-blank, and ``appeal`` unless the catalogue had none; one with none of the three is the
    form written before they existed, still valid. ``attachments`` only on an ``approve``; ``reason``, ``basis``, ``appeal``
    only on a ``reject``. Other fields (a correction's) are left to their own checks."""
    if not isinstance(body, dict):
        raise RuleError(N_("The decision is not an object."))
    for name in DECIDED_FIELDS:
        if not isinstance(body.get(name), str):
            raise RuleError(N_("The decision lacks the field %(field)s."), field=name)
    if body["decision"] not in decisions:
        raise RuleError(N_("The decision is not approve, reject or correction."))
    written = [k for k in ("reason", "basis", "appeal") if k in body]
    if written and body["decision"] != "reject":
        raise RuleError(N_("Only a rejection carries a reason, a legal basis and the rights of appeal."))
    if body["decision"] == "reject" and written:
        for name, limit in (("reason", MAX_REASON), ("basis", MAX_BASIS)):
            value = body.get(name)
            if not isinstance(value, str) or not value.strip() or len(value) > limit:
                raise RuleError(N_("A rejection needs its reason (at most 2000 characters) and its legal basis "
                                   "(at most 500)."))
        if "appeal" in body:
            check_appeal(body["appeal"])
    if "attachments" in body:
        if body["decision"] != "approve":
            raise RuleError(N_("Only an approval carries result documents."))
        check_attachments(body["attachments"])
    return body
