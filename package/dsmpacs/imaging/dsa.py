"""Whole-run DSA: the frame of peak contrast, one subtraction window for a run, the
mask's sub-pixel shift and the road map (peak opacification, minimum or maximum over
time).

A per-frame window makes a subtracted cine pump its contrast as the bolus comes and
goes; the run window is computed once from a sample of the run's frames so every
frame is shown with the same one. Everything that reads more than one frame is done
once per file and kept in a bounded cache keyed on (path, size, mtime), as
render.layout_of keys its headers: a cine loop asks for the same run over and over,
and a replaced file gets a new key.
"""
from __future__ import annotations

import math

import numpy as np

from dsmpacs.imaging.frames import FrameNotFound
from dsmpacs.imaging.lut import Window
from dsmpacs.imaging.memo import Memo, file_key
from dsmpacs.imaging.render import RenderError, _grey_values, _is_grey, _require_layout
from dsmpacs.imaging.subtraction import log_subtract, subtraction_window, supports_subtraction

__all__ = ["peak_frame", "run_window", "mask_values", "roadmap", "shift_image", "parse_shift",
           "MAX_SHIFT", "ROADMAP_MODES"]

MAX_SHIFT = 32.0             # pixels: patient motion, not a different image
ROADMAP_MODES = ("min", "max")
_PEAK_SAMPLES = 48           # frames scored when looking for the peak (then refined locally)
_PEAK_GRID = 128             # the peak search works on about 128x128 samples per frame
_WINDOW_SAMPLES = 32         # frames whose differences make the run window
_WINDOW_GRID = 256
_SMALL_ITEMS = 512           # peak frames and windows are a few bytes each
_ROADMAP_BYTES = 192 * 2**20  # road maps are whole float32 images


_peaks = Memo(_SMALL_ITEMS)
_windows = Memo(_SMALL_ITEMS)
_roadmaps = Memo(64, _ROADMAP_BYTES)


def _stride(shape: tuple[int, ...], grid: int) -> int:
    return max(1, math.ceil(max(shape[:2]) / grid))


def _readable(path, layout, index: int) -> np.ndarray | None:
    """A frame's values, or None when that one frame cannot be read or decoded: one
    damaged frame must not cost the whole run its window, peak or road map."""
    try:
        return _grey_values(path, layout, index)
    except (RenderError, FrameNotFound):
        return None


def _frames_of_run(path):
    layout = _require_layout(path)
    if not _is_grey(layout):
        raise RenderError("subtraction and road maps need a grey image")
    return layout


def peak_frame(path) -> int:
    """0-based frame of peak contrast. For an XA/XRF run: the frame whose log difference
    from frame 0 has the largest 99th percentile of absolute change, scored on a coarse
    grid over a sample of the frames and then refined around the best one. For any other
    multi-frame image: the middle frame. Single frames: 0."""
    layout = _require_layout(path)
    n = layout.number_of_frames
    if n <= 1:
        return 0
    if not (_is_grey(layout) and supports_subtraction(layout.header)):
        return n // 2
    return _peaks.get(file_key(path), lambda: _find_peak(path, layout, n))


def _find_peak(path, layout, n: int) -> int:
    first = _grey_values(path, layout, 0)
    s = _stride(first.shape, _PEAK_GRID)
    mask = first[::s, ::s]
    scores: dict[int, float] = {}

    def score(i: int) -> float:
        if i not in scores:
            values = _readable(path, layout, i)
            scores[i] = -1.0 if values is None else float(
                np.percentile(np.abs(log_subtract(values[::s, ::s], mask)), 99))
        return scores[i]

    step = max(1, math.ceil((n - 1) / _PEAK_SAMPLES))
    best = max(range(1, n, step), key=score)
    if step > 1:      # the sample may have stepped over the true peak: look between its neighbours
        best = max(range(max(1, best - step + 1), min(n, best + step)), key=score)
    return best


def run_window(path, mask_index: int) -> Window:
    """One subtraction window for the whole run against ``mask_index``: centred on zero,
    as wide as the strongest 0.5 % of changes over every k-th frame (on a grid of about
    256x256 samples, not smoothed, so the percentile is that of the full frames)."""
    layout = _frames_of_run(path)
    n = layout.number_of_frames
    if not 0 <= mask_index < n:
        raise FrameNotFound(f"mask frame {mask_index} is outside 0..{n - 1}")
    return _windows.get((*file_key(path), mask_index), lambda: _run_window(path, layout, n, mask_index))


def _run_window(path, layout, n: int, mask_index: int) -> Window:
    mask = _grey_values(path, layout, mask_index)
    s = _stride(mask.shape, _WINDOW_GRID)
    mask = mask[::s, ::s]
    step = max(1, math.ceil(n / _WINDOW_SAMPLES))
    sample = [i for i in range(0, n, step) if i != mask_index] or [mask_index]
    diffs = [log_subtract(values[::s, ::s], mask).ravel()
             for values in (_readable(path, layout, i) for i in sample) if values is not None]
    return subtraction_window(np.concatenate(diffs) if diffs else np.zeros(0, np.float32))


def parse_shift(text: str) -> tuple[float, float]:
    """"dx,dy" in pixels (x along columns, y along rows) -> a bounded float pair."""
    try:
        dx, dy = (float(part) for part in text.split(","))
    except ValueError as exc:
        raise ValueError("shift must be two numbers, dx,dy") from exc
    if not (math.isfinite(dx) and math.isfinite(dy)) or abs(dx) > MAX_SHIFT or abs(dy) > MAX_SHIFT:
        raise ValueError(f"shift must be within ±{MAX_SHIFT:g} pixels")
    return dx, dy


def shift_image(values: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``values`` moved by (dx, dy) pixels, bilinear, edges repeated:
    out[y, x] = values[y - dy, x - dx] (scipy.ndimage.shift's convention, order 1)."""
    if dx == 0 and dy == 0:
        return values
    rows, columns = values.shape[:2]

    def taps(count: int, d: float):
        pos = np.arange(count, dtype=np.float64) - d
        low = np.floor(pos)
        frac = (pos - low).astype(np.float32)
        low = low.astype(np.int64)
        return np.clip(low, 0, count - 1), np.clip(low + 1, 0, count - 1), frac

    y0, y1, fy = taps(rows, dy)
    x0, x1, fx = taps(columns, dx)
    fy = fy[:, None]
    top = values[y0][:, x0] * (1 - fx) + values[y0][:, x1] * fx
    bottom = values[y1][:, x0] * (1 - fx) + values[y1][:, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def mask_values(path, layout, mask_index: int, shift: tuple[float, float] | None = None) -> np.ndarray:
    """The mask frame's modality values, moved by ``shift`` for patient motion."""
    values = _grey_values(path, layout, mask_index)
    return shift_image(values, *shift) if shift else values


def roadmap(path, mode: str, mask_index: int | None = None,
            shift: tuple[float, float] | None = None) -> np.ndarray:
    """The minimum ("min") or maximum ("max") over all frames of the run, pixel by pixel,
    of the modality values or, with a mask, of the subtracted values: the vessels at
    their fullest opacification in one image. Computed once per (file, mode, mask,
    shift) and cached within a memory bound."""
    if mode not in ROADMAP_MODES:
        raise RenderError(f"roadmap must be one of {', '.join(ROADMAP_MODES)}")
    layout = _frames_of_run(path)
    n = layout.number_of_frames
    if mask_index is not None and not 0 <= mask_index < n:
        raise FrameNotFound(f"mask frame {mask_index} is outside 0..{n - 1}")
    key = (*file_key(path), mode, mask_index, tuple(shift) if shift else None)
    return _roadmaps.get(key, lambda: _roadmap(path, layout, n, mode, mask_index, shift),
                         size=lambda a: a.nbytes)


def _roadmap(path, layout, n: int, mode: str, mask_index, shift) -> np.ndarray:
    reduce = np.minimum if mode == "min" else np.maximum
    mask = mask_values(path, layout, mask_index, shift) if mask_index is not None else None
    result = None
    for i in range(n):
        values = _readable(path, layout, i)
        if values is None:
            continue
        if mask is not None:
            values = log_subtract(values, mask)
        result = values.astype(np.float32, copy=True) if result is None else reduce(result, values, out=result)
    if result is None:
        raise RenderError("no frame of the run could be decoded")
    result.flags.writeable = False      # shared between requests
    return result
