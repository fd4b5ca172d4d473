"""Statistics of an elliptical region of interest in modality values (Hounsfield units
for CT, the stored values through the Modality LUT otherwise).

The browser only has the rendered 8-bit image, so mean and standard deviation are
computed here from the decoded frame. The ellipse is given in image pixel
coordinates (continuous, 0..columns, 0..rows), axis-aligned; a pixel belongs to it
when its centre (x + 0.5, y + 0.5) lies inside.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dsmpacs.imaging.decode import DecodeError, decode_frame
from dsmpacs.imaging.frames import FrameNotFound, PixelDataError, read_frame
from dsmpacs.imaging.lut import modality
from dsmpacs.imaging.render import RenderError, _require_layout

__all__ = ["FrameNotFound", "RoiStats", "ellipse_mask", "ellipse_stats", "stats"]


@dataclass(frozen=True)
class RoiStats:
    pixels: int
    mean: float | None
    sd: float | None
    min: float | None
    max: float | None

    def as_dict(self) -> dict:
        return {"pixels": self.pixels, "mean": self.mean, "sd": self.sd, "min": self.min, "max": self.max}


def ellipse_mask(rows: int, columns: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Boolean rows x columns mask of the pixels whose centres fall in the ellipse."""
    if rx <= 0 or ry <= 0:
        return np.zeros((rows, columns), dtype=bool)
    y, x = np.ogrid[0:rows, 0:columns]
    return ((x + 0.5 - cx) / rx) ** 2 + ((y + 0.5 - cy) / ry) ** 2 <= 1.0


def stats(values: np.ndarray, mask: np.ndarray) -> RoiStats:
    inside = values[mask].astype(np.float64)
    if inside.size == 0:
        return RoiStats(0, None, None, None, None)
    # Population SD over the region, as OHIF and most workstations report it.
    return RoiStats(int(inside.size), float(inside.mean()), float(inside.std()),
                    float(inside.min()), float(inside.max()))


def ellipse_stats(path, frame_index: int, cx: float, cy: float, rx: float, ry: float) -> RoiStats:
    """Mean, SD, min and max of the modality values inside the ellipse on one frame."""
    layout = _require_layout(path)
    if layout.samples_per_pixel != 1 or layout.photometric_interpretation == "PALETTE COLOR":
        raise RenderError("region statistics need a greyscale image")
    if not all(math.isfinite(v) for v in (cx, cy, rx, ry)):
        raise ValueError("the ellipse must be finite")
    try:
        pixels = decode_frame(layout, read_frame(path, layout, frame_index))
    except (DecodeError, PixelDataError, OSError) as exc:
        raise RenderError(str(exc)) from exc
    if layout.pixel_representation == 0 and layout.bits_stored < layout.bits_allocated:
        pixels = pixels & ((1 << layout.bits_stored) - 1)   # overlay bits are not values
    values = modality(pixels, layout.header)
    return stats(values, ellipse_mask(layout.rows, layout.columns, cx, cy, rx, ry))
