"""Jinja filters for DICOM values and sizes. They return plain strings, which
autoescaping then escapes: DICOM text is data, never markup."""
from __future__ import annotations

import re
from datetime import datetime, timedelta

from flask import Flask

from dsmpacs.archive.statistics import local_utc_offset_minutes

_CJK = re.compile(r"[\u3000-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f]")


def filesize(value: int | None) -> str:
    size = float(value or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def localtime(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A UTC timestamp from the index, in the server's local time."""
    if value is None:
        return ""
    return (value + timedelta(minutes=local_utc_offset_minutes())).strftime(fmt)


def dicom_date(value: str | None) -> str:
    """YYYYMMDD -> YYYY-MM-DD (anything else unchanged)."""
    text = (value or "").strip()
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


def person_name(value: str | None) -> str:
    """A PN for reading: components separated by spaces (none between CJK
    components, as Chinese names are written), groups by " = "."""
    groups = []
    for group in (value or "").split("="):
        parts = [p.strip() for p in group.split("^") if p.strip()]
        if parts:
            joiner = "" if all(_CJK.search(p) for p in parts) else " "
            groups.append(joiner.join(parts))
    return " = ".join(groups)


def init_app(app: Flask) -> None:
    from dsmpacs.web.labels import FILTERS

    app.jinja_env.filters.update(filesize=filesize, localtime=localtime, dicom_date=dicom_date,
                                 person_name=person_name, **FILTERS)
