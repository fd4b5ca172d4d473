"""Person names as people type them, turned into PS3.4 matching patterns.

The study list shows ``王^小明`` as ``王小明`` and ``WANG^XIAOMING`` as ``Wang Xiaoming``;
a user types what they see. The index keeps the DICOM form (components split by
``^``), so a typed name becomes the few DICOM forms it can stand for, matched as
alternatives (a backslash-separated value, PS3.4 C.2.2.2.4's list of values).
Each alternative stays a prefix match on the indexed search columns: no leading
wildcard, so the search stays fast on a large index. Case and width are already
ignored by the search forms (archive/charset.normalise: NFKC, case-folded).
"""
from __future__ import annotations

import unicodedata

# Chinese family names have one character, or two (欧阳, 司马): the split between
# family and given name in an unseparated ideographic name falls after one of them.
_FAMILY_NAME_LENGTHS = (1, 2)
_MAX_TOKENS = 4


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
