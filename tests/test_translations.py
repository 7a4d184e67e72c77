"""Chinese first: every user-facing string has its Chinese text."""

from __future__ import annotations

from babel.messages.pofile import read_po

from deploy.translations import PO, extract
from templates import gettext_for


def test_every_message_has_chinese_text():
    with PO.open("rb") as f:
        catalog = read_po(f, locale="zh_CN")
    missing = [m for m in extract() if not (catalog.get(m) and catalog.get(m).string)]
    assert missing == [], f"run `python -m deploy.translations` and translate: {missing}"


def test_translation_layer_switches_language():
    assert gettext_for("zh_CN")("Acceptance receipt") == "受理回执"
    assert gettext_for("en")("Acceptance receipt") == "Acceptance receipt"
    assert gettext_for("zh_CN")("%(n)s working days", n=20) == "20个工作日"
