"""Frame access by file offset: one frame of a stored instance without reading the rest.

An XA run can hold hundreds of 1024x1024 frames; the viewer, WADO-RS frames
and thumbnails each need one of them. ``read_layout`` parses the header with
pydicom up to (not into) Pixel Data and records where the Pixel Data value
starts; ``read_frame`` then seeks to the frame (native) or to its fragments
(encapsulated) and returns the stored bytes unchanged. Decoding is the
caller's business (see render.py).

Native frames come back as stored: little endian, except for the retired
Explicit VR Big Endian syntax. Frames of 1-bit data that do not start on a
byte boundary are re-aligned so that each returned frame starts at bit 0.
Deflated files have no usable file offsets: their header and frames come from
inflating the dataset as a stream (archive/inflate.py), never whole, and
within max_inflated_mb; a frame costs inflating the data up to its end.
"""
from __future__ import annotations

import dataclasses
import os
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from dsmpacs.archive.inflate import InflateError, InflatingReader

__all__ = ["PixelLayout", "PixelDataError", "FrameNotFound", "read_layout", "read_frame",
           "frame_length", "fragment_table"]

PIXEL_DATA = 0x7FE00010
_ITEM = 0xFFFEE000
_SEQUENCE_END = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UN", b"UC", b"UR", b"UT"}


class PixelDataError(ValueError):
    """The Pixel Data element cannot be read as the header says it should be."""


class FrameNotFound(LookupError):
    """A frame index outside 0 .. number_of_frames - 1."""


@dataclass(frozen=True)
class PixelLayout:
    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str
    planar_configuration: int
    number_of_frames: int
    transfer_syntax_uid: str
    pixel_data_offset: int          # file offset of the Pixel Data VALUE; -1 when unusable (deflate)
    pixel_data_length: int | None   # None for undefined length (encapsulated)
    encapsulated: bool
    header: Dataset                 # every element before Pixel Data, plus file_meta
    # Deflated only: (file offset where the deflate stream starts, offset of the
    # Pixel Data value in the inflated dataset).
    deflated: tuple[int, int] | None = None

    @property
    def big_endian(self) -> bool:
        return self.transfer_syntax_uid == ExplicitVRBigEndian

    @property
    def frame_length(self) -> int:
        """Bytes of one native frame (rounded up for 1-bit data)."""
        return (frame_bits(self) + 7) // 8


def frame_bits(layout: PixelLayout) -> int:
    samples = layout.samples_per_pixel
    if layout.photometric_interpretation == "YBR_FULL_422" and not layout.encapsulated:
        samples = 2          # PS3.5 8.2.1: two samples per pixel stored for 4:2:2
    return layout.rows * layout.columns * samples * layout.bits_allocated


def frame_length(layout: PixelLayout) -> int:
    return layout.frame_length


def _int(ds: Dataset, keyword: str, default: int) -> int:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def read_layout(path: str | os.PathLike) -> PixelLayout | None:
    """The pixel layout of a stored instance; None when it has no Pixel Data."""
    with open(path, "rb") as fh:
        # The syntax first: pydicom would inflate a deflated dataset whole, in memory.
        preamble = read_preamble(fh, force=True)
        meta = _read_file_meta_info(fh) if preamble is not None else FileMetaDataset()
        if str(meta.get("TransferSyntaxUID", "")).rstrip("\0 ") == DeflatedExplicitVRLittleEndian:
            try:
                return _deflated_layout(fh, meta)
            except InflateError as exc:
                raise PixelDataError(str(exc)) from exc
        fh.seek(0)
        header = pydicom.dcmread(fh, stop_before_pixels=True, force=True)
        meta = getattr(header, "file_meta", None)
        syntax = UID(str(meta.get("TransferSyntaxUID", ImplicitVRLittleEndian))) if meta else \
            UID(ImplicitVRLittleEndian)
        offset, length = _pixel_element(fh, syntax)
    if offset is None:
        return None
    return _layout(header, syntax, offset, length)


def _layout(header: Dataset, syntax: UID, offset: int, length: int | None) -> PixelLayout:
    encapsulated = length is None
    return PixelLayout(
        rows=_int(header, "Rows", 0), columns=_int(header, "Columns", 0),
        samples_per_pixel=_int(header, "SamplesPerPixel", 1),
        bits_allocated=_int(header, "BitsAllocated", 8),
        bits_stored=_int(header, "BitsStored", _int(header, "BitsAllocated", 8)),
        pixel_representation=_int(header, "PixelRepresentation", 0),
        photometric_interpretation=str(header.get("PhotometricInterpretation", "MONOCHROME2")).strip(),
        planar_configuration=_int(header, "PlanarConfiguration", 0),
        number_of_frames=max(1, _int(header, "NumberOfFrames", 1)),
        transfer_syntax_uid=str(syntax), pixel_data_offset=offset,
        pixel_data_length=length, encapsulated=encapsulated, header=header)


def _pixel_element(fh, syntax: UID) -> tuple[int | None, int | None]:
    """(value offset, length or None if undefined) of the Pixel Data element at fh's position."""
    little = syntax != ExplicitVRBigEndian
    implicit = syntax == ImplicitVRLittleEndian
    head = fh.read(8)
    if len(head) < 8:
        return None, None
    group, element = struct.unpack("<HH" if little else ">HH", head[:4])
    if (group << 16 | element) != PIXEL_DATA:
        return None, None               # stopped at Float/Double Float Pixel Data: not ours
    if implicit:
        length = struct.unpack("<I", head[4:8])[0]
    elif head[4:6] in _LONG_VRS:
        more = fh.read(4)
        length = struct.unpack("<I" if little else ">I", more)[0]
    else:
        length = struct.unpack("<H" if little else ">H", head[6:8])[0]
    return fh.tell(), (None if length == _UNDEFINED else length)


def _stop_at_pixels(tag, vr, length) -> bool:
    return tag in (0x7FE00008, 0x7FE00009, PIXEL_DATA)


def _deflated_layout(fh, meta: FileMetaDataset) -> PixelLayout | None:
    start = fh.tell()
    stream = InflatingReader(fh)
    # Not deferred: values read later would be looked up by file offset, which a
    # deflated file does not have (palette LUTs are bigger than any defer size).
    header = read_dataset(stream, False, True, stop_when=_stop_at_pixels)
    header.file_meta = meta
    syntax = UID(DeflatedExplicitVRLittleEndian)
    offset, length = _pixel_element(stream, syntax)
    if offset is None:
        return None
    if length is None:
        raise PixelDataError("encapsulated Pixel Data in a deflated dataset")
    return dataclasses.replace(_layout(header, syntax, -1, length), deflated=(start, offset))


# --- reading frames --------------------------------------------------------------
def read_frame(path: str | os.PathLike, layout: PixelLayout, index: int) -> bytes:
    """The stored bytes of frame ``index`` (0-based): native pixels, or the frame's
    compressed bitstream with its fragments joined."""
    if not 0 <= index < layout.number_of_frames:
        raise FrameNotFound(f"frame {index} is outside 0..{layout.number_of_frames - 1}")
    if layout.deflated is not None:
        return _deflated_frame(path, layout, index)
    if layout.encapsulated:
        return _encapsulated_frame(path, layout, index)
    return _native_frame(path, layout, index)


def _native_frame(path, layout: PixelLayout, index: int) -> bytes:
    with open(path, "rb") as fh:
        return _native_read(fh, layout.pixel_data_offset, layout, index)


def _deflated_frame(path, layout: PixelLayout, index: int) -> bytes:
    start, value_offset = layout.deflated
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            return _native_read(InflatingReader(fh), value_offset, layout, index)
    except InflateError as exc:
        raise PixelDataError(str(exc)) from exc


def _native_read(fh, value_offset: int, layout: PixelLayout, index: int) -> bytes:
    """Frame ``index`` of native Pixel Data whose value starts at ``value_offset`` in ``fh``."""
    bits = frame_bits(layout)
    start_bit = bits * index
    need = (bits + 7) // 8
    if layout.pixel_data_length is not None and (start_bit + bits + 7) // 8 > layout.pixel_data_length:
        raise PixelDataError(f"Pixel Data holds {layout.pixel_data_length} bytes, "
                             f"too few for frame {index + 1} of {layout.number_of_frames}")
    fh.seek(value_offset + start_bit // 8)
    if start_bit % 8 == 0:
        data = fh.read(need)
    else:
        data = _realign_bits(fh.read(need + 1), start_bit % 8, bits)
    if len(data) < need:
        raise PixelDataError(f"file ends inside frame {index + 1}")
    return data


def _realign_bits(data: bytes, shift: int, bits: int) -> bytes:
    """1-bit frames packed back to back: move a frame's bits so it starts at bit 0
    (DICOM packs the first pixel into the least significant bit)."""
    unpacked = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    return np.packbits(unpacked[shift:shift + bits], bitorder="little").tobytes()


# --- encapsulated Pixel Data ---------------------------------------------------------
@dataclass(frozen=True)
class Fragments:
    basic_offsets: tuple[int, ...]          # the Basic Offset Table (may be empty)
    starts: tuple[int, ...]                 # fragment positions relative to the first fragment's tag
    values: tuple[tuple[int, int], ...]     # (file offset, length) of each fragment's value
    heads: tuple[bytes, ...]                # the first bytes of each fragment (codestream markers)


_cache_lock = threading.Lock()
_cache: OrderedDict[tuple, Fragments] = OrderedDict()
_CACHE_SIZE = 64


def fragment_table(path, layout: PixelLayout) -> Fragments:
    """Walk the item headers of encapsulated Pixel Data (8 bytes read per fragment).
    Cached per file, size and mtime: a cine loop asks for every frame in turn."""
    st = os.stat(path)
    key = (os.fspath(path), st.st_size, st.st_mtime_ns, layout.pixel_data_offset)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    table = _walk_fragments(path, layout.pixel_data_offset, st.st_size)
    with _cache_lock:
        _cache[key] = table
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return table


def _item_header(fh) -> tuple[int, int]:
    head = fh.read(8)
    if len(head) < 8:
        raise PixelDataError("file ends inside encapsulated Pixel Data")
    group, element, length = struct.unpack("<HHI", head)
    return group << 16 | element, length


def _walk_fragments(path, offset: int, size: int) -> Fragments:
    with open(path, "rb") as fh:
        fh.seek(offset)
        tag, length = _item_header(fh)
        if tag != _ITEM or length == _UNDEFINED:
            raise PixelDataError("encapsulated Pixel Data does not start with the Basic Offset Table item")
        if length % 4:
            raise PixelDataError("Basic Offset Table length is not a multiple of 4")
        bot = struct.unpack(f"<{length // 4}I", fh.read(length)) if length else ()
        first = fh.tell()
        starts, values, heads = [], [], []
        while True:
            position = fh.tell()
            tag, length = _item_header(fh)
            if tag == _SEQUENCE_END:
                break
            if tag != _ITEM or length == _UNDEFINED or position + 8 + length > size:
                raise PixelDataError(f"bad fragment item at file offset {position}")
            starts.append(position - first)
            values.append((position + 8, length))
            head = fh.read(min(length, 12))
            heads.append(head)
            fh.seek(length - len(head), os.SEEK_CUR)
    return Fragments(tuple(bot), tuple(starts), tuple(values), tuple(heads))


def _encapsulated_frame(path, layout: PixelLayout, index: int) -> bytes:
    table = fragment_table(path, layout)
    if not table.values:
        raise PixelDataError("encapsulated Pixel Data has no fragments")
    chosen = _fragments_of_frame(layout, table, index)
    with open(path, "rb") as fh:
        parts = []
        for i in chosen:
            position, length = table.values[i]
            fh.seek(position)
            parts.append(fh.read(length))
    data = b"".join(parts)
    eot_lengths = _extended_lengths(layout.header)
    if not table.basic_offsets and eot_lengths is not None and index < len(eot_lengths):
        data = data[:eot_lengths[index]]
    return data


def _fragments_of_frame(layout: PixelLayout, table: Fragments, index: int) -> list[int]:
    n_frames, n_fragments = layout.number_of_frames, len(table.values)
    offsets = table.basic_offsets or _extended_offsets(layout.header)
    if offsets:
        if len(offsets) != n_frames:
            raise PixelDataError(f"offset table lists {len(offsets)} frames, the header {n_frames}")
        lo = offsets[index]
        hi = offsets[index + 1] if index + 1 < n_frames else float("inf")
        chosen = [i for i, start in enumerate(table.starts) if lo <= start < hi]
        if not chosen or table.starts[chosen[0]] != lo:
            raise PixelDataError(f"offset table entry for frame {index + 1} does not point at a fragment")
        return chosen
    if n_frames == 1:
        return list(range(n_fragments))
    if n_fragments == n_frames:
        return [index]
    return _fragments_by_markers(layout, table, index)


# First bytes of a frame's codestream: JPEG SOI, JPEG 2000 SOC+SIZ, a JP2 signature box.
_START_MARKERS = (b"\xff\xd8\xff", b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP  ")


def _fragments_by_markers(layout: PixelLayout, table: Fragments, index: int) -> list[int]:
    """No offset table and more fragments than frames: a frame begins at each fragment
    that starts with a codestream start marker (RLE frames are one fragment each)."""
    firsts = [i for i, head in enumerate(table.heads) if head.startswith(_START_MARKERS)]
    if len(firsts) != layout.number_of_frames or firsts[0] != 0:
        raise PixelDataError(f"{len(table.values)} fragments for {layout.number_of_frames} frames, "
                             "no offset table and no recognisable frame boundaries")
    end = firsts[index + 1] if index + 1 < len(firsts) else len(table.values)
    return list(range(firsts[index], end))


def _extended_offsets(header: Dataset) -> tuple[int, ...] | None:
    element = header.get((0x7FE0, 0x0001))
    if element is None or not element.value:
        return None
    raw = bytes(element.value)
    return struct.unpack(f"<{len(raw) // 8}Q", raw)


def _extended_lengths(header: Dataset) -> tuple[int, ...] | None:
    element = header.get((0x7FE0, 0x0002))
    if element is None or not element.value:
        return None
    raw = bytes(element.value)
    return struct.unpack(f"<{len(raw) // 8}Q", raw)


def frame_count(path: str | os.PathLike | Path) -> int:
    layout = read_layout(path)
    return 0 if layout is None else layout.number_of_frames
