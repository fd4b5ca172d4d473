"""Every UI text exists in English and Simplified Chinese, and every key used exists."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from dsmpacs.archive.activity import OUTCOMES
from dsmpacs.archive.users import Role
from dsmpacs.web import i18n, labels
from dsmpacs.web.admin.policy import POLICY_SETTINGS
from dsmpacs.web.errors import TITLED

WEB = Path(i18n.__file__).resolve().parent.parent
PLACEHOLDER = re.compile(r"\{(\w*)\}")
KEY_PREFIXES = ("nav", "login", "common", "error", "account", "role", "home", "totals", "study", "outcome",
                "js", "admin", "setting", "source", "count")
# A key literal: the first argument of _() or notify(), an error= key, the other
# branch of a conditional key, or the second member of a (endpoint, key) pair.
KEY_LITERAL = re.compile(r"""(?:\b_\(|notify\(|error\s*=\s*|\belse\s+|\(["'][a-z_.]+["'],\s*)["']((?:%s)\.[a-z0-9_]+(?:\.[a-z0-9_]+)*)["']"""
                         % "|".join(KEY_PREFIXES))


def _forms(text) -> dict[str, str]:
    return text if isinstance(text, dict) else {"": text}


def test_every_key_in_every_language_with_the_same_placeholders():
    english = i18n.catalog("en")
    assert len(english) > 100
    for lang in i18n.LANGUAGES:
        other = i18n.catalog(lang)
        assert set(other) == set(english), f"{lang}: keys differ: {set(other) ^ set(english)}"
        for key, text in other.items():
            assert isinstance(text, dict) == isinstance(english[key], dict), \
                f"{lang}: {key} has plural forms in one language only"
            wanted = {ph for form in _forms(english[key]).values() for ph in PLACEHOLDER.findall(form)}
            for form in _forms(text).values():
                assert form.strip(), f"{lang}: {key} is empty"
                assert set(PLACEHOLDER.findall(form)) == wanted, f"{lang}: {key} has other placeholders than English"
                assert "<" not in form and ">" not in form, f"{lang}: {key} looks like markup"


def test_plural_forms_are_the_cldr_categories_of_each_language():
    """Each language lists exactly the categories Babel's CLDR rules give it: English
    one and other, Chinese only other; the number is always the count parameter."""
    assert i18n.plural_categories("en") == {"one", "other"}
    assert i18n.plural_categories("zh-Hans") == {"other"}
    plural_keys = {k for k, v in i18n.catalog("en").items() if isinstance(v, dict)}
    assert {"js.viewer.frames", "count.instances", "study.search.found"} <= plural_keys
    for lang in i18n.LANGUAGES:
        for key in plural_keys:
            forms = i18n.catalog(lang)[key]
            assert set(forms) == i18n.plural_categories(lang), f"{lang}: {key} has forms {sorted(forms)}"
            assert all("{count}" in form for form in forms.values()), f"{lang}: {key} lacks {{count}}"


@pytest.mark.parametrize("count, english, chinese", [
    (1, "1 frame", "1 帧"), (2, "2 frames", "2 帧"), (0, "0 frames", "0 帧"), ("1", "1 frame", "1 帧")])
def test_plural_form_follows_the_count(count, english, chinese):
    assert i18n.translate("en", "js.viewer.frames", count=count) == english
    assert i18n.translate("zh-Hans", "js.viewer.frames", count=count) == chinese


def test_chinese_texts_are_translated():
    """A copied English text in the Chinese catalog is a missed translation
    (allowed only for names and codes that read the same)."""
    same = {k for k, v in i18n.catalog("zh-Hans").items() if v == i18n.catalog("en")[k]}
    assert same <= {"admin.peers.tls", "source.config_toml"}, same


def _used_keys() -> set[str]:
    used = set()
    for path in list(WEB.rglob("*.html")) + list(WEB.rglob("*.py")):
        used |= set(KEY_LITERAL.findall(path.read_text(encoding="utf-8")))
    # keys built at run time from a prefix and a value
    used |= {f"role.{r.value}" for r in Role} | {f"outcome.{o}" for o in OUTCOMES}
    used |= {f"setting.{s}" for s in POLICY_SETTINGS} | {f"error.{c}" for c in TITLED}
    used |= {f"source.{s}" for s in ("default", "config_toml", "environment", "command_line")}
    used |= {"admin.activity.in", "admin.activity.out"}
    used |= labels.all_keys() | {f"js.send.reason.{c}" for c in labels.ASSOCIATION_FAILURES}
    return used


def test_every_key_used_in_templates_and_views_exists():
    used = _used_keys()
    assert {"login.title", "admin.users.enabled_msg", "admin.nav.audit", "admin.users.enabled"} <= used
    missing = used - set(i18n.catalog("en"))
    assert not missing, f"keys used but not in the catalogs: {sorted(missing)}"
    # the adapter's texts for domain values are all used (none left over from a removed value)
    values = {k for k in i18n.catalog("en") if k.split(".")[0] in ("audit", "assoc", "quarantine", "integrity",
                                                                     "peer", "user")}
    assert values <= used, sorted(values - used)


@pytest.mark.parametrize("header, expected", [
    ("zh-CN,zh;q=0.9,en;q=0.8", "zh-Hans"),
    ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
    ("zh-TW", "zh-Hans"),
    ("de-DE,fr;q=0.5", "en"),
    ("", "en"),
])
def test_accept_language_negotiation(header, expected):
    from werkzeug.datastructures import LanguageAccept
    from werkzeug.http import parse_accept_header

    assert i18n.negotiate(None, parse_accept_header(header, LanguageAccept)) == expected


def test_cookie_choice_wins_over_the_browser():
    from werkzeug.datastructures import LanguageAccept
    from werkzeug.http import parse_accept_header

    accept = parse_accept_header("zh-CN", LanguageAccept)
    assert i18n.negotiate("en", accept) == "en"
    assert i18n.negotiate("klingon", accept) == "zh-Hans"


def test_placeholders_are_filled_and_missing_keys_fall_back():
    assert i18n.translate("zh-Hans", "common.page", page=3) == "第 3 页"
    assert i18n.translate("en", "no.such.key") == "no.such.key"
