"""UID syntax checks.

A UID that came over the wire is never used to build a path, but it still goes
into the index, logs and URLs, so anything that is not a syntactically valid
UID (digits and dots, at most 64 characters, no empty or leading-zero
components) is refused before it gets there. That also refuses ``/``, ``..``,
NUL and every other path-like value.
"""
from __future__ import annotations

import re

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
# Many modalities still emit leading zeros in components; accept them when
# lenient, because refusing a run from a DSA room over it helps nobody.
_LENIENT_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def is_valid_uid(value: object, *, strict: bool = False) -> bool:
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        return False
    return bool((_UID_RE if strict else _LENIENT_UID_RE).match(value))


def clean_uid(value: object) -> str:
    """The UID without the trailing NUL/space padding DICOM allows in transit."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value or "").rstrip("\x00 ")
