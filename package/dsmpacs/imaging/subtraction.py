"""Digital subtraction angiography: a contrast frame minus a mask frame.

X-ray attenuation is exponential, so the subtraction is done on logarithms:
log(frame) - log(mask) cancels bone and soft tissue whatever their thickness,
leaving the iodine in the vessels. The difference is scaled by 1000
("milli-log units") so that windows are numbers of a familiar size; identical
frames give 0 everywhere, vessels filled with contrast come out negative
(darker than the grey background), as on an angiography console.
"""
from __future__ import annotations

import numpy as np

from dsmpacs.imaging.lut import Window

__all__ = ["SCALE", "log_subtract", "subtraction_window", "supports_subtraction"]

SCALE = 1000.0
MIN_WIDTH = 100.0      # 10 % attenuation change: flat frames stay mid grey, not noise-stretched
_SUBTRACTION_MODALITIES = {"XA", "XRF", "RF"}


def supports_subtraction(header) -> bool:
    return str(header.get("Modality", "")).upper() in _SUBTRACTION_MODALITIES


def log_subtract(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """1000 * (ln frame - ln mask), pixel by pixel, as float32. Values below 1 count as 1
    (the logarithm of a dark pixel would otherwise explode)."""
    if frame.shape != mask.shape:
        raise ValueError(f"mask {mask.shape} and frame {frame.shape} differ in size")
    f = np.log(np.maximum(frame.astype(np.float32), 1.0))
    m = np.log(np.maximum(mask.astype(np.float32), 1.0))
    return (f - m) * SCALE


def subtraction_window(difference: np.ndarray) -> Window:
    """Centred on zero (no change is mid grey), wide enough for the strongest 0.5 %
    of changes either way, so noise does not decide the contrast."""
    spread = float(np.percentile(np.abs(difference), 99.5)) if difference.size else 0.0
    return Window(center=0.0, width=max(2 * spread, MIN_WIDTH), name="subtraction")
