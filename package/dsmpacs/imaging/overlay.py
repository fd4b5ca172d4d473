"""What the viewer writes over an image, read from the header: patient, study
and series text, C-arm angles, frame time, orientation letters, pixel spacing
and display shutters.

Plain values only (str, float, dict); the viewer formats them. Nothing here
knows HTTP. Sources (PS3.3): Positioner Primary/Secondary Angle (C.8.7.5 and
C.8.19.6, positive primary = LAO, positive secondary = CRAN), Image Orientation
(Patient) (C.7.6.2) or Patient Orientation (C.7.6.1.1.1) for the side letters,
Display Shutter (C.7.6.11).
"""
from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

# Opposite letters of the patient directions (PS3.3 C.7.6.1.1.1).
_OPPOSITE = str.maketrans("LRAPHF", "RLPAFH")


def _text(header: Dataset, keyword: str) -> str | None:
    try:
        value = header.get(keyword)
    except (TypeError, ValueError):       # a value that cannot be decoded
        return None
    if value in (None, ""):
        return None
    return str(value).strip() or None


def _number(header: Dataset, keyword: str) -> float | None:
    try:
        value = header.get(keyword)
        if isinstance(value, (MultiValue, list, tuple)):
            value = value[0] if len(value) else None
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError, IndexError):
        return None


def _numbers(header: Dataset, keyword: str) -> list[float] | None:
    try:
        value = header.get(keyword)
        if value in (None, ""):
            return None
        values = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
        return [float(v) for v in values]
    except (TypeError, ValueError):
        return None


def _letters(vector: list[float]) -> str:
    """Patient direction letters of a unit vector in LPS, major axis first;
    components under 0.25 are left out (an oblique gives e.g. "LA")."""
    axes = [("L", "R", vector[0]), ("P", "A", vector[1]), ("H", "F", vector[2])]
    axes.sort(key=lambda a: -abs(a[2]))
    return "".join(pos if value > 0 else neg for pos, neg, value in axes if abs(value) >= 0.25)


def orientation(header: Dataset) -> dict[str, str] | None:
    """Letters at the left, right, top and bottom edges of the image as stored."""
    cosines = _numbers(header, "ImageOrientationPatient")
    right = bottom = None
    if cosines and len(cosines) == 6:
        right, bottom = _letters(cosines[:3]), _letters(cosines[3:])
    else:
        try:
            values = header.get("PatientOrientation")
            values = [str(v).strip().upper() for v in (values or [])]
        except (TypeError, ValueError):
            values = []
        if len(values) == 2 and all(values):
            right, bottom = values
    if not right or not bottom:
        return None
    return {"right": right, "left": right.translate(_OPPOSITE),
            "bottom": bottom, "top": bottom.translate(_OPPOSITE)}


def shutters(header: Dataset) -> dict | None:
    """Display shutters in image pixel coordinates (x = column, y = row, both
    continuous from 0 at the image's top-left corner): rectangle, circle and
    polygon; what is outside any of them is not shown."""
    try:
        shapes = header.get("ShutterShape")
    except (TypeError, ValueError):
        return None
    if not shapes:
        return None
    shapes = {str(s).strip().upper() for s in (shapes if isinstance(shapes, (MultiValue, list)) else [shapes])}
    result: dict = {}
    if "RECTANGULAR" in shapes:
        edges = [_number(header, k) for k in ("ShutterLeftVerticalEdge", "ShutterRightVerticalEdge",
                                               "ShutterUpperHorizontalEdge", "ShutterLowerHorizontalEdge")]
        if None not in edges:
            # Edges are 1-based pixel numbers and inclusive.
            result["rectangle"] = {"left": edges[0] - 1, "right": edges[1], "top": edges[2] - 1, "bottom": edges[3]}
    if "CIRCULAR" in shapes:
        center, radius = _numbers(header, "CenterOfCircularShutter"), _number(header, "RadiusOfCircularShutter")
        if center and len(center) == 2 and radius:
            result["circle"] = {"x": center[1] - 0.5, "y": center[0] - 0.5, "radius": radius}
    if "POLYGONAL" in shapes:
        vertices = _numbers(header, "VerticesOfThePolygonalShutter")
        if vertices and len(vertices) >= 6:
            result["polygon"] = [[vertices[i + 1] - 0.5, vertices[i] - 0.5] for i in range(0, len(vertices) - 1, 2)]
    return result or None


def frame_time_ms(header: Dataset) -> float | None:
    """The time between frames: Frame Time, else the mean of Frame Time Vector,
    else from Cine Rate or Recommended Display Frame Rate."""
    value = _number(header, "FrameTime")
    if value and value > 0:
        return value
    vector = [v for v in (_numbers(header, "FrameTimeVector") or [])[1:] if v > 0]
    if vector:
        return sum(vector) / len(vector)
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = _number(header, keyword)
        if rate and rate > 0:
            return 1000.0 / rate
    return None


def overlay(header: Dataset) -> dict:
    """The "overlay" dict of the viewer's instance info."""
    spacing = _numbers(header, "PixelSpacing")
    imager = _numbers(header, "ImagerPixelSpacing")
    return {
        "patient_name": _text(header, "PatientName"),
        "patient_id": _text(header, "PatientID"),
        "study_date": _text(header, "StudyDate"),
        "study_time": _text(header, "StudyTime"),
        "series_number": _text(header, "SeriesNumber"),
        "series_description": _text(header, "SeriesDescription"),
        "modality": _text(header, "Modality"),
        "institution": _text(header, "InstitutionName"),
        "positioner_primary_angle": _number(header, "PositionerPrimaryAngle"),
        "positioner_secondary_angle": _number(header, "PositionerSecondaryAngle"),
        "frame_time_ms": frame_time_ms(header),
        "orientation": orientation(header),
        "shutters": shutters(header),
        # [row, column] spacing in mm, for the scale bar when no calibration is given.
        "pixel_spacing": spacing if spacing and len(spacing) == 2 and min(spacing) > 0 else None,
        "imager_pixel_spacing": imager if imager and len(imager) == 2 and min(imager) > 0 else None,
    }
