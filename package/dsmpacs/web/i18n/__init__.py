"""UI text in English and Simplified Chinese.

Catalogs are plain JSON, one directory per language and one file per area
(core.json, admin.json; add studies.json, viewer.json...), so that people
working on different pages never edit the same file. Keys are dotted
(``admin.users.title``); values are plain text with ``{name}`` placeholders,
never markup (Jinja escapes the result like any other string). Keys starting
with ``js.`` are also handed to the browser (``DSM.t`` in static/js/app.js).

A text that depends on a number is an object of CLDR plural categories instead
of a string: ``{"one": "{count} frame", "other": "{count} frames"}`` in English,
``{"other": "{count} 帧"}`` in Chinese, which has one form. The ``count``
parameter picks the form through Babel's CLDR plural rules (``Locale.plural_form``)
on the server and ``Intl.PluralRules`` (the same CLDR data) in the browser.
Each language lists exactly its own categories (a test checks them against Babel).

A test checks that every key exists in every language with the same
placeholders, and that every ``_("...")`` used in a template exists.

The language is the ``dsmpacs_lang`` cookie when the user chose one, else
the best match of the browser's Accept-Language, else English.
"""
from __future__ import annotations

import json
import logging
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from babel import Locale
from flask import Flask, flash, g, request

log = logging.getLogger(__name__)

LANGUAGES = {"en": "English", "zh-Hans": "简体中文"}
DEFAULT = "en"
COOKIE = "dsmpacs_lang"
CATALOG_DIR = Path(__file__).resolve().parent


CatalogText = str | dict[str, str]      # plain, or CLDR plural category -> text


class CatalogError(ValueError):
    pass


@lru_cache(maxsize=None)
def locale(lang: str) -> Locale:
    return Locale.parse(lang, sep="-")


def plural_categories(lang: str) -> set[str]:
    """The CLDR plural categories of a language (``other`` is always one)."""
    return set(locale(lang).plural_form.tags) | {"other"}


def plural_category(lang: str, count) -> str:
    """The form for ``count``; flashed parameters arrive as text ("3")."""
    try:
        number = count if isinstance(count, (int, float, Decimal)) else Decimal(str(count))
        return locale(lang).plural_form(number)
    except (TypeError, ValueError, ArithmeticError):      # not a number: the general form
        return "other"


@lru_cache(maxsize=None)
def catalog(lang: str) -> dict[str, CatalogText]:
    """Every key of one language, merged from its files."""
    merged: dict[str, CatalogText] = {}
    for path in sorted((CATALOG_DIR / lang).glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        for key, value in data.items():
            if key in merged:
                raise CatalogError(f"{path.name}: key {key!r} is already defined in another file")
            plural = isinstance(value, dict) and "other" in value and all(
                isinstance(v, str) for v in value.values())
            if not isinstance(value, str) and not plural:
                raise CatalogError(f"{path.name}: {key!r} is neither a string nor plural forms with 'other'")
            merged[key] = value
    return merged


def negotiate(cookie_value: str | None, accept_languages) -> str:
    """The cookie's language if valid, else the first acceptable browser language."""
    if cookie_value in LANGUAGES:
        return cookie_value
    for value, _quality in accept_languages:
        primary = value.lower().split("-")[0]
        if primary == "zh":
            # Simplified is the only Chinese we have; it serves zh-TW readers better than English.
            return "zh-Hans"
        if primary == "en":
            return "en"
    return DEFAULT


_missing_logged: set[str] = set()


def translate(lang: str, key: str, **params) -> str:
    text = catalog(lang).get(key)
    if text is None:
        text = catalog(DEFAULT).get(key)
        if key not in _missing_logged:
            _missing_logged.add(key)
            log.warning("no text for %r in %s", key, lang)
        if text is None:
            return key
        lang = DEFAULT
    if isinstance(text, dict):
        text = text.get(plural_category(lang, params.get("count")), text["other"])
    if params:
        try:
            return text.format_map(params)
        except (KeyError, IndexError, ValueError):
            log.warning("text %r in %s does not fit its parameters %s", key, lang, sorted(params))
    return text


def current_language() -> str:
    lang = g.get("lang")
    if lang is None:
        lang = g.lang = negotiate(request.cookies.get(COOKIE), request.accept_languages)
    return lang


def _(key: str, **params) -> str:
    """Translate for the current request."""
    return translate(current_language(), key, **params)


def message(key: str, **params) -> dict:
    """A text to translate later (when a flashed message is shown): a parameter may
    itself be such a text, e.g. the reason of a failure."""
    return {"key": key, "params": {k: v if isinstance(v, dict) else str(v) for k, v in params.items()}}


def message_text(value: dict) -> str:
    params = {k: message_text(v) if isinstance(v, dict) else v for k, v in value.get("params", {}).items()}
    return _(value["key"], **params)


def notify(key: str, category: str = "ok", **params) -> None:
    """Flash a message by catalog key; it is translated when shown (categories:
    ok, error, info). A parameter made by ``message`` is translated too."""
    flash(message(key, **params), category)


def js_strings(lang: str) -> dict[str, CatalogText]:
    return {k: v for k, v in catalog(lang).items() if k.startswith("js.")}


def init_app(app: Flask) -> None:
    app.jinja_env.globals.update(_=_, LANGUAGES=LANGUAGES, current_language=current_language,
                                 message_text=message_text,
                                 js_strings=lambda: js_strings(current_language()))
