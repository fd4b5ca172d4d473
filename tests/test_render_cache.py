"""Rendering through cached frames and lookup tables (imaging/frame_cache.py) gives the
same pixels as the per-pixel arithmetic, and a replaced file is never shown stale."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from dsmpacs.imaging import frame_cache, render
from dsmpacs.imaging.lut import apply_window, auto_window, window_presets
from dsmpacs.imaging.memo import Memo
from tests import factories as f


def reference(path, frame: int, window=None) -> np.ndarray:
    """The per-pixel chain render() used before the tables: the expected output."""
    layout = render._require_layout(path)
    values = render._grey_values(path, layout, frame)
    presets = window_presets(layout)
    used = window or (presets[0] if presets else auto_window(values))
    grey = apply_window(values, used.center, used.width)
    return 255 - grey if layout.photometric_interpretation == "MONOCHROME1" else grey


def png_pixels(path, frame: int, window=None) -> np.ndarray:
    data = render.render(path, frame, fmt="png", window=window)
    return np.asarray(Image.open(io.BytesIO(data)))


def _ct(signed: bool, mono1: bool = False, window: bool = True):
    ds = f.ct_slice(size=64)
    if signed:
        pixels = f._rng.integers(-2000, 2000, size=(64, 64), dtype=np.int16)
        ds.PixelRepresentation = 1
        ds.PixelData = pixels.astype("<i2").tobytes()
    if mono1:
        ds.PhotometricInterpretation = "MONOCHROME1"
    if window:
        ds.WindowCenter, ds.WindowWidth = 40, 400
    else:
        for keyword in ("WindowCenter", "WindowWidth"):
            if keyword in ds:
                delattr(ds, keyword)
    return ds


@pytest.mark.parametrize("make", [
    lambda: f.xa_run(frames=3, size=64),                      # 12 of 16 bits, file window
    lambda: _ct(signed=False),                                # rescale intercept -1024
    lambda: _ct(signed=True),                                 # signed 16-bit
    lambda: _ct(signed=True, mono1=True),                     # inverted
    lambda: _ct(signed=False, window=False),                  # no preset: the frame's range
    lambda: f.secondary_capture(size=64),                     # 8 bits
], ids=["xa12", "ct", "ct-signed", "mono1", "auto-window", "sc8"])
def test_table_path_matches_per_pixel(tmp_path, make):
    frame_cache.frames.clear()
    frame_cache.grey_tables.clear()
    path = f.write(make(), tmp_path / "image.dcm")
    frames = render.layout_of(path).number_of_frames
    for frame in range(frames):
        assert render._grey_by_table(path, render._require_layout(path), frame, None) is not None
        assert np.array_equal(png_pixels(path, frame), reference(path, frame))
        window = render.Window(100.0, 350.0)
        assert np.array_equal(png_pixels(path, frame, window), reference(path, frame, window))


def test_cached_frames_are_read_only_and_reused(tmp_path):
    frame_cache.frames.clear()
    path = f.write(f.xa_run(frames=2, size=32), tmp_path / "xa.dcm")
    layout = render._require_layout(path)
    first = render._pixels(path, layout, 1)
    assert render._pixels(path, layout, 1) is first
    with pytest.raises(ValueError):
        first[0, 0] = 1


def test_a_replaced_file_is_rendered_anew(tmp_path):
    frame_cache.frames.clear()
    path = tmp_path / "xa.dcm"
    ds = f.xa_run(frames=2, size=32)
    f.write(ds, path)
    before = png_pixels(path, 0)
    ds.PixelData = (np.full((2, 32, 32), 4095, dtype="<u2")).tobytes()
    f.write(ds, path)
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))   # even within one mtime tick
    after = png_pixels(path, 0)
    assert not np.array_equal(before, after)
    assert np.array_equal(after, reference(path, 0))
    assert (after == 255).all()


def test_a_picture_is_drawn_once_per_file_and_parameters(tmp_path, monkeypatch):
    """frame_cache.pictures: the same frame with the same parameters is encoded once; any
    other parameter, or a replaced file, is drawn anew, and a kept picture is the bytes
    a fresh drawing gives."""
    frame_cache.pictures.clear()
    path = f.write(f.xa_run(frames=2, size=32), tmp_path / "xa.dcm")
    draws = []
    real_draw = render._draw
    monkeypatch.setattr(render, "_draw", lambda *a: draws.append(a[1:]) or real_draw(*a))
    first = render.render_image(path, 1, fmt="jpeg", window=(1000, 400))
    assert render.render_image(path, 1, fmt="jpeg", window=render.Window(1000.0, 400.0)) is first
    assert len(draws) == 1
    assert first.data == real_draw(path, 1, render.Window(1000.0, 400.0), None, "jpeg", None, 90,
                                   None, None).data
    for other in ({"window": (1000, 401)}, {"quality": 80}, {"max_size": 16}, {"fmt": "png"}):
        render.render_image(path, 1, **({"fmt": "jpeg", "window": (1000, 400)} | other))
    render.render_image(path, 0, fmt="jpeg", window=(1000, 400))
    assert len(draws) == 6
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert render.render_image(path, 1, fmt="jpeg", window=(1000, 400)) is not first
    assert len(draws) == 7
    with pytest.raises(render.FrameNotFound):          # a refusal is not kept: asked again, it is drawn again
        render.render_image(path, 5, fmt="jpeg")
    with pytest.raises(render.FrameNotFound):
        render.render_image(path, 5, fmt="jpeg")
    assert len(draws) == 9


def test_a_file_s_presets_are_read_once_and_follow_a_replaced_file(tmp_path, monkeypatch):
    """render._header_plan: the Modality LUT key and the window presets come from the
    header once per cached layout, not once per frame; a replaced file is a new layout."""
    path = tmp_path / "xa.dcm"
    ds = f.xa_run(frames=3, size=32)
    ds.WindowCenter, ds.WindowWidth = 1000, 400
    f.write(ds, path)
    reads = []
    monkeypatch.setattr(render, "window_presets", lambda layout: reads.append(1) or window_presets(layout))
    for frame in range(3):
        assert render.render_image(path, frame, fmt="png").window == render.Window(1000.0, 400.0)
    assert len(reads) == 1
    ds.WindowCenter = 2000
    f.write(ds, path)
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert render.render_image(path, 0, fmt="png").window == render.Window(2000.0, 400.0)


def test_byte_budget_evicts_oldest():
    cache = Memo(max_bytes=100)
    for i in range(5):
        cache.get((i,), lambda: b"x" * 40, len)
    assert len(cache) == 2
    assert cache.get((4,), lambda: b"new", len) == b"x" * 40      # newest kept
    assert cache.get((0,), lambda: b"new", len) == b"new"         # oldest gone
