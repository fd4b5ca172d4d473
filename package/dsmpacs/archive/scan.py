"""One pass over a dataset in memory: its header's elements and its structural check.

The store path needs two things from every dataset: its header (the elements
before Pixel Data, as pydicom's ``read_dataset`` parses them: part10.py) and a
walk over every element header of the whole dataset, checking that each length
fits (validation.py). For a file the store already holds in memory (up to
part10.READ_WHOLE, every small instance) in Implicit or Explicit VR Little
Endian, this module does both in one loop over the bytes, reading each element
header at its offset with ``struct.unpack_from``. pydicom's generator reads a
file object element by element and the walk then read the same bytes again:
for a small secondary capture the two took about 195 µs, this pass and the
pixel check that is left about 77 µs (timed in one process).

It answers exactly what the general path would: the same ``RawDataElement``
for every element (value, length, offset, deferral over ``defer_size``), a
sequence of undefined length parsed by pydicom itself, the same pixel elements
found. At anything else it gives up (None): a structural fault, a VR pydicom
would have to guess at, a value of undefined length that is neither a sequence
nor pixel data, the encoding not the one the transfer syntax names. The caller
then takes the general path (pydicom's parse, then validation's walk), which
words the refusal, so this module refuses nothing itself.
tests/test_scan.py holds it to the general path on every kind of dataset the
tests build, and to giving up on every broken one.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import lru_cache
from io import BytesIO

from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.filereader import data_element_generator
from pydicom.tag import BaseTag
from pydicom.valuerep import VR
from pydicom.values import convert_string

__all__ = ["LONG_VRS", "MAX_DEPTH", "PIXEL_TAGS", "Pixels", "Scanned", "scan"]

# Explicit VRs with a 4-byte length (PS3.5 7.1.2).
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
                      b"UT", b"UV"})
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
# A hostile dataset can nest sequences until a recursive walk fails; no real
# object comes close to this depth.
MAX_DEPTH = 64
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_CHARSET = 0x00080005
# The VRs pydicom reads without guessing, as the text it gives RawDataElement.VR.
_VRS = {vr.value.encode(): vr.value for vr in VR if len(vr.value) == 2}
_LONG_TEXT = frozenset(vr.decode() for vr in LONG_VRS)
_TAG_LENGTH = struct.Struct("<HHL").unpack_from
_EXPLICIT = struct.Struct("<HH2sH").unpack_from
_LENGTH = struct.Struct("<L").unpack_from


@dataclass
class Pixels:
    """A top-level pixel element as the structural walk found it."""
    length: int | None          # None: encapsulated (undefined length)
    fragments: list[int] = field(default_factory=list)  # fragment lengths, Basic Offset Table excluded


@dataclass
class Scanned:
    dataset: Dataset            # the elements before Pixel Data, as read_dataset gives them
    pixels: dict[int, Pixels]   # the top-level pixel elements of the whole dataset


class _GiveUp(Exception):
    """Not for this path: the general one decides."""


def scan(data: bytes, start: int, implicit: bool, defer_size: int) -> Scanned | None:
    """The dataset from ``start`` to the end of ``data``, Little Endian, Implicit VR
    when ``implicit``: what pydicom's ``read_dataset`` (stopping at Pixel Data,
    deferring values over ``defer_size``) and validation's walk would find; None
    where the general path must decide."""
    try:
        return _top(data, start, implicit, defer_size)
    except _GiveUp:
        return None
    except Exception:           # noqa: BLE001 - whatever it is, the general path words it
        return None


def _top(data: bytes, pos: int, implicit: bool, defer_size: int) -> Scanned:
    size = len(data)
    if size - pos >= 6 and _looks_implicit(data, pos) != implicit:
        raise _GiveUp                   # pydicom would read it in the other encoding
    elements: dict[BaseTag, object] = {}
    pixels: dict[int, Pixels] = {}
    encoding: str | list[str] = default_encoding
    collecting = True                   # before the first pixel element, as read_dataset stops
    while pos < size:
        if size - pos < 8:
            if data[pos:].strip(b"\0"):
                raise _GiveUp
            break                       # a writer's zero padding, shorter than any element
        if implicit:
            group, element, length = _TAG_LENGTH(data, pos)
            vr, head = None, 8
        else:
            group, element, raw_vr, length = _EXPLICIT(data, pos)
            vr, head = _VRS.get(raw_vr), 8
            if vr is None:
                raise _GiveUp
            if vr in _LONG_TEXT:
                if size - pos < 12:
                    raise _GiveUp
                length, head = _LENGTH(data, pos + 8)[0], 12
        if group == 0xFFFE:
            raise _GiveUp
        tag = group << 16 | element
        value_at = pos + head
        if tag in PIXEL_TAGS:
            collecting = False
        if length == _UNDEFINED:
            if tag in PIXEL_TAGS or vr in ("OB", "OW"):
                if collecting:
                    raise _GiveUp       # pydicom reads such a value whole: rare, leave it
                fragments, pos = _fragments(data, value_at)
                if tag in PIXEL_TAGS:
                    pixels[tag] = Pixels(None, fragments)
                continue
            # An undefined-length UN holds an Implicit VR sequence (PS3.5 6.2.2).
            after = _items(data, value_at, None, 1, True if vr == "UN" else implicit)
            if collecting:
                elements[BaseTag(tag)] = _undefined_length(data, pos, after, implicit, defer_size, encoding)
            pos = after
            continue
        value_end = value_at + length
        if value_end > size:
            raise _GiveUp
        if _implicit_sequence(tag) if implicit else vr == "SQ":
            _items(data, value_at, value_end, 1, implicit)
        if collecting:
            if length > defer_size and tag != _CHARSET:
                value = None            # read back on demand (part10.Header.deferred_value)
            elif length:
                value = data[value_at:value_end]
            else:
                value = empty_value_for_VR(vr, raw=True)
            if tag == _CHARSET:
                # As pydicom's generator: a later undefined-length sequence is read with it.
                encoding = convert_encodings(convert_string(value or b"", True))
            key = BaseTag(tag)
            elements[key] = RawDataElement(key, vr, length, value, value_at, implicit, True)
        elif tag in PIXEL_TAGS:
            pixels[tag] = Pixels(length)
        pos = value_end
    return Scanned(_dataset(elements, implicit), pixels)


def _looks_implicit(data: bytes, pos: int) -> bool:
    """pydicom's test of the first element (filereader._is_implicit_vr): a VR is two
    upper-case letters."""
    return not (0x40 < data[pos + 4] < 0x5B and 0x40 < data[pos + 5] < 0x5B)


def _undefined_length(data: bytes, pos: int, end: int, implicit: bool, defer_size: int, encoding):
    """A top-level element of undefined length before Pixel Data (a sequence), read by
    pydicom's own generator, which parses the sequence there and then."""
    fp = BytesIO(data)
    fp.seek(pos)
    try:
        elem = next(data_element_generator(fp, implicit, True, None, defer_size, encoding))
    except Exception as exc:    # whatever pydicom makes of it, the general path words it
        raise _GiveUp from exc
    if fp.tell() != end:
        raise _GiveUp           # pydicom and the walk disagree on where it ends
    return elem


def _dataset(elements: dict, implicit: bool) -> Dataset:
    ds = Dataset(elements)
    # The encoding a header parsed by read_dataset ends with: part10 sets it again from
    # the dataset's own character set (or the default), over read_dataset's setting.
    ds.set_original_encoding(implicit, True, ds._character_set)
    return ds


@lru_cache(maxsize=4096)
def _implicit_sequence(tag: int) -> bool:
    """Whether an Implicit VR element holds a sequence, as the walk decides it."""
    if tag >> 16 & 1:           # private: its VR is unknown in Implicit VR; skipped whole
        return False
    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:
        return False


def _next(data: bytes, pos: int, end: int | None) -> tuple[int, int] | None:
    """The tag at ``pos`` and the four bytes after it as a length, or None at ``end``;
    gives up past ``end`` or with fewer than 8 bytes left."""
    if end is not None and pos >= end:
        if pos != end:
            raise _GiveUp
        return None
    if len(data) - pos < 8:
        raise _GiveUp
    group, element, length = _TAG_LENGTH(data, pos)
    return group << 16 | element, length


def _items(data: bytes, pos: int, end: int | None, depth: int, implicit: bool) -> int:
    """A sequence's items, to ``end`` or to its delimiter: the position after it."""
    if depth > MAX_DEPTH:
        raise _GiveUp
    size = len(data)
    while (found := _next(data, pos, end)) is not None:
        tag, length = found
        pos += 8
        if end is None and tag == _SEQ_END:
            return pos
        if tag != _ITEM:
            raise _GiveUp
        if length == _UNDEFINED:
            pos = _nested(data, pos, None, depth, implicit)
        else:
            item_end = pos + length
            if item_end > (size if end is None else end):
                raise _GiveUp
            pos = _nested(data, pos, item_end, depth, implicit)
    return pos


def _nested(data: bytes, pos: int, end: int | None, depth: int, implicit: bool) -> int:
    """An item's elements, to ``end`` or (``end`` None) to its delimiter: the position
    after them. Walked only: pydicom reads a sequence's items when it is converted."""
    size = len(data)
    while (found := _next(data, pos, end)) is not None:
        tag, length = found
        if tag >> 16 == 0xFFFE:
            if tag == _ITEM_END and end is None:
                return pos + 8
            raise _GiveUp
        vr = b""
        head = 8
        if not implicit:
            vr = data[pos + 4:pos + 6]
            if vr in LONG_VRS:
                if size - pos < 12:
                    raise _GiveUp
                length, head = _LENGTH(data, pos + 8)[0], 12
            else:
                length = length >> 16
        value_at = pos + head
        if length == _UNDEFINED:
            if tag in PIXEL_TAGS or vr in (b"OB", b"OW"):
                _, pos = _fragments(data, value_at)
            else:
                pos = _items(data, value_at, None, depth + 1, True if vr == b"UN" else implicit)
            continue
        value_end = value_at + length
        if value_end > (size if end is None else end):
            raise _GiveUp
        if _implicit_sequence(tag) if implicit else vr == b"SQ":
            _items(data, value_at, value_end, depth + 1, implicit)
        pos = value_end
    return pos


def _fragments(data: bytes, pos: int) -> tuple[list[int], int]:
    """Encapsulated items to the sequence delimiter: the fragments' lengths after the
    first item (the Basic Offset Table), and the position after the delimiter."""
    size = len(data)
    lengths: list[int] = []
    first = True
    while True:
        if size - pos < 8:
            raise _GiveUp
        tag_group, tag_element, length = _TAG_LENGTH(data, pos)
        item = tag_group << 16 | tag_element
        pos += 8
        if item == _SEQ_END:
            return lengths, pos
        if item != _ITEM or length == _UNDEFINED or pos + length > size:
            raise _GiveUp
        pos += length
        if not first:
            lengths.append(length)
        first = False
