"""Structural checks on a staged dataset, before anything of it is archived.

One entry, ``dataset_problem``, called once from the ingest path (so C-STORE,
STOW-RS, import and retrieve all get it). It answers why the dataset must be
refused, or "" when it is sound:

- every element's value length fits inside the data (and inside its item or
  sequence): a length of 0xFFFFFFF0 in a 2 KB file is refused, not archived;
- sequences and encapsulated Pixel Data are well formed, item by item, with
  their delimiters;
- Pixel Data holds what Rows, Columns, Samples per Pixel, Bits Allocated and
  Number of Frames say it must: not empty, not shorter (native), some fragment
  with data (encapsulated);
- a deflated dataset inflates within ``max_inflated_mb`` (see inflate.py).

The walk is written here rather than left to pydicom because it must be
O(number of elements) in time and O(1) in memory on a 500 MB DSA run: it reads
element headers and seeks over values. pydicom reads encapsulated Pixel Data
and undefined-length values whole into memory, and skips a deferred value
without checking that it fits in the file.
"""
from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import BinaryIO, Protocol

from pydicom.datadict import dictionary_VR

from dsmpacs.archive.inflate import InflateError, InflatingReader
from dsmpacs.archive.part10 import DEFLATED, Header, InvalidDataset, ascii_value, raw_us
from dsmpacs.archive.scan import LONG_VRS, MAX_DEPTH, Pixels

__all__ = ["dataset_problem", "skip_encapsulated"]

_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_PIXEL_DATA, _FLOAT_PIXEL_DATA, _DOUBLE_PIXEL_DATA = 0x7FE00010, 0x7FE00008, 0x7FE00009
_PIXEL_TAGS = {_PIXEL_DATA: "Pixel Data", _FLOAT_PIXEL_DATA: "Float Pixel Data",
               _DOUBLE_PIXEL_DATA: "Double Float Pixel Data"}
_NATIVE_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
                              DEFLATED})
_READ_OVER = 4096           # values up to this size are read past, larger ones seeked over


def dataset_problem(path: Path | str, header: Header) -> str:
    """Why the staged file at ``path`` must be refused; "" when it is sound. When
    ``header.data`` holds the file's bytes (part10.read_header read it whole from
    ``path``; a restaged header drops its source's), the walk reads those, not the file;
    when the parse walked them already (``header.walked``), not at all."""
    whole = header.data
    if whole is not None and header.walked is not None:
        return _pixel_problem(header, header.walked)
    try:
        if whole is not None:
            walk = _walk(io.BytesIO(whole), len(whole), header)
        else:
            with open(path, "rb") as fh:
                walk = _walk(fh, os.fstat(fh.fileno()).st_size, header)
    except (InvalidDataset, InflateError) as exc:
        return str(exc)
    return _pixel_problem(header, walk.pixels)


def _walk(fh: BinaryIO, size: int, header: Header) -> _Walk:
    implicit, little = header.dataset.original_encoding
    fh.seek(header.dataset_offset)
    if header.transfer_syntax_uid == DEFLATED:
        source: _Source = InflatingReader(fh)
        implicit, little = False, True
    else:
        source = _FileSource(fh, size)
    walk = _Walk(source, bool(implicit), little is not False)
    walk.dataset()
    return walk


def skip_encapsulated(fh: BinaryIO, end: int, little: bool = True) -> None:
    """Move ``fh`` from the start of an encapsulated value past its sequence delimiter."""
    _Walk(_FileSource(fh, end), False, little)._fragments(_PIXEL_DATA)


# --- the walk ------------------------------------------------------------------------
class _Source(Protocol):
    """What the walk reads from: a plain file, or an InflatingReader."""
    def read(self, size: int) -> bytes: ...
    def tell(self) -> int: ...
    def skip(self, count: int) -> bool: ...
    def at_end(self) -> bool: ...


class _FileSource:
    """Tracks its own position: BufferedReader.tell() costs a system call, and the
    walk asks for the position at every element."""

    def __init__(self, fh: BinaryIO, end: int):
        self._fh, self._end, self._pos = fh, end, fh.tell()

    def read(self, size: int) -> bytes:
        data = self._fh.read(size)
        self._pos += len(data)
        return data

    def tell(self) -> int:
        return self._pos

    def skip(self, count: int) -> bool:
        if self._pos + count > self._end:
            return False
        self._pos += count
        if count <= _READ_OVER:
            self._fh.read(count)        # from the buffer: cheaper than a seek's lseek
        else:
            self._fh.seek(self._pos)
        return True

    def at_end(self) -> bool:
        return self._pos >= self._end


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


class _Walk:
    def __init__(self, source: _Source, implicit: bool, little: bool):
        self.src = source
        self.implicit = implicit
        self.order = "<" if little else ">"
        self.pixels: dict[int, Pixels] = {}       # top-level pixel elements found

    def _header(self, what: str) -> tuple[int, int]:
        head = self.src.read(8)
        if len(head) < 8:
            raise InvalidDataset(f"data ends inside {what}")
        group, element, length = struct.unpack(self.order + "HHL", head)
        return group << 16 | element, length

    def dataset(self, end: int | None = None, *, depth: int = 0, implicit: bool | None = None,
                delimited: bool = False) -> None:
        """Elements up to ``end``, the item delimiter (``delimited``) or, at the
        top level, the end of the data."""
        implicit = self.implicit if implicit is None else implicit
        src = self.src
        while True:
            if end is not None and src.tell() >= end:
                if src.tell() > end:
                    raise InvalidDataset("an element runs past the end of its item")
                return
            if end is None and not delimited and src.at_end():
                return
            head = src.read(8)
            if end is None and not delimited and len(head) < 8 and not head.strip(b"\0"):
                return                  # a writer's zero padding, shorter than any element
            if len(head) < 8:
                raise InvalidDataset("data ends inside an element header"
                                     if not delimited else "data ends inside a sequence item")
            group, element = struct.unpack(self.order + "HH", head[:4])
            tag = group << 16 | element
            vr = b""
            if group == 0xFFFE:
                if tag == _ITEM_END and delimited:
                    return
                raise InvalidDataset(f"unexpected item tag {_tag_text(tag)} among elements")
            if implicit:
                length = struct.unpack(self.order + "L", head[4:8])[0]
            else:
                vr = head[4:6]
                if vr in LONG_VRS:
                    extra = src.read(4)
                    if len(extra) < 4:
                        raise InvalidDataset("data ends inside an element header")
                    length = struct.unpack(self.order + "L", extra)[0]
                else:
                    length = struct.unpack(self.order + "H", head[6:8])[0]
            top = depth == 0
            if length == _UNDEFINED:
                if tag in _PIXEL_TAGS or vr in (b"OB", b"OW"):
                    fragments = self._fragments(tag)
                    if top and tag in _PIXEL_TAGS:
                        self.pixels[tag] = Pixels(None, fragments)
                else:
                    # An undefined-length UN holds an Implicit VR sequence (PS3.5 6.2.2).
                    self._sequence(None, depth + 1, True if vr == b"UN" else implicit)
                continue
            value_end = src.tell() + length
            if end is not None and value_end > end:
                raise InvalidDataset(f"element {_tag_text(tag)} runs past the end of its item")
            if self._is_sequence(tag, vr, implicit):
                self._sequence(value_end, depth + 1, implicit)
                continue
            if not src.skip(length):
                raise InvalidDataset(f"element {_tag_text(tag)} length {length} runs past end of data")
            if top and tag in _PIXEL_TAGS:
                self.pixels[tag] = Pixels(length)

    def _is_sequence(self, tag: int, vr: bytes, implicit: bool) -> bool:
        if not implicit:
            return vr == b"SQ"
        if tag >> 16 & 1:           # private: its VR is unknown in Implicit VR; skip it whole
            return False
        try:
            return dictionary_VR(tag) == "SQ"
        except KeyError:
            return False

    def _sequence(self, end: int | None, depth: int, implicit: bool) -> None:
        if depth > MAX_DEPTH:
            raise InvalidDataset(f"sequences nested deeper than {MAX_DEPTH}")
        src = self.src
        while True:
            if end is not None and src.tell() >= end:
                return
            tag, length = self._header("a sequence")
            if end is None and tag == _SEQ_END:
                return
            if tag != _ITEM:
                raise InvalidDataset(f"expected a sequence item, found {_tag_text(tag)}")
            if length == _UNDEFINED:
                self.dataset(depth=depth, implicit=implicit, delimited=True)
            else:
                item_end = src.tell() + length
                if end is not None and item_end > end:
                    raise InvalidDataset("a sequence item runs past the end of its sequence")
                self.dataset(item_end, depth=depth, implicit=implicit)

    def _fragments(self, tag: int) -> list[int]:
        """Items of encapsulated data to the sequence delimiter: the lengths of the
        fragments after the first item (the Basic Offset Table)."""
        lengths: list[int] = []
        first = True
        while True:
            item, length = self._header(f"encapsulated {_tag_text(tag)}")
            if item == _SEQ_END:
                return lengths
            if item != _ITEM or length == _UNDEFINED:
                raise InvalidDataset(f"bad fragment item {_tag_text(item)} in {_tag_text(tag)}")
            if not self.src.skip(length):
                raise InvalidDataset(f"a fragment of {_tag_text(tag)} runs past end of data")
            if not first:
                lengths.append(length)
            first = False


# --- Pixel Data against the image attributes --------------------------------------------
# By tag: a keyword costs pydicom a dictionary look-up on every call.
_SAMPLES_PER_PIXEL, _ROWS, _COLUMNS = 0x00280002, 0x00280010, 0x00280011
_BITS_ALLOCATED, _NUMBER_OF_FRAMES, _PHOTOMETRIC_INTERPRETATION = 0x00280100, 0x00280008, 0x00280004
_US_TAGS = frozenset({_SAMPLES_PER_PIXEL, _ROWS, _COLUMNS, _BITS_ALLOCATED})


def _int(ds, tag: int) -> int | None:
    elem = ds.get_item(tag, keep_deferred=True)
    if elem is None or elem.value is None:
        # Absent, empty, or over part10.HEADER_DEFER_SIZE: thousands of values, none of
        # them a single number (and pydicom's deferred read would fail: no file name).
        return None
    if tag in _US_TAGS and (number := raw_us(ds, elem)) is not None:
        return number
    try:
        value = ds[tag].value           # by tag, Dataset.get would answer the element
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError, AttributeError, OverflowError):
        return None


def _pixel_problem(header: Header, found: dict[int, Pixels]) -> str:
    ds = header.dataset
    for tag, pixels in found.items():
        name = _PIXEL_TAGS[tag]
        frames = max(1, _int(ds, _NUMBER_OF_FRAMES) or 1)
        if pixels.length is None:
            # Fewer fragments than frames breaks PS3.5 A.4, but old multi-frame JPEG
            # writers did it and their data decodes; only no data at all is refused.
            if not any(pixels.fragments):
                return f"encapsulated {name} holds no fragment data"
            continue
        if pixels.length == 0:
            return f"{name} {_tag_text(tag)} is empty"
        if header.transfer_syntax_uid not in _NATIVE_SYNTAXES:
            continue                    # a compressed or private syntax: not ours to size
        need = _native_length(ds, tag, frames)
        if need is not None and pixels.length < need:
            return f"{name} has {pixels.length} bytes, attributes need {need}"
    return ""


def _native_length(ds, tag: int, frames: int) -> int | None:
    """Bytes native pixel data needs (PS3.5 8.1.1), or None without the attributes."""
    rows, columns = _int(ds, _ROWS), _int(ds, _COLUMNS)
    bits = {_FLOAT_PIXEL_DATA: 32, _DOUBLE_PIXEL_DATA: 64}.get(tag) or _int(ds, _BITS_ALLOCATED)
    if not rows or not columns or not bits or rows < 0 or columns < 0 or bits < 0:
        return None
    samples = _int(ds, _SAMPLES_PER_PIXEL) or 1
    if tag == _PIXEL_DATA and ascii_value(ds, _PHOTOMETRIC_INTERPRETATION).strip() == "YBR_FULL_422":
        samples = 2             # 4:2:2 stores two values per pixel (PS3.5 8.2.1)
    return (rows * columns * samples * bits * frames + 7) // 8
