"""A stored instance's attributes for DICOMweb metadata, without loading bulk data.

``read_metadata`` parses the stored file up to its pixel data with large values
deferred, and reports where each large binary value (and the pixel data) lies
in the file, so a metadata response never reads hundreds of megabytes of pixels
and bulk data can later be streamed straight from the file by offset. Large
text values and sequences are read (they are metadata); only binary VRs
(OB, OD, OF, OL, OV, OW, UN) at the top level of the dataset become bulk data.
Nested binary values stay inline.

A deflated dataset cannot be addressed by offset; it is read whole and its bulk
values are served from memory (rare: deflate is hardly used for images).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset, read_preamble
from pydicom.tag import Tag
from pydicom.uid import UID

from dsmpacs.archive.part10 import LONG_VRS, InvalidDataset, _read_meta
from dsmpacs.archive.validation import skip_encapsulated

BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)
UNDEFINED_LENGTH = 0xFFFFFFFF
DEFAULT_THRESHOLD = 1024


@dataclass(frozen=True)
class BulkValue:
    tag: int
    vr: str
    offset: int                  # of the value in the file
    length: int                  # of the value in bytes
    data: bytes | None = None    # set when the value could not be addressed by offset


@dataclass
class StoredMetadata:
    dataset: Dataset                       # everything but the bulk values
    transfer_syntax_uid: str
    bulk: dict[int, BulkValue] = field(default_factory=dict)   # by tag, pixel data included


def _vr_of(raw: RawDataElement) -> str:
    if raw.VR:
        return str(raw.VR)
    try:
        return dictionary_VR(raw.tag)
    except KeyError:
        return "UN"


def _pixel_element(fp, start: int, implicit: bool, little: bool, bits_allocated: int) -> BulkValue | None:
    """The pixel data element whose header starts at ``start`` (the parse stopped there)."""
    order = "<" if little else ">"
    fp.seek(start)
    head = fp.read(8)
    if len(head) < 8:
        return None
    group, element = struct.unpack(order + "HH", head[:4])
    tag = (group << 16) | element
    if tag not in PIXEL_TAGS:
        return None
    if implicit:
        vr = "OW" if bits_allocated > 8 else "OB"
        length = struct.unpack(order + "L", head[4:8])[0]
    else:
        vr = head[4:6].decode("ascii", "replace")
        if head[4:6] in LONG_VRS:
            length = struct.unpack(order + "L", fp.read(4))[0]
        else:
            length = struct.unpack(order + "H", head[6:8])[0]
    offset = fp.tell()
    if tag == 0x7FE00008:
        vr = "OF"
    elif tag == 0x7FE00009:
        vr = "OD"
    if length == UNDEFINED_LENGTH:
        # Encapsulated: the value runs to its sequence delimiter (items walked, not read).
        fp.seek(offset)
        end = fp.seek(0, 2)
        fp.seek(offset)
        skip_encapsulated(fp, end, little)
        length = fp.tell() - offset
        vr = "OB"
    return BulkValue(tag, vr, offset, length)


def read_metadata(path: Path | str, threshold: int = DEFAULT_THRESHOLD) -> StoredMetadata:
    """The instance's attributes with binary values above ``threshold`` bytes located,
    not loaded. Raises InvalidDataset for a file that cannot be parsed."""
    try:
        return _read(Path(path), threshold)
    except InvalidDataset:
        raise
    except Exception as exc:      # pydicom raises many kinds for a damaged file
        raise InvalidDataset(f"stored file {path} cannot be read: {exc}") from exc


def _read(path: Path, threshold: int) -> StoredMetadata:
    with open(path, "rb") as fp:
        preamble = read_preamble(fp, force=True)
        meta = _read_meta(fp) if preamble is not None else {}
        ts = UID(str(meta.get("TransferSyntaxUID", "") or ""))
        if not (preamble is not None and ts.is_transfer_syntax and not ts.is_deflated):
            return _read_whole(path, threshold)
        implicit, little = ts.is_implicit_VR, ts.is_little_endian
        ds = read_dataset(fp, implicit, little, defer_size=threshold,
                          stop_when=lambda tag, vr, length: tag in PIXEL_TAGS)
        stop = fp.tell()
        bulk: dict[int, BulkValue] = {}
        for tag in list(ds.keys()):
            raw = ds._dict[tag]
            if not isinstance(raw, RawDataElement) or raw.value is not None or raw.length == 0:
                continue
            vr = _vr_of(raw)
            if vr in BULK_VRS:
                bulk[int(tag)] = BulkValue(int(tag), vr, raw.value_tell, raw.length)
                del ds._dict[tag]
            else:                             # a long text or a sequence: metadata, read it
                fp.seek(raw.value_tell)
                ds._dict[tag] = raw._replace(value=fp.read(raw.length))
        bits = ds.get("BitsAllocated", 16)
        pixel = _pixel_element(fp, stop, implicit, little, int(bits) if bits else 16)
        if pixel is not None:
            bulk[pixel.tag] = pixel
    ds.set_original_encoding(implicit, little, ds._character_set)
    return StoredMetadata(ds, str(ts), bulk)


def _read_whole(path: Path, threshold: int) -> StoredMetadata:
    ds = dcmread(path, force=True)
    ts = str(ds.file_meta.get("TransferSyntaxUID", "") or "") if hasattr(ds, "file_meta") else ""
    bulk: dict[int, BulkValue] = {}
    for elem in list(ds):
        if elem.VR in BULK_VRS and elem.value is not None:
            data = bytes(elem.value)
            if len(data) > threshold:
                bulk[int(elem.tag)] = BulkValue(int(elem.tag), str(elem.VR), -1, len(data), data)
                del ds[elem.tag]
    return StoredMetadata(ds, ts, bulk)


def locate_bulk(path: Path | str, tag: int) -> BulkValue | None:
    """Where one top-level bulk value of the stored file lies (threshold 0: any size)."""
    return read_metadata(path, threshold=0).bulk.get(int(Tag(tag)))
