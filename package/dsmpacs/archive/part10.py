"""Reading and writing the DICOM Part 10 envelope without touching the dataset bytes."""
from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from dsmpacs import __version__
from dsmpacs.archive.inflate import InflateError, InflatingReader
from dsmpacs.archive.scan import LONG_VRS, PIXEL_TAGS, Pixels, scan
from dsmpacs.archive.uids import clean_uid

# A fixed implementation identity for files this archive writes (import, STOW-RS,
# conversions). Derived once from a UUID under the 2.25 root so it needs no registry.
IMPLEMENTATION_CLASS_UID = "2.25.215880381286145283018374437069208066347"
IMPLEMENTATION_VERSION_NAME = ("DSMPACS_" + __version__.replace(".", ""))[:16]
# Stop the header parse at Pixel Data, and leave big non-pixel values (CSA
# headers, overlays) on disk; the index never needs them.
HEADER_DEFER_SIZE = 4096
# A file up to this size is parsed in memory, from one read() or from the bytes its
# spool kept (storage.SpoolWriter.staged): pydicom asks the file for its position at
# every element, and BufferedReader.tell() is a system call each time (34 lseeks for
# a small secondary capture).
READ_WHOLE = 256 * 1024

__all__ = ["Header", "InvalidDataset", "parse_header", "read_header", "ascii_value", "raw_us", "read_meta_group",
           "file_meta_bytes", "PYDICOM_IMPLEMENTATION_UID"]


class InvalidDataset(ValueError):
    """The bytes are not a DICOM dataset this archive can index."""


def ascii_value(ds: Dataset, tag: int) -> str:
    """A default-repertoire element's text (UI, CS), without padding, "" when absent.
    A value still raw is decoded here rather than by pydicom's conversion (which
    builds an object per value and keeps it): on the store path every instance's
    UIDs are read this way."""
    elem = ds.get_item(tag, keep_deferred=True)
    if elem is None:
        return ""
    if elem.value is None and elem.length:
        # Left unread by the parse (over HEADER_DEFER_SIZE): never a UID or a code
        # string, and pydicom's own read of it needs a file name the header lacks.
        return f"(a value of {elem.length} bytes)"
    return clean_uid(elem.value)


_US = {True: struct.Struct("<H"), False: struct.Struct(">H")}


def raw_us(ds: Dataset, elem) -> int | None:
    """The value of a single-valued US element still raw (two bytes), in the dataset's
    byte order; None when the element is not that (the caller converts it as usual).
    With implicit VR the caller knows the tag is US."""
    value = elem.value
    if not isinstance(value, bytes) or len(value) != 2 or elem.VR not in (None, "US"):
        return None
    return _US[ds.original_encoding[1] is not False].unpack(value)[0]


@dataclass
class Header:
    dataset: Dataset            # attributes before Pixel Data; large values deferred
    meta: dict[str, str]        # File Meta values by keyword (empty without a meta group)
    transfer_syntax_uid: str
    dataset_offset: int         # byte offset of the dataset in the file
    # The whole file as read_header read it, when it was small enough to read whole
    # (READ_WHOLE): validation walks these bytes instead of opening the file again.
    data: bytes | None = field(default=None, compare=False, repr=False)
    # Added to an element's offset for its offset in the file the header is now about:
    # a restaged dataset keeps the header parsed from its source, behind a new File Meta.
    value_shift: int = 0
    # The top-level pixel elements found when ``data`` was walked whole in the same pass
    # as the parse (archive/scan.py), so validation need not walk it again; None when
    # it was not. It describes ``data`` and is used only with it.
    walked: dict[int, Pixels] | None = field(default=None, compare=False, repr=False)

    def deferred_value(self, elem, path: Path | str) -> bytes | None:
        """The bytes of a value the parse left unread (over HEADER_DEFER_SIZE), from
        ``data`` or else from the file at ``path``; None for a deflated dataset, whose
        offsets are the inflated stream's."""
        if self.transfer_syntax_uid == DEFLATED:
            return None
        start = elem.value_tell + self.value_shift
        if self.data is not None and not self.value_shift:
            value = self.data[start:start + elem.length]
        else:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                value = os.pread(fd, elem.length, start)
            finally:
                os.close(fd)
        return value if len(value) == elem.length else None


_META_KEYWORDS = {0x0002: "MediaStorageSOPClassUID", 0x0003: "MediaStorageSOPInstanceUID",
                  0x0010: "TransferSyntaxUID", 0x0012: "ImplementationClassUID",
                  0x0013: "ImplementationVersionName", 0x0016: "SourceApplicationEntityTitle"}
_META_TEXT_VRS = {b"UI", b"AE", b"SH", b"CS", b"LO"}


_META_HEAD = struct.Struct("<HH2sH").unpack_from


def _meta_in(data: bytes, pos: int) -> tuple[dict[str, str], int] | None:
    """The File Meta values of ``data`` from ``pos`` (after ``DICM``) and the dataset's
    offset; None where the group is not laid out as the standard says or does not end
    inside ``data`` (then pydicom's reader decides)."""
    out: dict[str, str] = {}
    size = len(data)
    while True:
        if size - pos < 8:
            return None
        group, element, vr, length = _META_HEAD(data, pos)
        if group != 0x0002:
            return out, pos
        pos += 8
        if vr in LONG_VRS:
            if size - pos < 4:
                return None
            length = struct.unpack_from("<L", data, pos)[0]
            pos += 4
        elif not (vr.isalpha() and vr.isupper()):
            return None
        if size - pos < length:
            return None
        if element in _META_KEYWORDS and vr in _META_TEXT_VRS:
            out[_META_KEYWORDS[element]] = data[pos:pos + length].decode("ascii", "replace").rstrip("\x00 ")
        pos += length


# Bytes read for the File Meta group at once: what a buffered file reads anyway, and far
# more than a File Meta group holds. A longer one goes to pydicom's reader.
_META_READ = 8192


def _read_meta(fp: BinaryIO) -> dict[str, str]:
    """The File Meta group after ``DICM``, as the standard lays it out (Explicit VR
    Little Endian), read by ``_meta_in``; ``fp`` is left at the dataset. Anything else is
    left to pydicom's general reader. Reading it by hand costs a tenth of pydicom's
    parse on a path run for every instance."""
    start = fp.tell()
    found = _meta_in(fp.read(_META_READ), 0)
    if found is not None:
        out, offset = found
        fp.seek(start + offset)
        return out
    fp.seek(start)
    meta = _read_file_meta_info(fp)
    return {kw: str(meta.get(kw, "") or "").rstrip("\x00 ") for kw in _META_KEYWORDS.values()
            if kw in meta}


def read_meta_group(fp: BinaryIO) -> dict[str, str]:
    """The File Meta values by keyword, from a stream positioned after ``DICM``."""
    try:
        return _read_meta(fp)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, struct.error) as exc:
        raise InvalidDataset(f"unreadable file meta: {exc}") from exc


def read_header(path: Path | str) -> Header:
    """Parse the file meta and the dataset header (up to Pixel Data)."""
    # os.open and os.read, not open(): a buffered file object costs four more system
    # calls (fstat, isatty's ioctl, two lseeks) and, on the store path, each system
    # call is a hand-over of the GIL to another association's threads.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size <= READ_WHOLE:
            return parse_header(_read_to_end(fd, size))
        with open(fd, "rb", closefd=False) as fh:
            return _parse_header(fh, None)
    finally:
        os.close(fd)


def parse_header(data: bytes) -> Header:
    """read_header for a whole file already in memory (a spool that kept its bytes).
    A file with a File Meta group in Implicit or Explicit VR Little Endian is parsed
    and walked in one pass (archive/scan.py); anything that pass does not take, sound
    or not, is parsed as any other file."""
    return _scanned_header(data) or _parse_header(io.BytesIO(data), data)


def _scanned_header(data: bytes) -> Header | None:
    if data[128:132] != b"DICM":
        return None
    found = _meta_in(data, 132)
    if found is None:
        return None
    meta, offset = found
    ts = meta.get("TransferSyntaxUID", "")
    implicit = _scanned_syntax(ts)
    if implicit is None:
        return None
    scanned = scan(data, offset, implicit, HEADER_DEFER_SIZE)
    if scanned is None:
        return None
    return Header(scanned.dataset, meta, ts, offset, data, walked=scanned.pixels)


# Only the syntaxes pydicom knows are remembered: the string comes from the sender,
# and an upload may name any.
_SYNTAXES: dict[str, bool | None] = {}


def _scanned_syntax(ts: str) -> bool | None:
    """Whether a transfer syntax is Implicit VR, for the ones scan.py reads (a Little
    Endian syntax pydicom knows, not deflated); None for the others."""
    if ts in _SYNTAXES:
        return _SYNTAXES[ts]
    uid = UID(ts)
    if not uid.is_transfer_syntax:
        return None
    _SYNTAXES[ts] = uid.is_implicit_VR if uid.is_little_endian and not uid.is_deflated else None
    return _SYNTAXES[ts]


def _read_to_end(fd: int, size: int) -> bytes:
    """The file from its start: one read() when it still has the size fstat gave (a
    regular file returns fewer bytes than asked only at its end)."""
    data = os.read(fd, size + 1)
    if len(data) <= size:
        return data
    chunks = [data]
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_header(fp: BinaryIO, data: bytes | None) -> Header:
    try:
        preamble = read_preamble(fp, force=True)
        meta = _read_meta(fp) if preamble is not None else {}
        offset = fp.tell()
        ds = _read_dataset(fp, meta, preamble is not None)
    except InvalidDataset:
        raise
    except InflateError as exc:
        raise InvalidDataset(str(exc)) from exc
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OverflowError,
            NotImplementedError, AttributeError, IndexError, struct.error, RecursionError) as exc:
        # RecursionError: sequences nested thousands deep, a cheap way to crash a parser.
        raise InvalidDataset(f"not a readable DICOM dataset: {exc}") from exc
    except OSError as exc:
        if exc.errno is not None:
            raise                       # the disk's error, not the data's
        # pydicom's own complaint, an OSError without errno: "No tag to read at file
        # position ..." from a file that ends inside a sequence item.
        raise InvalidDataset(f"not a readable DICOM dataset: {exc}") from exc
    ts = str(meta.get("TransferSyntaxUID", "") or "")
    if not ts:
        ts = _guess_transfer_syntax(ds)
    return Header(ds, meta, ts.rstrip("\x00 "), offset, data)


DEFLATED = "1.2.840.10008.1.2.1.99"


def _stop_at_pixel_data(tag, vr, length) -> bool:
    return tag in PIXEL_TAGS


def _read_dataset(fp: BinaryIO, meta: dict[str, str], has_meta: bool) -> Dataset:
    """The dataset header from the current position, up to Pixel Data.

    For a known, non-deflated transfer syntax this continues from where the file
    meta ended instead of letting dcmread parse preamble and meta a second time.
    """
    ts = UID(str(meta.get("TransferSyntaxUID", "")).rstrip("\x00 "))
    if has_meta and ts.is_deflated:
        # Never pydicom's whole-file inflate: a small upload may inflate to gigabytes.
        ds = read_dataset(InflatingReader(fp), False, True, stop_when=_stop_at_pixel_data,
                          defer_size=HEADER_DEFER_SIZE)
        ds.set_original_encoding(False, True, ds._character_set)
        return ds
    if has_meta and ts.is_transfer_syntax:
        ds = read_dataset(fp, ts.is_implicit_VR, ts.is_little_endian, stop_when=_stop_at_pixel_data,
                          defer_size=HEADER_DEFER_SIZE)
        ds.set_original_encoding(ts.is_implicit_VR, ts.is_little_endian, ds._character_set)
        return ds
    fp.seek(0)
    return dcmread(fp, force=True, defer_size=HEADER_DEFER_SIZE, stop_before_pixels=True)


def _guess_transfer_syntax(ds: Dataset) -> str:
    implicit, little = ds.original_encoding
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _element(group_elem: tuple[int, int], vr: bytes, value: bytes) -> bytes:
    if vr in (b"OB",):
        return struct.pack("<HH2sHL", *group_elem, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", *group_elem, vr, len(value)) + value


def _padded(text: str, pad: bytes) -> bytes:
    raw = text.encode("ascii", "replace")   # hostile UIDs must not raise here
    return raw + pad if len(raw) % 2 else raw


def encode_file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str,
                     source_ae: str | None = None) -> bytes:
    """The File Meta Information group (PS3.10 7.1), without preamble and ``DICM``.

    Written by hand because it sits on the C-STORE hot path, between the command
    and the first data PDU, where pydicom's general encoder cost a third of a
    millisecond per instance.
    """
    body = b"".join([
        _element((2, 0x0001), b"OB", b"\x00\x01"),
        _element((2, 0x0002), b"UI", _padded(sop_class_uid, b"\x00")),
        _element((2, 0x0003), b"UI", _padded(sop_instance_uid, b"\x00")),
        _element((2, 0x0010), b"UI", _padded(transfer_syntax_uid, b"\x00")),
        _element((2, 0x0012), b"UI", _padded(IMPLEMENTATION_CLASS_UID, b"\x00")),
        _element((2, 0x0013), b"SH", _padded(IMPLEMENTATION_VERSION_NAME, b" ")),
        _element((2, 0x0016), b"AE", _padded(source_ae.strip(), b" ")) if source_ae else b"",
    ])
    return _element((2, 0x0000), b"UL", struct.pack("<L", len(body))) + body


def file_meta_bytes(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str,
                    source_ae: str | None = None) -> bytes:
    """Preamble, ``DICM`` and a File Meta group for a dataset this archive writes."""
    return b"\x00" * 128 + b"DICM" + encode_file_meta(sop_class_uid, sop_instance_uid,
                                                       transfer_syntax_uid, source_ae)


def copy_dataset(src: BinaryIO, offset: int, out, chunk: int = 1 << 20) -> None:
    """Copy the dataset bytes from ``offset`` to the end of ``src`` unchanged."""
    src.seek(offset)
    while data := src.read(chunk):
        out.write(data)
