"""Specific Character Set decoding and the normalised search form of names.

The index decodes text from the element's raw bytes itself instead of relying
on pydicom's decoded values, for two reasons found while building it:

* pydicom 3.0 leaves the ``ESC $ ) A`` designator of ISO 2022 IR 58 (GB 2312)
  in the decoded string, so a name such as ``Zhang^XiaoDong=ESC$)A张^小东``
  would never match ``张*``.
* Chinese modalities often send GB 18030 bytes without declaring any Specific
  Character Set. Such a dataset is still stored unchanged; for the index we
  try UTF-8, then GB 18030, before falling back to Latin-1, so the name is
  findable.

``decode_text`` reports whether the bytes were decodable in the declared
character set; a value that is not is indexed with replacement characters and
the store answers with a warning.
"""
from __future__ import annotations

import unicodedata
import warnings
from dataclasses import dataclass

from pydicom.charset import convert_encodings, decode_bytes, encode_string, python_encoding

ESC = b"\x1b"
_IR58_G1 = b"\x1b$)A"  # designates GB 2312 into G1 (PS3.5 Annex K)
_G0_ASCII = b"\x1b(B"
# Text VRs whose values are subject to the Specific Character Set (PS3.5 6.1.2.3).
TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})
_DELIMITERS = {ord(c) for c in "\\^=\r\n\t\x0c"}


@dataclass(frozen=True)
class Decoded:
    text: str
    ok: bool          # False: bytes did not decode in the declared character set
    reason: str = ""


def parse_charset(raw: bytes | str | None) -> list[str]:
    """The Specific Character Set terms, first value possibly empty (default repertoire)."""
    if raw is None:
        return []
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    terms = [t.strip() for t in raw.split("\\")]
    return [] if terms == [""] else terms


def _guess_undeclared(raw: bytes) -> str:
    for codec in ("utf-8", "gb18030"):
        try:
            return raw.decode(codec)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


def _decode_ir58(raw: bytes) -> str:
    # With ISO 2022 IR 58 the GB 2312 bytes sit in G1 (high bit set) and ASCII in
    # G0, which is exactly EUC-CN once the designators are removed.
    return raw.replace(_IR58_G1, b"").replace(_G0_ASCII, b"").decode("gb2312")


def decode_text(raw: bytes, charsets: list[str]) -> Decoded:
    """Decode one text value (all its multi-values) for the index."""
    if not raw:
        return Decoded("", True)
    if not charsets or charsets == [""] or all(t in ("", "ISO_IR 6", "ISO 2022 IR 6")
                                               for t in charsets):
        if raw.isascii():
            return Decoded(raw.decode("ascii"), True)
        return Decoded(_guess_undeclared(raw), True, "non-ASCII text without Specific Character Set")
    unknown = [t for t in charsets if t and t not in python_encoding]
    if unknown:
        return Decoded(_guess_undeclared(raw), False,
                       f"unknown Specific Character Set {'/'.join(unknown)}")
    try:
        if ESC in raw and "ISO 2022 IR 58" in charsets:
            return Decoded(_decode_ir58(raw), True)
        if len(charsets) == 1 or ESC not in raw:
            codec = python_encoding[charsets[0] or "ISO_IR 6"]
            return Decoded(raw.decode(codec), True)
        encodings = [python_encoding[t or "ISO_IR 6"] for t in charsets]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return Decoded(decode_bytes(raw, encodings, _DELIMITERS), True)
    except (UnicodeDecodeError, UserWarning, LookupError, ValueError) as exc:
        codec = python_encoding.get(charsets[0] or "ISO_IR 6", "latin-1")
        return Decoded(raw.decode(codec, "replace"), False,
                       f"text not valid in {'/'.join(charsets)}: {exc}")


def _encode_ir58(text: str) -> bytes:
    # PS3.5 6.1.2.5.3: the designation of G1 ends at every delimiter, so each
    # run of GB 2312 characters after a delimiter gets its own ESC $ ) A.
    # (pydicom 3.0 writes the GB 2312 bytes without any designator.)
    out = bytearray()
    segment = []

    def flush() -> None:
        part = "".join(segment)
        if part and not part.isascii():
            out.extend(_IR58_G1)
        out.extend(part.encode("gb2312"))
        segment.clear()

    for char in text:
        if ord(char) in _DELIMITERS:
            flush()
            out.extend(char.encode("ascii"))
        else:
            segment.append(char)
    flush()
    return bytes(out)


def encode_text(text: str, charsets: list[str]) -> bytes | None:
    """One text value encoded in the given Specific Character Set, or None when the
    set cannot represent it (the caller then answers in another one, e.g. UTF-8)."""
    if text.isascii():
        return text.encode("ascii")
    terms = [t for t in charsets if t]
    if not terms or any(t not in python_encoding for t in terms):
        return None
    try:
        if "ISO 2022 IR 58" in terms:
            return _encode_ir58(text)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return encode_string(text, convert_encodings(charsets or [""]))
    except (UnicodeError, UserWarning, LookupError, ValueError):
        return None


def normalise(text: str) -> str:
    """The search form of a text value: NFKC, case-folded, padding and empty trailing
    components removed. Query patterns go through the same function (wildcards survive)."""
    text = unicodedata.normalize("NFKC", text).casefold().strip(" \x00")
    return text.rstrip("^ ")


def person_name_groups(text: str) -> tuple[str, str, str]:
    """Alphabetic, ideographic and phonetic component groups of a PN value."""
    groups = (text.split("=") + ["", ""])[:3]
    return groups[0], groups[1], groups[2]


def person_name_search_forms(text: str) -> tuple[str, str, str]:
    """Normalised forms of the three component groups, each indexed on its own so that
    ``ZHANG*`` and ``张*`` both use an index."""
    return tuple(normalise(g) for g in person_name_groups(text))  # type: ignore[return-value]
