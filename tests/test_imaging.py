"""Frame access by offset and server-side rendering, checked against pydicom's full decode."""
from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from dsmpacs.imaging import frames as fr
from dsmpacs.imaging import lut
from dsmpacs.imaging import render as rd
from dsmpacs.imaging.decode import decode_frame
from tests import factories
from tests.peers import tool

FRAMES = 5


def xa_file(tmp_path: Path, frames: int = FRAMES, size: int = 48, name: str = "xa.dcm") -> Path:
    ds = factories.xa_run(frames=frames, size=size)
    return factories.write(ds, tmp_path / name)


def full_decode(path: Path) -> np.ndarray:
    arr = pydicom.dcmread(path).pixel_array
    return arr if arr.ndim == 3 and pydicom.dcmread(path, stop_before_pixels=True).get("NumberOfFrames", 1) > 1 \
        else arr[None]


def assert_frames_match(path: Path) -> fr.PixelLayout:
    layout = fr.read_layout(path)
    assert layout is not None
    expected = full_decode(path)
    assert expected.shape[0] == layout.number_of_frames
    for i in range(layout.number_of_frames):
        got = decode_frame(layout, fr.read_frame(path, layout, i))
        np.testing.assert_array_equal(got, expected[i], err_msg=f"frame {i}")
    with pytest.raises(fr.FrameNotFound):
        fr.read_frame(path, layout, layout.number_of_frames)
    with pytest.raises(fr.FrameNotFound):
        fr.read_frame(path, layout, -1)
    return layout


def compress_with_pydicom(src: Path, dst: Path, syntax) -> Path:
    ds = pydicom.dcmread(src)
    ds.compress(syntax)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def dcmtk(name: str, args: list[str], src: Path, dst: Path) -> Path:
    subprocess.run([tool(name), *args, str(src), str(dst)], check=True, capture_output=True)
    return dst


def test_native_multiframe_by_offset(tmp_path):
    path = xa_file(tmp_path)
    layout = fr.read_layout(path)
    assert (layout.rows, layout.columns, layout.number_of_frames) == (48, 48, FRAMES)
    assert not layout.encapsulated and layout.pixel_data_length == 48 * 48 * 2 * FRAMES
    assert "PixelData" not in layout.header and layout.header.Modality == "XA"
    raw = path.read_bytes()
    assert raw[layout.pixel_data_offset:layout.pixel_data_offset + 8] == \
        pydicom.dcmread(path).PixelData[:8]
    expected = pydicom.dcmread(path).pixel_array
    for i in range(FRAMES):
        assert fr.read_frame(path, layout, i) == expected[i].astype("<u2").tobytes()
    assert_frames_match(path)


def test_no_pixel_data_gives_none(tmp_path):
    path = factories.write(factories.csa_non_image(payload_size=1000), tmp_path / "csa.dcm")
    assert fr.read_layout(path) is None


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_encapsulated_frames_match_full_decode(tmp_path, syntax):
    path = compress_with_pydicom(xa_file(tmp_path), tmp_path / "c.dcm", syntax)
    layout = assert_frames_match(path)
    assert layout.encapsulated and layout.transfer_syntax_uid == syntax


def test_jpeg_lossless_from_dcmtk(tmp_path):
    path = dcmtk("dcmcjpeg", ["+e1"], xa_file(tmp_path), tmp_path / "jl.dcm")
    layout = assert_frames_match(path)
    assert layout.transfer_syntax_uid == JPEGLosslessSV1


def _jpeg_frames(n: int, size: int = 32) -> tuple[list[bytes], np.ndarray]:
    y, x = np.mgrid[0:size, 0:size]
    pixels = np.stack([((x * 7 + y * 3 + k * 40) % 256).astype(np.uint8) for k in range(n)])
    encoded = []
    for frame in pixels:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=95)
        encoded.append(buf.getvalue())
    return encoded, pixels


def _jpeg_dataset(encoded: list[bytes], pixel_data: bytes, size: int = 32):
    ds = factories.base_dataset(factories.XA, modality="XA")
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.NumberOfFrames = len(encoded)
    ds.PixelData = pixel_data
    ds["PixelData"].VR = "OB"
    ds._jpeg = True
    return ds


@pytest.mark.parametrize("table", ["basic", "none", "extended", "split-fragments"])
def test_jpeg_baseline_offset_tables(tmp_path, table):
    """Every way a frame's fragments can be found: BOT, no table with one fragment
    per frame, the Extended Offset Table, and frames split over several fragments."""
    encoded, _pixels = _jpeg_frames(4)
    if table == "basic":
        data = encapsulate(encoded, has_bot=True)
    elif table == "none":
        data = encapsulate(encoded, has_bot=False)
    elif table == "split-fragments":
        data = encapsulate(encoded, fragments_per_frame=3, has_bot=False)
    if table == "extended":
        data, offsets, lengths = encapsulate_extended(encoded)
    ds = _jpeg_dataset(encoded, data)
    if table == "extended":
        ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = offsets, lengths
    path = factories.write(ds, tmp_path / f"{table}.dcm", JPEGBaseline8Bit)
    layout = fr.read_layout(path)
    for i, frame in enumerate(encoded):
        got = fr.read_frame(path, layout, i)
        # JPEG frames are padded to an even length inside fragments.
        assert got.rstrip(b"\0") == frame.rstrip(b"\0"), i
    assert_frames_match(path)


def test_single_frame_in_several_fragments(tmp_path):
    encoded, pixels = _jpeg_frames(1)
    ds = _jpeg_dataset(encoded, encapsulate(encoded, fragments_per_frame=4))
    del ds.NumberOfFrames
    path = factories.write(ds, tmp_path / "one.dcm", JPEGBaseline8Bit)
    layout = fr.read_layout(path)
    assert layout.number_of_frames == 1
    assert fr.read_frame(path, layout, 0).rstrip(b"\0") == encoded[0].rstrip(b"\0")


def test_one_bit_frames_not_byte_aligned(tmp_path):
    """3x3 1-bit frames are 9 bits each: frames after the first start mid-byte."""
    from pydicom.pixels import pack_bits

    rng = np.random.default_rng(7)
    frames = rng.integers(0, 2, size=(5, 3, 3), dtype=np.uint8)
    ds = factories.base_dataset(factories.SC)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 3
    ds.BitsAllocated = ds.BitsStored = 1
    ds.HighBit, ds.PixelRepresentation, ds.NumberOfFrames = 0, 0, 5
    ds.PixelData = pack_bits(frames)
    path = factories.write(ds, tmp_path / "bits.dcm")
    layout = fr.read_layout(path)
    for i in range(5):
        np.testing.assert_array_equal(decode_frame(layout, fr.read_frame(path, layout, i)), frames[i])


def test_truncated_native_pixel_data_is_reported(tmp_path):
    path = xa_file(tmp_path)
    layout = fr.read_layout(path)
    path.write_bytes(path.read_bytes()[:layout.pixel_data_offset + 100])
    with pytest.raises(fr.PixelDataError):
        fr.read_frame(path, layout, FRAMES - 1)


def test_deflated_file_frames(tmp_path):
    """Deflate hides offsets: frames come from a full read, still one frame at a time to callers."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    path = factories.write(factories.xa_run(frames=3, size=16), tmp_path / "d.dcm",
                           DeflatedExplicitVRLittleEndian)
    layout = assert_frames_match(path)
    assert layout.pixel_data_offset == -1


# --- rendering ------------------------------------------------------------------------


def mono_file(tmp_path: Path, pixels: np.ndarray, name: str = "m.dcm", *, modality: str = "CT",
              photometric: str = "MONOCHROME2", **attrs) -> Path:
    ds = factories.base_dataset(factories.XA if modality == "XA" else factories.CT, modality=modality)
    factories._image(ds, pixels.astype(np.uint16), 12)
    ds.PhotometricInterpretation = photometric
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return factories.write(ds, tmp_path / name)


def png_pixels(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    return np.asarray(image)


def test_window_gives_known_grey_levels(tmp_path):
    # Stored 864, 1064, 1264 with intercept -1024 are -160, 40 and 240 HU.
    pixels = np.array([[864, 1064, 1264, 0]] * 4)
    path = mono_file(tmp_path, pixels, RescaleIntercept=-1024, RescaleSlope=1)
    out = png_pixels(rd.render(path, 0, window=(40, 400)))
    assert out.shape == (4, 4)
    assert list(out[0]) == [0, 128, 255, 0]
    # Without a window and without presets: the frame's own range, min black, max white.
    auto = png_pixels(rd.render(path, 0))
    assert auto[0, 3] == 0 and auto[0, 2] == 255


def test_file_presets_and_explicit_override(tmp_path):
    pixels = np.array([[0, 100, 200, 4000]] * 2)
    path = mono_file(tmp_path, pixels, WindowCenter=[100, 2000], WindowWidth=[200, 4000],
                     WindowCenterWidthExplanation=["NARROW", "WIDE"])
    layout = fr.read_layout(path)
    presets = rd.window_presets(layout)
    assert [(p.center, p.width, p.name) for p in presets] == [(100, 200, "NARROW"), (2000, 4000, "WIDE")]
    assert list(png_pixels(rd.render(path, 0))[0]) == [0, 128, 255, 255]      # first preset
    assert list(png_pixels(rd.render(path, 0, window=(2000, 4000)))[0])[3] == 255
    assert png_pixels(rd.render(path, 0, window=(2000, 4000)))[0, 1] < 20


def test_monochrome1_inverts(tmp_path):
    pixels = np.array([[0, 1000, 2000, 4000]] * 2)
    m2 = png_pixels(rd.render(mono_file(tmp_path, pixels, "a.dcm"), 0, window=(2000, 4000)))
    m1 = png_pixels(rd.render(mono_file(tmp_path, pixels, "b.dcm", photometric="MONOCHROME1"), 0,
                              window=(2000, 4000)))
    np.testing.assert_array_equal(m1, 255 - m2)
    assert m1[0, 0] == 255 and m1[0, 3] == 0


def dsa_run(tmp_path: Path) -> Path:
    """Frame 0 and 1: the same background; frame 2: a 'vessel' of contrast (darker) in rows 4-7."""
    rng = np.random.default_rng(3)
    background = rng.integers(1500, 2500, size=(16, 16))
    contrast = background.copy()
    contrast[4:8, :] = contrast[4:8, :] // 2
    pixels = np.stack([background, background, contrast])
    return mono_file(tmp_path, pixels, "dsa.dcm", modality="XA", CineRate=8,
                     WindowCenter=2048, WindowWidth=4096)


def test_subtracting_identical_frames_is_uniform(tmp_path):
    path = dsa_run(tmp_path)
    flat = png_pixels(rd.render(path, 1, mask_index=0))
    assert flat.min() == flat.max() and 127 <= flat.max() <= 129    # mid grey
    plain = png_pixels(rd.render(path, 1))
    assert plain.std() > 5           # the unsubtracted frame is not flat


def test_subtraction_shows_the_contrast_only(tmp_path):
    path = dsa_run(tmp_path)
    sub = png_pixels(rd.render(path, 2, mask_index=0))
    vessel, rest = sub[4:8], np.concatenate([sub[:4], sub[8:]])
    assert (rest == rest[0, 0]).all() and 127 <= rest[0, 0] <= 129
    assert vessel.max() < 60             # ln(1/2) * 1000 = -693: dark
    rendered = rd.render_image(path, 2, mask_index=0)
    assert rendered.window.center == 0
    # An explicit window applies to the difference in milli-log units.
    wide = png_pixels(rd.render(path, 2, mask_index=0, window=(0, 4000)))
    assert 80 < wide[5, 0] < 127
    with pytest.raises(rd.FrameNotFound):
        rd.render(path, 2, mask_index=3)


def test_frame_rate_and_thumbnail_and_jpeg(tmp_path):
    path = dsa_run(tmp_path)
    assert rd.frame_rate(fr.read_layout(path)) == 8
    assert rd.frame_rate(fr.read_layout(mono_file(tmp_path, np.zeros((2, 4, 4)), "ft.dcm",
                                                  FrameTime=40))) == 25
    assert lut.frame_rate(pydicom.Dataset()) == lut.DEFAULT_FRAME_RATE
    big = mono_file(tmp_path, np.arange(200 * 100).reshape(200, 100) % 4096, "big.dcm")
    thumb = Image.open(io.BytesIO(rd.render(big, 0, max_size=64, fmt="jpeg")))
    assert thumb.format == "JPEG" and thumb.size == (32, 64)
    with pytest.raises(rd.NoPixelData):
        rd.render(factories.write(factories.csa_non_image(payload_size=10), tmp_path / "n.dcm"), 0)


def test_rgb_passthrough(tmp_path):
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    ds = factories.base_dataset(factories.SC)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = rgb.tobytes()
    path = factories.write(ds, tmp_path / "rgb.dcm")
    np.testing.assert_array_equal(png_pixels(rd.render(path, 0)), rgb)


def test_compressed_renders_like_native(tmp_path):
    native = xa_file(tmp_path, frames=3, size=32)
    j2k = compress_with_pydicom(native, tmp_path / "j2k.dcm", JPEG2000Lossless)
    for i in range(3):
        assert rd.render(j2k, i, window=(2000, 3000)) == rd.render(native, i, window=(2000, 3000))
    assert rd.render(j2k, 2, mask_index=0) == rd.render(native, 2, mask_index=0)
