"""Pages and printable documents: the Jinja2 environment, translations, and rendering helpers.

Shared by node/ and central/ (neither imports the other). Chinese (zh_CN) is the default
language; English is available. Source strings are English message ids; their Chinese text
lives in ``locale/zh_CN/LC_MESSAGES/messages.po``, read at start-up with Babel.
"""

from __future__ import annotations

import datetime as dt
import functools
import gettext
import io
import json
import secrets
from pathlib import Path
from typing import Any

import jinja2
import segno
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from starlette.requests import Request
from starlette.responses import HTMLResponse

# the case statuses and correction problems, defined once
from sync.law.intake import PROBLEMS
from sync.law.transitions import Status

HERE = Path(__file__).parent
LOCALES = ("zh_CN", "en")
DEFAULT = "zh_CN"


@functools.cache
def translations(locale: str) -> gettext.NullTranslations:
    po = HERE / "locale" / locale / "LC_MESSAGES" / "messages.po"
    if not po.exists():
        return gettext.NullTranslations()
    with po.open("rb") as f:
        catalog = read_po(f, locale=locale)
    buf = io.BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return gettext.GNUTranslations(buf)


def N_(message: str) -> str:
    """Mark a message id for translation where it is defined; translate it where it is shown."""
    return message


def gettext_for(locale: str):  # type: ignore[no-untyped-def]
    t = translations(locale)

    def _(message: str, **kw: Any) -> str:
        text = t.gettext(message)
        return text % kw if kw else text
    return _


@functools.cache
def environment(locale: str) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE), autoescape=True,
                             extensions=["jinja2.ext.i18n"], undefined=jinja2.StrictUndefined)
    env.install_gettext_translations(translations(locale), newstyle=True)  # type: ignore[attr-defined]
    env.globals["locale"] = locale
    env.globals["Status"] = Status          # the case statuses, defined once (sync/law/transitions.py)
    env.globals["PROBLEMS"] = PROBLEMS      # what may be wrong with a material (a correction request)
    env.filters["local"] = local_time
    env.filters["reason"] = functools.partial(reason_text, locale=locale)
    return env


def reason_text(reason: str | None, locale: str) -> str:
    """A repair reason in ``locale``. New reasons are JSON ``{"m": message id, "a": {params}}``
    (sync/law/errors.py RuleError.reason): the message id and every string parameter are translated,
    so a parameter may itself be a message id. Older rows and other peers' free text are shown
    as they are (translated if they happen to be a known message id)."""
    if not reason:
        return ""
    t = translations(locale)

    def tr(text: str) -> str:
        return t.gettext(text) if text else text
    try:
        parsed = json.loads(reason)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("m"), str):
        return tr(reason)
    args = parsed.get("a") if isinstance(parsed.get("a"), dict) else {}
    values = {k: tr(v) if isinstance(v, str) else v for k, v in args.items()}
    try:
        return tr(parsed["m"]) % values
    except (KeyError, TypeError, ValueError):
        try:
            return parsed["m"] % values
        except (KeyError, TypeError, ValueError):
            return parsed["m"]


CHINA = dt.timezone(dt.timedelta(hours=8))


def local_time(value: str | None) -> str:
    """An ISO-8601 time (UTC or with offset) as China time, 'YYYY-MM-DD HH:MM'."""
    if not value:
        return ""
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.astimezone(CHINA).strftime("%Y-%m-%d %H:%M")


def locale_of(request: Request) -> str:
    lang = request.session.get("lang") if "session" in request.scope else None
    return lang if lang in LOCALES else DEFAULT


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(24)
    return str(token)


def check_csrf(request: Request, form: Any) -> bool:
    return bool(form.get("csrf")) and secrets.compare_digest(str(form.get("csrf")), csrf_token(request))


def render(request: Request, name: str, status_code: int = 200, *, official: bool = False,
           **context: Any) -> HTMLResponse:
    """The page ``name`` in the session's language; an ``official`` one (a printable document a
    citizen takes home, a service guide) always in Chinese, whatever the session's language."""
    locale = DEFAULT if official else locale_of(request)
    env = environment(locale)
    html = env.get_template(name).render(request=request, csrf=csrf_token(request),
                                         user=request.session.get("user"), **context)
    return HTMLResponse(html, status_code=status_code)


def qr_svg(text: str) -> str:
    """``text`` as an inline SVG QR code (error level M, PROTOCOL.md §11): 2 px a module on the
    screen, with a viewBox so that the print stylesheet scales the whole symbol to its printed
    width instead of cropping it to its top-left corner."""
    qr = segno.make(text, error="m")
    svg = qr.svg_inline(scale=2)
    width, height = qr.symbol_size(scale=2)
    return svg.replace("<svg ", f'<svg viewBox="0 0 {width} {height}" ', 1)


def static_dir() -> Path:
    return HERE / "static"
