"""Lossless conversion (archive/transcode.py): compressed originals made by dcmtk and by
pydicom's own encoders, decompressed, compared pixel for pixel and element for element."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.pixels import pixel_array
from pydicom.uid import (
    JPEG2000,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from dsmpacs.archive.transcode import ConversionError, can_convert, convert
from tests import factories as f
from tests.peers import dcmtk
from tests.retrieval import decode_like_archive

PIXEL_DATA = 0x7FE00010
ENCODING_TIED = {PIXEL_DATA, 0x00280004, 0x00280006}   # Pixel Data, Photometric, Planar Configuration


def converted(source: Path, target: str, tmp_path: Path) -> Path:
    out = tmp_path / f"{source.stem}-{target}.dcm"
    with open(out, "wb") as fh:
        convert(source, target, fh)
    return out


def raw_elements(path: Path) -> dict[int, tuple]:
    """Top-level elements as (VR, encoded value) without decoding them."""
    ds = dcmread(path)
    out = {}
    for tag in ds.keys():
        elem = ds.get_item(tag)
        out[int(tag)] = (elem.VR, elem.value) if getattr(elem, "is_raw", False) else (elem.VR, ds[tag].value)
    return out


def assert_only_encoding_changed(source: Path, result: Path) -> None:
    before, after = raw_elements(source), raw_elements(result)
    assert set(before) - ENCODING_TIED == set(after) - ENCODING_TIED
    for tag in set(before) - ENCODING_TIED:
        assert before[tag] == after[tag], f"({tag >> 16:04X},{tag & 0xFFFF:04X}) changed"


@pytest.fixture
def xa(tmp_path) -> Path:
    """A 12-bit multi-frame XA run with private tags, uncompressed."""
    ds = f.xa_run(frames=4, size=96)
    block = ds.private_block(0x0019, "SIEMENS TEST", create=True)
    block.add_new(0x10, "LO", "kept as is")
    return f.write(ds, tmp_path / "xa.dcm")


def test_jpeg_lossless_made_by_dcmcjpeg_decompresses_exactly(xa, tmp_path):
    jpeg = tmp_path / "xa-jl.dcm"
    dcmtk("dcmcjpeg", "+e1", xa, jpeg, check=True)       # process 14 SV1, the common lossless JPEG
    assert dcmread(jpeg).file_meta.TransferSyntaxUID == JPEGLosslessSV1
    for target in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        out = converted(jpeg, target, tmp_path)
        ds = dcmread(out)
        assert ds.file_meta.TransferSyntaxUID == target
        assert np.array_equal(ds.pixel_array, dcmread(xa).pixel_array)     # bit for bit the original
        assert ds.NumberOfFrames == 4 and ds.SOPInstanceUID == dcmread(xa).SOPInstanceUID
    assert_only_encoding_changed(jpeg, converted(jpeg, ExplicitVRLittleEndian, tmp_path))


@pytest.mark.parametrize("make", ["dcmcjpls", "dcmcrle", "j2k"])
def test_other_lossless_syntaxes_decompress_exactly(make, xa, tmp_path):
    compressed = tmp_path / f"xa-{make}.dcm"
    if make == "j2k":
        ds = dcmread(xa)
        ds.compress(JPEG2000Lossless)
        ds.save_as(compressed, enforce_file_format=True)
    else:
        dcmtk(make, xa, compressed, check=True)
    expected_ts = {"dcmcjpls": JPEGLSLossless, "dcmcrle": RLELossless, "j2k": JPEG2000Lossless}[make]
    assert dcmread(compressed).file_meta.TransferSyntaxUID == expected_ts
    out = converted(compressed, ExplicitVRLittleEndian, tmp_path)
    assert np.array_equal(dcmread(out).pixel_array, dcmread(xa).pixel_array)
    assert_only_encoding_changed(compressed, out)


def test_jpeg_baseline_gives_the_decoded_pixels(tmp_path):
    path = f.write(f.jpeg_baseline(size=64), tmp_path / "jpeg.dcm")
    out = converted(path, ExplicitVRLittleEndian, tmp_path)
    ds = dcmread(out)
    # lossy JPEG decoders may differ by a grey level: compare with the one the archive uses
    assert np.array_equal(ds.pixel_array, decode_like_archive(path))
    assert ds.LossyImageCompression == "01"         # its history stays true
    assert_only_encoding_changed(path, out)


def test_colour_jpeg_keeps_ycbcr_values(tmp_path):
    """YBR_FULL_422 JPEG decodes to YBR_FULL (PS3.5 8.2.1); no rounding through RGB."""
    from PIL import Image

    y, x = np.mgrid[0:48, 0:64]
    rgb = np.stack([(x * 4) % 256, (y * 5) % 256, ((x + y) * 3) % 256], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="JPEG", quality=95, subsampling=1)   # 4:2:2
    ds = f.base_dataset(f.SC)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    path = f.write(ds, tmp_path / "colour.dcm", JPEGBaseline8Bit)
    out = converted(path, ExplicitVRLittleEndian, tmp_path)
    result = dcmread(out)
    assert result.PhotometricInterpretation == "YBR_FULL"
    assert result.PlanarConfiguration == 0
    assert np.array_equal(pixel_array(out, as_rgb=False),
                          decode_like_archive(path, as_rgb=False))
    assert_only_encoding_changed(path, out)


def test_uncompressed_and_private_tags_survive_implicit_to_explicit(tmp_path, xa):
    implicit = tmp_path / "xa-implicit.dcm"
    ds = dcmread(xa)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(implicit, implicit_vr=True, little_endian=True, enforce_file_format=True)
    out = converted(implicit, ExplicitVRLittleEndian, tmp_path)
    ds = dcmread(out)
    assert np.array_equal(ds.pixel_array, dcmread(xa).pixel_array)
    # an unknown private element's VR cannot be known from implicit VR: UN, same bytes
    block = ds.private_block(0x0019, "SIEMENS TEST")
    assert block[0x10].VR == "UN" and block[0x10].value == b"kept as is"


def test_refused_conversions(tmp_path, xa):
    assert not can_convert(ExplicitVRBigEndian, ExplicitVRLittleEndian)      # would need byte swapping
    assert not can_convert(ExplicitVRLittleEndian, JPEG2000)                  # never compress
    assert not can_convert("1.2.3.4.5.6", ExplicitVRLittleEndian)             # unknown syntax
    assert can_convert(JPEGLosslessSV1, ImplicitVRLittleEndian)
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"\x00" * 200)
    with pytest.raises(ConversionError):
        convert(garbage, ExplicitVRLittleEndian, io.BytesIO())


def test_truncated_pixel_data_is_refused_not_sent(tmp_path, xa):
    """A frame that does not decode to the size the image pixel module promises must
    fail the conversion rather than produce a plausible but wrong image."""
    ds = dcmread(xa)
    ds.compress(RLELossless)
    ds.NumberOfFrames = 5                  # one frame more than encoded
    path = tmp_path / "lying.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ConversionError):
        convert(path, ExplicitVRLittleEndian, io.BytesIO())
