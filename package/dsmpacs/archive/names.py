"""Person names as people type them, turned into PS3.4 matching patterns.

The study list shows ``王^小明`` as ``王小明`` and ``WANG^XIAOMING`` as ``Wang Xiaoming``;
a user types what they see. The index keeps the DICOM form (components split by
``^``), so a typed name becomes the few DICOM forms it can stand for, matched as
alternatives (a backslash-separated value, PS3.4 C.2.2.2.4's list of values).
Each alternative stays a prefix match on the indexed search columns: no leading
wildcard, so the search stays fast on a large index. Case and width are already
ignored by the search forms (archive/charset.normalise: NFKC, case-folded).

A Chinese name is also indexed by its pinyin (``pinyin_search_form``: ``王^小明``
-> ``wang^xiaoming``, by pypinyin), so ``wang xiaoming`` typed in the study list
finds it: the typed patterns are matched against that column too.
"""
from __future__ import annotations

import unicodedata

# Chinese family names have one character, or two (欧阳, 司马): the split between
# family and given name in an unseparated ideographic name falls after one of them.
_FAMILY_NAME_LENGTHS = (1, 2)
_MAX_TOKENS = 4
# Compound family names: an unseparated name splits after these two characters.
_COMPOUND_FAMILY_NAMES = {"欧阳", "司马", "诸葛", "上官", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙",
                          "夏侯", "令狐", "宇文", "司徒", "端木", "澹台", "轩辕", "呼延", "独孤", "南宫"}
# Family names read otherwise than the character's common reading (pypinyin gives the
# common one: 曾 ceng, 单 dan); a name is written the way its family reads it.
_FAMILY_READINGS = {"曾": "zeng", "单": "shan", "解": "xie", "仇": "qiu", "区": "ou", "朴": "piao",
                    "查": "zha", "盖": "ge", "乐": "yue", "缪": "miao", "翟": "zhai", "覃": "qin",
                    "召": "shao", "员": "yun", "种": "chong"}


def _ideographic(text: str) -> bool:
    return any(unicodedata.east_asian_width(c) in ("W", "F") and c.isalpha() for c in text)


def typed_name_patterns(typed: str) -> list[str]:
    """The DICOM person-name patterns a typed name stands for, each matching from the
    start of the name (a trailing ``*`` unless the user typed a wildcard).

    ``Wang Xiaoming`` -> ``Wang^Xiaoming*``, ``Wang Xiaoming*``; ``王小明`` ->
    ``王小明*``, ``王^小明*``, ``王小^明*``. A value with ``^`` or ``=`` is already in
    DICOM form and is only given its trailing wildcard.
    """
    text = unicodedata.normalize("NFKC", typed).strip()
    if not text:
        return []
    wildcard = "*" in text or "?" in text

    def finish(pattern: str) -> str:
        return pattern if wildcard else pattern + "*"

    if "^" in text or "=" in text or "\\" in text:
        return [finish(text)]
    tokens = text.split()
    forms: list[str] = []
    if len(tokens) > 1:
        if len(tokens) > _MAX_TOKENS:   # bound the alternatives: the rest is one component
            tokens = tokens[:_MAX_TOKENS - 1] + [" ".join(tokens[_MAX_TOKENS - 1:])]
        # Family name first, as the list shows it; the components after it may be
        # given, middle, or a given name with a space.
        forms.append("^".join(tokens))
        for cut in range(1, len(tokens)):
            forms.append(" ".join(tokens[:cut]) + "^" + " ".join(tokens[cut:]))
        forms.append(" ".join(tokens))
    else:
        forms.append(text)
        if _ideographic(text):
            forms += [text[:n] + "^" + text[n:] for n in _FAMILY_NAME_LENGTHS if n < len(text)]
    return [finish(form) for form in dict.fromkeys(forms)]


def typed_name_value(typed: str) -> str:
    """The patterns as one matching value (alternatives joined by a backslash)."""
    return "\\".join(typed_name_patterns(typed))


def _han(text: str) -> bool:
    return any("\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf" for c in text)


def pinyin_search_form(name: str) -> str:
    """The pinyin of a person name's Chinese characters, for search: the components
    kept apart by ``^``, each one's syllables run together, lower case, no tones
    (``王^小明`` and ``王小明`` -> ``wang^xiaoming``; ``欧阳娜娜`` -> ``ouyang^nana``).
    Taken from the ideographic group, or the alphabetic one when that holds the
    characters (a GB18030 file); empty when the name has no Chinese character."""
    return "^".join("".join(syllables) for syllables in _pinyin_syllables(name))[:128]


def initials_search_form(name: str) -> str:
    """The first letter of each syllable, run together: ``王^小明`` -> ``wxm``, as
    readers type a Chinese name in a hurry."""
    return "".join(s[:1] for syllables in _pinyin_syllables(name) for s in syllables)[:32]


def _pinyin_syllables(name: str) -> list[list[str]]:
    """Per name component, its pinyin syllables (lower case, no tones)."""
    groups = (name.split("=") + ["", ""])[:2]
    source = next((g for g in (groups[1], groups[0]) if _han(g)), "")
    text = unicodedata.normalize("NFKC", source).strip(" ^")
    if not text:
        return []
    # Imported here, not at the top: loading its dictionaries takes half a second,
    # which only names with Chinese characters need to pay (once per process).
    from pypinyin import lazy_pinyin

    components = text.split("^") if "^" in text else text.split()
    if len(components) == 1:      # unseparated: the family name is 1 or 2 characters
        cut = 2 if text[:2] in _COMPOUND_FAMILY_NAMES else 1
        components = [text[:cut], text[cut:]]
    out = []
    for i, component in enumerate(components):
        component = component.replace(" ", "")
        if not component:
            continue
        if i == 0 and component[:1] in _FAMILY_READINGS:
            syllables = [_FAMILY_READINGS[component[0]]] + lazy_pinyin(component[1:])
        else:
            syllables = lazy_pinyin(component)
        out.append([s.casefold() for s in syllables if s.strip()])
    return out
