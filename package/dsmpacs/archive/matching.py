"""PS3.4 C.2.2.2 matching of one key value, compiled to a peewee condition.

Each function takes the column (or columns) to match and the DICOM matching
value, and returns a SQL expression that uses an index whenever the value
allows it:

* a wildcard pattern with a literal prefix (``ZHANG*``, ``zh?ng*``) becomes the
  range ``col >= 'zhang' AND col < 'zhanh'`` on the column, plus the pattern
  itself when it holds more than a trailing ``*``. SQLite and MariaDB both use
  an index for a range, whatever their LIKE/GLOB optimisation rules are;
* date and time ranges become ``>=``/``<=`` comparisons on the normalised
  ``YYYYMMDD`` and ``HHMMSS.ffffff`` columns;
* UID lists become ``IN (...)``.

Patterns are case-sensitive (GLOB on SQLite, LIKE under the binary collation on
MariaDB); case-insensitive person-name matching is done by the caller on the
normalised ``*_alpha/_ideo/_phon`` columns. No protocol lives here.
"""
from __future__ import annotations

import re
from functools import reduce
from operator import and_, or_

import peewee
from peewee import Expression

from dsmpacs.archive.attributes import normalise_date

WILDCARDS = "*?"
_TIME_RE = re.compile(r"(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?")
_DT_MAX = "99991231235959.999999"   # completes a partial DateTime upper bound
_DT_RE = r"(\d{4}(?:\d{2}){0,5}(?:\.\d{1,6})?)(?:[+-]\d{4})?"


class QueryError(ValueError):
    """A matching value that cannot be understood (bad date range, non-numeric IS...)."""


def any_of(conditions: list[Expression]) -> Expression:
    return reduce(or_, conditions)


def all_of(conditions: list[Expression]) -> Expression:
    return reduce(and_, conditions)


def has_wildcard(value: str) -> bool:
    return any(c in value for c in WILDCARDS)


def successor(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``
    (in code point order, which is also UTF-8 byte order), or None if unbounded."""
    while prefix:
        code = ord(prefix[-1]) + 1
        if 0xD800 <= code <= 0xDFFF:       # surrogates cannot be stored; skip them
            code = 0xE000
        if code <= 0x10FFFF:
            return prefix[:-1] + chr(code)
        prefix = prefix[:-1]
    return None


class Dialect:
    """The one difference that matters here: how a case-sensitive pattern is written."""

    def __init__(self, mysql: bool):
        self.mysql = mysql

    def pattern(self, column, value: str) -> Expression:
        if self.mysql:
            # LIKE under utf8mb4_bin is case-sensitive; '\' is its escape character.
            escaped = "".join("\\" + c if c in "%_\\" else c for c in value)
            return Expression(column, "LIKE", escaped.replace("*", "%").replace("?", "_"))
        # GLOB is case-sensitive and already uses * and ?; '[' must be escaped.
        return Expression(column, "GLOB", value.replace("[", "[[]"))


def match_text(column, value: str, dialect: Dialect) -> Expression:
    """Single value or wildcard matching of one value (C.2.2.2.1, C.2.2.2.4)."""
    if not has_wildcard(value):
        return column == value
    prefix = re.split(r"[*?]", value, maxsplit=1)[0]
    conditions = []
    if prefix:
        conditions.append(column >= prefix)
        upper = successor(prefix)
        if upper is not None:
            conditions.append(column < upper)
    # A pure prefix pattern is exactly the range; anything else also needs the pattern.
    if not (prefix and value == prefix + "*"):
        conditions.append(dialect.pattern(column, value))
    return all_of(conditions)


def match_text_in_values(column, value: str, dialect: Dialect) -> Expression:
    """Matching against a stored multi-valued attribute (``ORIGINAL\\PRIMARY``): the
    value matches if one of the stored values does. Without an index (these are
    optional keys). A wildcard may span stored values, a rare false positive."""
    if has_wildcard(value):
        forms = [value, value + "\\*", "*\\" + value, "*\\" + value + "\\*"]
        return any_of([dialect.pattern(column, form) for form in forms])
    escaped_forms = [value + "\\*", "*\\" + value, "*\\" + value + "\\*"]
    return any_of([column == value] + [dialect.pattern(column, f) for f in escaped_forms])


def match_lowercase(column, value: str, dialect: Dialect) -> Expression:
    """Case-insensitive pattern on a column without a normalised form (ASCII letters)."""
    return dialect.pattern(peewee.fn.LOWER(column), value.lower()) if has_wildcard(value) \
        else peewee.fn.LOWER(column) == value.lower()


def match_uids(column, values: list[str]) -> Expression:
    """List of UID matching (C.2.2.2.2); one UID is single value matching."""
    uids = [v.strip("\x00 ") for v in values if v.strip("\x00 ")]
    if len(uids) == 1:
        return column == uids[0]
    return column.in_(uids)


def match_integer(column, value: str) -> Expression:
    try:
        return column == int(value.strip())
    except ValueError:
        raise QueryError(f"{value!r} is not an integer") from None


# --- dates and times (C.2.2.2.5) ---------------------------------------------

def date_bounds(value: str) -> tuple[str, str]:
    """('20170101', '20171231') for ``20170101-20171231``; an open end is ''."""
    if "-" in value:
        low, high = (part.strip() for part in value.split("-", 1))
    else:
        low = high = value.strip()
    bounds = []
    for part in (low, high):
        if part and not normalise_date(part):
            raise QueryError(f"{value!r} is not a date or date range (YYYYMMDD-YYYYMMDD)")
        bounds.append(normalise_date(part) if part else "")
    if not bounds[0] and not bounds[1]:
        raise QueryError(f"{value!r} is not a date range")
    return bounds[0], bounds[1]


def time_bound(value: str, *, upper: bool) -> str:
    """``1015`` is 10:15:00 as a lower bound and 10:15:59.999999 as an upper bound,
    so that a single value or range end covers the whole minute or hour it names."""
    m = _TIME_RE.fullmatch(value.strip().replace(":", ""))
    if not m:
        raise QueryError(f"{value!r} is not a time (HHMMSS.FFFFFF)")
    hh, mm, ss, frac = m.groups()
    if upper:
        return f"{hh}{mm or '59'}{ss or '59'}.{(frac or '').ljust(6, '9')}"
    return f"{hh}{mm or '00'}{ss or '00'}" + (f".{frac}" if frac else "")


def time_bounds(value: str) -> tuple[str, str]:
    if "-" in value:
        low, high = (part.strip() for part in value.split("-", 1))
        if not low and not high:
            raise QueryError(f"{value!r} is not a time range")
        return (time_bound(low, upper=False) if low else "",
                time_bound(high, upper=True) if high else "")
    return time_bound(value, upper=False), time_bound(value, upper=True)


def datetime_bounds(value: str) -> tuple[str, str]:
    """DT bounds. A timezone suffix in the query is ignored: stored values are compared
    as written. ``20170101-0500`` reads as a date-time with offset, not as a range."""
    value = value.strip()
    single = re.fullmatch(_DT_RE, value)
    if single:
        low = high = single.group(1)
    else:
        pair = re.fullmatch(f"(?:{_DT_RE})?-(?:{_DT_RE})?", value)
        if not pair or not (pair.group(1) or pair.group(2)):
            raise QueryError(f"{value!r} is not a date-time or range (YYYYMMDDHHMMSS-YYYYMMDDHHMMSS)")
        low, high = pair.group(1) or "", pair.group(2) or ""
    return low, (high + _DT_MAX[len(high):]) if high else ""


def range_condition(column, low: str, high: str) -> Expression:
    conditions = [column != ""]
    if low:
        conditions.append(column >= low)
    if high:
        conditions.append(column <= high)
    return all_of(conditions)


def combined_datetime(date_column, time_column, date_value: str, time_value: str) -> Expression:
    """Combined date and time range matching (C.2.2.2.5.1, negotiated by the SCU):
    ``StudyDate=20060705-20060707 StudyTime=1000-1800`` is the period from 10:00 on
    July 5 to 18:00 on July 7, not 10:00-18:00 on each day."""
    d_low, d_high = date_bounds(date_value)
    t_low, t_high = time_bounds(time_value)
    conditions = [range_condition(date_column, d_low, d_high)]   # envelope: keeps the index
    if d_low and t_low:
        conditions.append((date_column > d_low) | (time_column >= t_low))
    if d_high and t_high:
        conditions.append((date_column < d_high) | ((time_column <= t_high) & (time_column != "")))
    return all_of(conditions)
