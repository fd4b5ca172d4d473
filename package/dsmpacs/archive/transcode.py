"""Lossless transfer-syntax conversion of one stored instance, for a receiver that
refuses the stored syntax.

The promise is "nothing altered", so:

* The only targets are Explicit and Implicit VR Little Endian. Nothing is ever
  encoded into a compressed syntax, so a conversion cannot lose information:
  compressed pixel data is decoded (by pydicom's decoders and the pylibjpeg,
  pyjpegls and GDCM plugins) into native pixel data equal to what any viewer decodes.
* Besides Pixel Data only what PS3.5 ties to its encoding changes: Photometric
  Interpretation (a YBR_FULL_422 JPEG decodes to YBR_FULL, a JPEG 2000 with a
  component transform to RGB), Planar Configuration, and the Extended Offset
  Table elements, which exist only for encapsulated data. Colour is never
  converted to RGB by us (that would round values).
* Every other element is written from its original bytes while the VR
  encoding stays explicit (pydicom keeps elements it never decoded raw), and
  re-encoded with equal values when it changes to implicit VR. Retired group
  length elements are dropped.
* Memory: the dataset with its (compressed) pixel data, plus one decoded frame
  at a time; the output goes to a file, not to memory.
"""
from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_dataset
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from dsmpacs.archive.part10 import file_meta_bytes

log = logging.getLogger(__name__)

PIXEL_DATA = Tag(0x7FE0, 0x0010)
_TARGETS = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
# Read as-is; their dataset encoding is one of the targets' (or inflates to it).
_NATIVE_SOURCES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)
# Present only alongside encapsulated pixel data (PS3.3 C.7.6.3.1.8).
_ENCAPSULATION_ONLY = ("ExtendedOffsetTable", "ExtendedOffsetTableLengths")
# Lossy JPEG decoders differ by a grey level here and there (IDCT, chroma
# upsampling), so the choice is fixed rather than left to whatever is installed:
# the first of these that can decode the syntax (pylibjpeg: openjpeg and RLE;
# pyjpegls: JPEG-LS; GDCM: the JPEG processes). Lossless syntaxes decode
# identically anywhere.
PREFERRED_PLUGINS = ("pylibjpeg", "pyjpegls", "gdcm")
# Decoders return chroma upsampled to full resolution; natively that is YBR_FULL
# (PS3.3 C.7.6.3.1.2), whatever the compressed stream's interpretation said.
_SUBSAMPLED = {"YBR_FULL_422": "YBR_FULL", "YBR_PARTIAL_420": "YBR_FULL", "YBR_PARTIAL_422": "YBR_FULL"}


def plugin_for(transfer_syntax: str) -> str:
    """The pixel decoding plugin this archive uses for ``transfer_syntax`` ("" = pydicom's own)."""
    from pydicom.pixels import get_decoder

    available = get_decoder(UID(transfer_syntax)).available_plugins
    return next((p for p in PREFERRED_PLUGINS if p in available), "")


class ConversionError(Exception):
    """This instance cannot be converted without loss (or at all) to the target."""


@lru_cache(maxsize=64)
def decoder_available(transfer_syntax: str) -> bool:
    from pydicom.pixels import get_decoder

    try:
        return get_decoder(UID(transfer_syntax)).is_available
    except (NotImplementedError, ValueError):
        return False


def can_convert(source_ts: str, target_ts: str) -> bool:
    """Whether an instance stored in ``source_ts`` can go out losslessly in ``target_ts``."""
    if target_ts not in _TARGETS:
        return False
    if source_ts == target_ts or source_ts in _NATIVE_SOURCES:
        return True
    uid = UID(source_ts)
    # Big endian (retired) would need byte swapping of OW values that pydicom
    # leaves undecoded; unknown or private syntaxes cannot be read at all.
    return uid.is_transfer_syntax and uid.is_compressed and decoder_available(source_ts)


def convert(source: Path, target_ts: str, out: BinaryIO) -> None:
    """Write ``source`` as a Part 10 file in ``target_ts`` to ``out``.

    Raises ConversionError when the conversion is impossible or the decoded pixel
    data does not have the size the image pixel module promises; ``out`` then holds
    a partial file that the caller must discard.
    """
    try:
        ds = dcmread(source, force=True)
    except Exception as exc:   # pydicom raises many kinds for damaged files
        raise ConversionError(f"stored file is not readable: {exc}") from exc
    source_ts = str(ds.file_meta.get("TransferSyntaxUID", "") or "")
    if not can_convert(source_ts, target_ts):
        raise ConversionError(f"cannot convert {UID(source_ts).name or source_ts} to "
                              f"{UID(target_ts).name} without loss")
    implicit = target_ts == ImplicitVRLittleEndian
    out.write(file_meta_bytes(str(ds.SOPClassUID), str(ds.SOPInstanceUID), target_ts))
    fp = DicomFileLike(out)
    fp.is_little_endian = True
    fp.is_implicit_VR = implicit
    try:
        if UID(source_ts).is_compressed and ds.get_item(PIXEL_DATA) is not None:
            _write_decompressed(fp, ds, UID(source_ts), implicit)
        else:
            write_dataset(fp, ds)
    except ConversionError:
        raise
    except Exception as exc:
        raise ConversionError(f"conversion to {UID(target_ts).name} failed: {exc}") from exc


def _part(ds: Dataset, tags) -> Dataset:
    """A dataset of some of ``ds``'s elements, still raw, that writes like the original."""
    part = Dataset({tag: ds.get_item(tag) for tag in tags}, parent_encoding=ds.original_character_set)
    part.set_original_encoding(*ds.original_encoding, ds.original_character_set)
    return part


def _write_decompressed(fp: DicomFileLike, ds: Dataset, source_ts: UID, implicit: bool) -> None:
    from pydicom.pixels import get_decoder

    for item in ds.get("IconImageSequence", []):
        icon = item.get_item(PIXEL_DATA)
        if icon is not None and getattr(icon, "length", 0) == 0xFFFFFFFF:
            raise ConversionError("the icon image is encapsulated too; it cannot be converted")

    rows, columns = int(ds.Rows), int(ds.Columns)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits_allocated = int(ds.BitsAllocated)
    if bits_allocated % 8:
        raise ConversionError(f"Bits Allocated {bits_allocated} cannot hold decoded samples")
    frame_bytes = rows * columns * samples * bits_allocated // 8
    number_of_frames = int(ds.get("NumberOfFrames", 1) or 1)

    # as_rgb=False: keep the decoder's own colour space; converting YBR to RGB rounds.
    decoder = get_decoder(source_ts)
    plugin = plugin_for(source_ts)
    frames = decoder.iter_array(ds, as_rgb=False, decoding_plugin=plugin)
    try:
        first, info = next(frames)
    except StopIteration:
        raise ConversionError("no frame could be decoded") from None
    except Exception as exc:
        raise ConversionError(f"pixel data cannot be decoded: {exc}") from exc

    def frame_data(arr) -> bytes:
        if arr.dtype.itemsize * 8 != bits_allocated or arr.nbytes != frame_bytes:
            raise ConversionError(f"decoded frame has {arr.nbytes} bytes of {arr.dtype}; the image "
                                  f"pixel module needs {frame_bytes} at {bits_allocated} bits")
        return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()

    first_bytes = frame_data(first)
    photometric = str(info.get("photometric_interpretation") or "")
    photometric = _SUBSAMPLED.get(photometric, photometric) if samples == 3 else photometric
    if photometric and photometric != ds.get("PhotometricInterpretation"):
        ds.PhotometricInterpretation = photometric
    if samples > 1:
        planar = int(info.get("planar_configuration", 0) or 0)
        if ds.get("PlanarConfiguration") != planar:
            ds.PlanarConfiguration = planar
    for keyword in _ENCAPSULATION_ONLY:
        if keyword in ds:
            del ds[keyword]

    tags = sorted(ds.keys())
    write_dataset(fp, _part(ds, [t for t in tags if t < PIXEL_DATA]))
    length = frame_bytes * number_of_frames
    fp.write_tag(PIXEL_DATA)
    if not implicit:
        fp.write(b"OB\x00\x00" if bits_allocated <= 8 else b"OW\x00\x00")
    fp.write_UL(length + length % 2)
    fp.write(first_bytes)
    written = 1
    for arr, _ in frames:
        written += 1
        if written > number_of_frames:
            raise ConversionError(f"more frames decoded than Number of Frames ({number_of_frames})")
        fp.write(frame_data(arr))
    if written != number_of_frames:
        raise ConversionError(f"decoded {written} frames, Number of Frames says {number_of_frames}")
    if length % 2:
        fp.write(b"\x00")
    rest = [t for t in tags if t > PIXEL_DATA]
    if rest:
        write_dataset(fp, _part(ds, rest), ds.original_character_set)
