"""How many millimetres one image pixel spans, and where that figure comes from.

Lengths in the viewer are only as good as their calibration, so the source always
travels with the numbers. The order follows PS3.3 C.8.7.1.1.6 and 10.7.1.3:

1. Pixel Spacing (0028,0030), or the Pixel Measures functional group of an enhanced
   image: spacing in the patient (a CT, or an XA whose modality already corrected it).
2. Imager Pixel Spacing (0018,1164): spacing at the detector. An X-ray projection
   magnifies the anatomy by the Estimated Radiographic Magnification Factor
   (0018,1114), so the spacing at the isocentre is Imager Pixel Spacing / ERMF.
   Without ERMF the figure is the detector's, uncorrected (objects measure too big).
3. Nothing: lengths stay in pixels until the user calibrates on an object of known
   size (a catheter), which the browser does.
"""
from __future__ import annotations

from pydicom.dataset import Dataset

PIXEL_SPACING = "pixel_spacing"
IMAGER_PIXEL_SPACING = "imager_pixel_spacing"


def _pair(value) -> tuple[float, float] | None:
    """A (row, column) spacing in mm from a DS value, or None when absent or unusable."""
    if value is None:
        return None
    values = [value] if isinstance(value, (str, int, float)) else list(value)
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    if len(numbers) == 1:
        numbers = numbers * 2
    if len(numbers) != 2 or not all(0 < n < 1e4 for n in numbers):
        return None
    return numbers[0], numbers[1]


def _functional_group_spacing(header: Dataset):
    # Enhanced multi-frame objects keep Pixel Spacing in the Pixel Measures Sequence,
    # shared by all frames (per-frame spacing that differs is not supported here).
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = header.get(group)
        if not items:
            continue
        measures = items[0].get("PixelMeasuresSequence")
        if measures:
            return measures[0].get("PixelSpacing")
    return None


def _magnification(header: Dataset) -> float | None:
    try:
        value = float(header.get("EstimatedRadiographicMagnificationFactor"))
    except (TypeError, ValueError):
        return None
    return value if 0.1 <= value <= 20 else None


def calibration_of(header: Dataset) -> dict:
    """{source, row_mm, column_mm, magnification, note}; source None when uncalibrated."""
    spacing = _pair(header.get("PixelSpacing")) or _pair(_functional_group_spacing(header))
    if spacing is not None:
        return {"source": PIXEL_SPACING, "row_mm": spacing[0], "column_mm": spacing[1],
                "magnification": None, "note": "Pixel Spacing (0028,0030)"}
    imager = _pair(header.get("ImagerPixelSpacing"))
    if imager is not None:
        factor = _magnification(header)
        if factor is not None:
            return {"source": IMAGER_PIXEL_SPACING, "row_mm": imager[0] / factor,
                    "column_mm": imager[1] / factor, "magnification": factor,
                    "note": f"Imager Pixel Spacing corrected by the Estimated Radiographic "
                            f"Magnification Factor {factor:g}"}
        return {"source": IMAGER_PIXEL_SPACING, "row_mm": imager[0], "column_mm": imager[1],
                "magnification": None,
                "note": "Imager Pixel Spacing uncorrected: spacing at the detector, no "
                        "Estimated Radiographic Magnification Factor"}
    return {"source": None, "row_mm": None, "column_mm": None, "magnification": None,
            "note": "no pixel spacing in the header; calibrate on an object of known size"}
