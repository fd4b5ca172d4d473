"""Grey-level transforms: Modality LUT, VOI window, presets and frame rate.

The order is the standard's (PS3.3 C.11): stored values -> Modality LUT
(rescale slope/intercept or a Modality LUT Sequence) -> VOI window -> display,
with MONOCHROME1 inverted at the end.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut

__all__ = ["Window", "modality", "apply_window", "auto_window", "window_presets", "frame_rate",
           "DEFAULT_FRAME_RATE"]

DEFAULT_FRAME_RATE = 15.0


@dataclass(frozen=True)
class Window:
    center: float
    width: float
    name: str = ""

    def as_dict(self) -> dict:
        return {"center": self.center, "width": self.width, "name": self.name}


def modality(pixels: np.ndarray, header: Dataset) -> np.ndarray:
    """Stored values to modality values (for example Hounsfield units) as float32."""
    if "ModalityLUTSequence" in header or "RescaleSlope" in header or "RescaleIntercept" in header:
        try:
            return np.asarray(apply_modality_lut(pixels, header), dtype=np.float32)
        except (ValueError, TypeError, AttributeError, IndexError):
            pass        # a broken LUT shows the stored values rather than nothing
    return pixels.astype(np.float32, copy=False)


def apply_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """The linear VOI function of PS3.3 C.11.2.1.2.1, to 0..255."""
    width = max(float(width), 1.0)
    low = center - 0.5 - (width - 1) / 2
    scaled = (values - low) / (width - 1) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def auto_window(values: np.ndarray) -> Window:
    """The frame's own range, for images that carry no window."""
    lo, hi = float(np.min(values)), float(np.max(values))
    return Window(center=(lo + hi + 1) / 2, width=max(hi - lo + 1, 1.0), name="auto")


def _values(element) -> list:
    if element is None:
        return []
    value = element.value if hasattr(element, "value") else element
    if value in (None, ""):
        return []
    return list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]


def window_presets(layout_or_header) -> list[Window]:
    """The windows the file offers (Window Center/Width pairs and their explanations)."""
    header = getattr(layout_or_header, "header", layout_or_header)
    centers = _values(header.get("WindowCenter"))
    widths = _values(header.get("WindowWidth"))
    names = [str(n) for n in _values(header.get("WindowCenterWidthExplanation"))]
    presets = []
    for i, (center, width) in enumerate(zip(centers, widths)):
        try:
            c, w = float(center), float(width)
        except (TypeError, ValueError):
            continue
        if w >= 1:
            presets.append(Window(c, w, names[i] if i < len(names) else ""))
    return presets


def frame_rate(layout_or_header) -> float:
    """Frames per second for cine: Cine Rate, Frame Time, Frame Time Vector or
    Recommended Display Frame Rate, whichever the file has first; else 15."""
    header = getattr(layout_or_header, "header", layout_or_header)

    def number(keyword):
        try:
            value = header.get(keyword)
            return float(value) if value not in (None, "") else None
        except (TypeError, ValueError):
            return None

    rate = number("CineRate")
    if not rate:
        frame_time = number("FrameTime")
        rate = 1000.0 / frame_time if frame_time else None
    if not rate:
        vector = [float(v) for v in _values(header.get("FrameTimeVector"))[1:] if float(v) > 0]
        rate = 1000.0 * len(vector) / sum(vector) if vector else None
    if not rate:
        rate = number("RecommendedDisplayFrameRate")
    if not rate or rate <= 0:
        return DEFAULT_FRAME_RATE
    return float(min(max(rate, 0.5), 60.0))
