"""Keep the Chinese translation catalogue in step with the source: `python -m deploy.translations`.

Extracts every message id from node/, central/, sync/ and templates/ (Babel), merges it into
templates/locale/zh_CN/LC_MESSAGES/messages.po, and lists the ids that still lack Chinese text.
"""

from __future__ import annotations

import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
PO = ROOT / "templates" / "locale" / "zh_CN" / "LC_MESSAGES" / "messages.po"
METHODS = [("node/**.py", "python"), ("central/**.py", "python"), ("sync/**.py", "python"), ("templates/**.py", "python"),
           ("templates/**.html", "jinja2")]
OPTIONS = {"templates/**.html": {"extensions": "jinja2.ext.i18n"}}
KEYWORDS = {"_": None, "N_": None}


def extract() -> list[str]:
    ids: list[str] = []
    for _f, _l, message, _c, _ctx in extract_from_dir(str(ROOT), METHODS, keywords=KEYWORDS,
                                                       options_map=OPTIONS):
        if isinstance(message, str) and message not in ids:
            ids.append(message)
    return ids


def main() -> int:
    old = Catalog(locale="zh_CN")
    if PO.exists():
        with PO.open("rb") as f:
            old = read_po(f, locale="zh_CN")
    new = Catalog(locale="zh_CN", project="lastmile", charset="utf-8")
    for msgid in extract():
        prior = old.get(msgid)
        new.add(msgid, prior.string if prior else "")
    PO.parent.mkdir(parents=True, exist_ok=True)
    with PO.open("wb") as f:
        write_po(f, new, omit_header=False, no_location=True, width=0)
    missing = [m.id for m in new if m.id and not m.string]
    for m in missing:
        print(f"untranslated: {m}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
