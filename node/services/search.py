"""Finding things at the station: a returning citizen's cases (by receipt number, ID number in full
or its last 6 characters, name or phone) and a service item (by name, keyword, code or pinyin
initials: typing "dbsq" finds 低保申请). Pure functions over the store's rows and the catalogue."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from pypinyin import Style, lazy_pinyin

from node.store import Store

MAX_QUERY = 50


def applications(store: Store, query: str, limit: int = 50) -> list[dict[str, Any]]:
    """Cases matching ``query``, newest first. Whatever the agent typed is tried as every kind of
    key it could be: a receipt number (or part of one), an 18-character ID number, the last 6
    characters of one, a phone number (7 digits or more), a name (or part of one)."""
    q = query.strip()[:MAX_QUERY]
    if not q:
        return []
    where: list[str] = []
    params: list[Any] = []
    upper = q.upper()
    if re.fullmatch(r"[\w-]+", q) and ("-" in q or q.isdigit()):
        where.append("receipt_no LIKE ?")
        params.append(f"%{q}%")
    if re.fullmatch(r"\d{17}[\dX]", upper):
        where.append("id_number LIKE ?")        # no wildcard: equal (node/vault.py: LIKE opens the value)
        params.append(upper)
    elif re.fullmatch(r"\d{5}[\dX]", upper):
        where.append("id_number LIKE ?")
        params.append(f"%{upper}")
    if re.fullmatch(r"\d{7,11}", q):
        where.append("phone LIKE ?")
        params.append(f"%{q}%")
    if not q.isdigit():
        where.append("applicant_name LIKE ?")
        params.append(f"%{q}%")
    if not where:
        return []
    return store.applications("(" + " OR ".join(where) + ")", tuple(params), limit=limit)


@lru_cache(maxsize=2048)
def _spellings(text: str) -> tuple[str, str]:
    """The pinyin initials and the full pinyin of ``text``, without spaces (``dbsq``, ``dibaoshenqing``)."""
    return ("".join(lazy_pinyin(text, style=Style.FIRST_LETTER)).lower(), "".join(lazy_pinyin(text)).lower())


def items(catalogue_items: list[dict[str, Any]], query: str) -> list[dict[str, Any]]:
    """Items whose name, English name, code or keywords contain ``query``, or whose pinyin (initials
    or full) does; best matches first (name before keyword before pinyin)."""
    q = query.strip()[:MAX_QUERY].lower()
    if not q:
        return list(catalogue_items)
    ranked: list[tuple[int, int, dict[str, Any]]] = []
    for n, item in enumerate(catalogue_items):
        names = [item.get("name", ""), *item.get("keywords", [])]
        if q in item.get("name", "").lower() or q in item.get("code", "").lower():
            rank = 0
        elif any(q in k.lower() for k in item.get("keywords", [])) or q in item.get("name_en", "").lower():
            rank = 1
        elif q.isascii() and any(q in s for name in names for s in _spellings(name)):
            rank = 2
        else:
            continue
        ranked.append((rank, n, item))
    return [item for _, _, item in sorted(ranked, key=lambda r: r[:2])]
