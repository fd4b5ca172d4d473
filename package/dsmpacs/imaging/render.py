"""Render one frame of a stored instance as PNG, JPEG or WebP ("cloud display").

Only the asked frame (and the mask frame for subtraction) is read and decoded.
Grey images go through Modality LUT, window and MONOCHROME1 inversion; colour
images (RGB, YBR converted to RGB, palette colour) are passed through.
Rendering is for display only: the stored file is never changed.
"""
from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from PIL import Image

from dsmpacs.imaging import frame_cache
from dsmpacs.imaging.decode import DecodeError, decode_frame
from dsmpacs.imaging.frames import FrameNotFound, PixelDataError, PixelLayout, read_frame, read_layout
from dsmpacs.imaging.lut import Window, apply_window, auto_window, frame_rate, modality, window_presets
from dsmpacs.imaging.memo import file_key
from dsmpacs.imaging.subtraction import log_subtract, supports_subtraction

__all__ = ["render", "render_image", "Rendered", "RenderError", "NoPixelData", "FrameNotFound",
           "window_presets", "frame_rate", "layout_of", "default_window", "supports_subtraction",
           "FORMATS"]

FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"), "jpg": ("JPEG", "image/jpeg"),
           "webp": ("WEBP", "image/webp")}


class RenderError(ValueError):
    """The frame cannot be shown (undecodable, inconsistent header, bad request)."""


class NoPixelData(RenderError):
    """The instance has no image (a structured report, a CSA Non-Image object...)."""


@dataclass(frozen=True)
class Rendered:
    data: bytes
    media_type: str
    window: Window | None        # the window applied; None for colour images


# --- layout cache: a cine loop renders the same file's frames over and over -------------
_layouts: OrderedDict[tuple, PixelLayout | None] = OrderedDict()
_layouts_lock = threading.Lock()
_LAYOUT_CACHE = 128


def layout_of(path) -> PixelLayout | None:
    key = file_key(path)
    with _layouts_lock:
        if key in _layouts:
            _layouts.move_to_end(key)
            return _layouts[key]
    layout = read_layout(path)
    with _layouts_lock:
        _layouts[key] = layout
        while len(_layouts) > _LAYOUT_CACHE:
            _, gone = _layouts.popitem(last=False)
            _plans.pop(id(gone), None)          # its header plan goes with it (_header_plan)
    return layout


def _require_layout(path) -> PixelLayout:
    try:
        layout = layout_of(path)
    except (OSError, ValueError) as exc:
        raise RenderError(f"cannot read the image header: {exc}") from exc
    if layout is None:
        raise NoPixelData("the instance has no pixel data")
    if layout.rows < 1 or layout.columns < 1:
        raise RenderError("the image has no rows or columns")
    return layout


def _decode(path, layout: PixelLayout, index: int) -> np.ndarray:
    try:
        return frame_cache.read_only(decode_frame(layout, read_frame(path, layout, index)))
    except FrameNotFound:
        raise
    except (DecodeError, PixelDataError, OSError) as exc:
        raise RenderError(str(exc)) from exc


def _pixels(path, layout: PixelLayout, index: int) -> np.ndarray:
    """One decoded frame (read-only), from the frame cache when a request had it."""
    try:
        key = file_key(path) + (index,)
    except OSError as exc:
        raise RenderError(str(exc)) from exc
    return frame_cache.frames.get(key, lambda: _decode(path, layout, index), lambda a: a.nbytes)


def _is_grey(layout: PixelLayout) -> bool:
    return layout.samples_per_pixel == 1 and layout.photometric_interpretation != "PALETTE COLOR"


def _grey_values(path, layout: PixelLayout, index: int) -> np.ndarray:
    pixels = _pixels(path, layout, index)
    if layout.pixel_representation == 0 and layout.bits_stored < layout.bits_allocated:
        pixels = pixels & ((1 << layout.bits_stored) - 1)   # overlay or junk in the unused bits
    return modality(pixels, layout.header)


def default_window(path, frame_index: int = 0, mask_index: int | None = None) -> Window | None:
    """The window render() uses when none is given: the file's first preset, else the
    frame's range; for subtraction the run's one window (dsa.run_window), centred on
    zero. None for colour images."""
    layout = _require_layout(path)
    if not _is_grey(layout):
        return None
    if mask_index is not None:
        from dsmpacs.imaging import dsa  # dsa builds on this module's pixel reading
        return dsa.run_window(path, mask_index)
    presets = window_presets(layout)
    return presets[0] if presets else auto_window(_grey_values(path, layout, frame_index))


def render_image(path, frame_index: int, *, window: tuple[float, float] | Window | None = None,
                 mask_index: int | None = None, fmt: str = "png", max_size: int | None = None,
                 quality: int = 90, shift: tuple[float, float] | None = None,
                 roadmap: str | None = None) -> Rendered:
    """One frame as an encoded image. ``mask_index`` subtracts that frame (moved by
    ``shift`` = (dx, dy) pixels for patient motion) and defaults the window to the run's
    one subtraction window; ``roadmap`` ("min"/"max") shows the minimum or maximum over
    all frames instead of ``frame_index``. ``quality`` (1..100) is for JPEG and WebP.
    A picture drawn before from the same file with the same parameters is handed back
    from imaging/frame_cache.py's ``pictures``."""
    if fmt not in FORMATS:
        raise RenderError(f"unknown image format {fmt!r}")
    if isinstance(window, tuple):
        window = Window(float(window[0]), float(window[1]))
    try:
        key = file_key(path)
    except OSError as exc:
        raise RenderError(f"cannot read the image header: {exc}") from exc
    key += (frame_index, window, mask_index, fmt, max_size, quality, shift, roadmap)
    return frame_cache.pictures.get(key, lambda: _draw(path, frame_index, window, mask_index, fmt,
                                                       max_size, quality, shift, roadmap),
                                    lambda picture: len(picture.data))


def _draw(path, frame_index: int, window: Window | None, mask_index: int | None, fmt: str,
          max_size: int | None, quality: int, shift: tuple[float, float] | None,
          roadmap: str | None) -> Rendered:
    """render_image without the picture cache."""
    layout = _require_layout(path)
    if window is not None and window.width < 1:
        raise RenderError("window width must be at least 1")
    n = layout.number_of_frames
    if not 0 <= frame_index < n:
        raise FrameNotFound(f"frame {frame_index} is outside 0..{n - 1}")
    if mask_index is not None and not 0 <= mask_index < n:
        raise FrameNotFound(f"mask frame {mask_index} is outside 0..{n - 1}")
    used: Window | None = None
    if _is_grey(layout):
        from dsmpacs.imaging import dsa  # dsa builds on this module's pixel reading
        fast = None if roadmap or mask_index is not None else _grey_by_table(path, layout, frame_index, window)
        if fast is not None:
            grey, used = fast
        else:
            if roadmap:
                values = dsa.roadmap(path, roadmap, mask_index, shift)
            else:
                values = _grey_values(path, layout, frame_index)
                if mask_index is not None:
                    values = log_subtract(values, dsa.mask_values(path, layout, mask_index, shift))
            if mask_index is not None:
                used = window or dsa.run_window(path, mask_index)
            else:
                presets = window_presets(layout)
                used = window or (presets[0] if presets else auto_window(values))
            grey = apply_window(values, used.center, used.width)
            if layout.photometric_interpretation == "MONOCHROME1" and mask_index is None:
                grey = 255 - grey       # MONOCHROME1: low values are white
        image = Image.fromarray(grey, mode="L")
    elif roadmap:
        raise RenderError("a road map needs a grey image")
    else:
        image = Image.fromarray(_colour(path, layout, frame_index), mode="RGB")
    if max_size:
        image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    pil_format, media_type = FORMATS[fmt]
    out = io.BytesIO()
    quality = max(1, min(int(quality), 100))
    if pil_format == "JPEG":
        image.save(out, format="JPEG", quality=quality)
    elif pil_format == "WEBP":
        image.save(out, format="WEBP", quality=quality, method=0)   # method 0: fastest encoder
    else:
        image.save(out, format="PNG", compress_level=1)   # speed over size: cine re-requests
    return Rendered(out.getvalue(), media_type, used)


# --- grey frames through one lookup table (imaging/frame_cache.py says why) -----------------
_TABLE_DTYPES = {np.dtype(np.uint8): np.uint8, np.dtype(np.int8): np.uint8,
                 np.dtype(np.uint16): np.uint16, np.dtype(np.int16): np.uint16}


def _modality_key(header) -> tuple | None:
    """What the Modality LUT depends on, or None when it is not a plain rescale."""
    if "ModalityLUTSequence" in header:
        return None
    return (str(header.get("RescaleSlope", "")), str(header.get("RescaleIntercept", "")))


_plans: OrderedDict[int, tuple] = OrderedDict()


def _header_plan(layout: PixelLayout) -> tuple[tuple | None, tuple[Window, ...]]:
    """(_modality_key, window presets) of a layout, read from its header once: every
    frame of a cine asks them of the same cached layout (about 0.07 ms a frame). Keyed
    by the layout's id; the entry holds the layout, so the id is not reused meanwhile,
    and leaves with the layout's own entry in the layout cache (or when 128 are kept)."""
    entry = _plans.get(id(layout))
    if entry is None or entry[0] is not layout:
        entry = (layout, _modality_key(layout.header), tuple(window_presets(layout)))
        with _layouts_lock:
            _plans[id(layout)] = entry
            while len(_plans) > _LAYOUT_CACHE:
                _plans.popitem(last=False)
    return entry[1], entry[2]


def _domain_values(layout: PixelLayout, dtype: np.dtype) -> np.ndarray:
    """The modality values of every bit pattern the frame's dtype can hold, computed
    as _grey_values computes them for a frame."""
    domain = np.arange(1 << (8 * dtype.itemsize), dtype=_TABLE_DTYPES[dtype]).view(dtype)
    if layout.pixel_representation == 0 and layout.bits_stored < layout.bits_allocated:
        domain = domain & ((1 << layout.bits_stored) - 1)
    return modality(domain, layout.header)


def _grey_by_table(path, layout: PixelLayout, index: int,
                   window: Window | None) -> tuple[np.ndarray, Window] | None:
    """(0..255 pixels, window used) through cached tables; None when the frame is not
    integer grey with a plain rescale (the caller then computes per pixel)."""
    mkey, presets = _header_plan(layout)
    if mkey is None:
        return None
    raw = _pixels(path, layout, index)
    if raw.ndim != 2 or raw.dtype not in _TABLE_DTYPES:
        return None
    base = (raw.dtype.str, layout.pixel_representation, layout.bits_stored, layout.bits_allocated, mkey)
    indexes = raw.view(_TABLE_DTYPES[raw.dtype])
    used = window
    if used is None:
        if presets:
            used = presets[0]
        else:
            values = frame_cache.grey_tables.get(("values",) + base, lambda: _domain_values(layout, raw.dtype),
                                                 lambda t: t.nbytes)
            used = auto_window(np.take(values, indexes))
    inverse = layout.photometric_interpretation == "MONOCHROME1"

    def table() -> np.ndarray:
        grey = apply_window(_domain_values(layout, raw.dtype), used.center, used.width)
        return frame_cache.read_only(255 - grey if inverse else grey)
    lut = frame_cache.grey_tables.get(("grey", used.center, used.width, inverse) + base, table,
                                      lambda t: t.nbytes)
    return np.take(lut, indexes), used


def _colour(path, layout: PixelLayout, index: int) -> np.ndarray:
    pixels = _pixels(path, layout, index)
    if layout.photometric_interpretation == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut
        try:
            pixels = apply_color_lut(pixels, layout.header)
        except (ValueError, KeyError, AttributeError) as exc:
            raise RenderError(f"palette colour: {exc}") from exc
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    if pixels.dtype != np.uint8:
        top = float(pixels.max()) or 1.0
        bits = 8 if top <= 255 else 16
        pixels = np.clip(pixels.astype(np.float32) * 255.0 / (2 ** bits - 1), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(pixels[..., :3])


def render(path, frame_index: int, *, window=None, mask_index: int | None = None, fmt: str = "png",
           max_size: int | None = None, quality: int = 90, shift: tuple[float, float] | None = None,
           roadmap: str | None = None) -> bytes:
    """PNG, JPEG or WebP bytes of one frame (0-based): see render_image."""
    return render_image(path, frame_index, window=window, mask_index=mask_index, fmt=fmt,
                        max_size=max_size, quality=quality, shift=shift, roadmap=roadmap).data
