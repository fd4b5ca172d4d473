"""Content negotiation for DICOMweb: the Accept header (or ``?accept=``) as an
ordered list of alternatives, and the choice of the first one we can produce.

Clients differ in how they spell the same wish: ``type=`` quoted or not,
``transfer-syntax=*``, bare ``application/dicom`` instead of the multipart form,
``*/*`` or ``multipart/*``. All of them are accepted; 406 is left for requests
that name nothing this server can produce. The media types PS3.18 renamed are
read as their current names (``ALIASES``): the JavaScript dicomweb-client that
OHIF uses still asks for ``image/x-dicom-rle`` and ``image/x-jls``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from flask import request

MULTIPART = "multipart/related"
# Earlier names (DICOM 2017 and before) of media types, read as today's.
ALIASES = {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}


def normalize_media_type(media_type: str) -> str:
    """Lower case, trimmed, and an earlier name replaced by the current one."""
    media_type = media_type.strip().lower()
    return ALIASES.get(media_type, media_type)


@dataclass(frozen=True)
class MediaRange:
    """One alternative: ``multipart/related; type=application/dicom`` becomes
    multipart=True, media_type="application/dicom"."""
    media_type: str                     # the part's (or the single body's) type, lower case
    multipart: bool | None              # True: multipart asked; False: single part; None: either
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def transfer_syntax(self) -> str | None:
        """The ``transfer-syntax`` parameter: a UID, ``*``, or None when absent."""
        return self.params.get("transfer-syntax")

    def covers(self, media_type: str) -> bool:
        """Whether this range admits ``media_type`` (wildcards allowed)."""
        if self.media_type in ("*/*", "*"):
            return True
        major, _, minor = self.media_type.partition("/")
        want_major, _, want_minor = media_type.partition("/")
        return major == want_major and minor in ("*", want_minor)


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes."""
    out, current, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return out


def parse(header: str) -> list[MediaRange]:
    """The alternatives of an Accept value, highest q first (stable otherwise)."""
    ranges: list[MediaRange] = []
    for item in _split(header or "", ","):
        pieces = [p.strip() for p in _split(item, ";")]
        if not pieces or not pieces[0]:
            continue
        outer = pieces[0].lower()
        params: dict[str, str] = {}
        q = 1.0
        for piece in pieces[1:]:
            name, _, value = piece.partition("=")
            name, value = name.strip().lower(), value.strip().strip('"').strip()
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
            elif name:
                params[name] = value
        if q <= 0:
            continue
        if outer in (MULTIPART, "multipart/*"):
            inner = normalize_media_type(params.pop("type", "*/*")) or "*/*"
            ranges.append(MediaRange(inner, True, params, q))
        elif outer in ("*/*", "*"):
            ranges.append(MediaRange("*/*", None, params, q))
        else:
            ranges.append(MediaRange(normalize_media_type(outer), False, params, q))
    ranges.sort(key=lambda r: -r.q)
    return ranges


def requested(default: str = "*/*") -> list[MediaRange]:
    """The request's alternatives: ``?accept=`` wins over the header (PS3.18 8.3.3.1)."""
    value = request.args.get("accept") or request.headers.get("Accept") or default
    return parse(value)


def choose(ranges: list[MediaRange], offered: list[str]) -> tuple[MediaRange, str] | None:
    """The first alternative covering one of ``offered`` (server preference order
    within an alternative), with the media type chosen; None: 406."""
    for media_range in ranges:
        for media_type in offered:
            if media_range.covers(media_type):
                return media_range, media_type
    return None
