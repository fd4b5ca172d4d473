"""A Grayscale Softcopy Presentation State (PS3.3 A.33.1) from a user's annotations.

Each annotation becomes graphic objects in PIXEL units on the frame it was drawn on
(PS3.3 C.10.5: the top-left corner of the first pixel is 0.0\\0.0, which is the
viewer's image coordinate system too), with its label as a text object anchored at
its end. Lines and angles are POLYLINEs, an ellipse ROI an ELLIPSE (major axis
end points, then minor axis end points), an arrow a POLYLINE with its head drawn as
two short strokes, a text a TEXT object. The window the user read with becomes the
Softcopy VOI LUT, the Presentation LUT is IDENTITY, and the Displayed Area is the
whole image, scaled to fit.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dsmpacs.archive.annotations import Mark
from dsmpacs.archive.derived import SourceImage, common_header

GSPS = "1.2.840.10008.5.1.4.1.1.11.1"
LAYER = "MEASUREMENTS"


def _image_reference(source: SourceImage, frames: list[int] | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.sop_class
    item.ReferencedSOPInstanceUID = source.sop
    if frames is not None and source.frames > 1:
        item.ReferencedFrameNumber = [f + 1 for f in frames] if len(frames) > 1 else frames[0] + 1
    return item


def _polyline(points: list[list[float]], closed: bool = False) -> Dataset:
    if closed:
        points = points + [points[0]]
    g = Dataset()
    g.GraphicAnnotationUnits = "PIXEL"
    g.GraphicDimensions = 2
    g.NumberOfGraphicPoints = len(points)
    g.GraphicData = [float(v) for p in points for v in p]
    g.GraphicType = "POLYLINE"
    g.GraphicFilled = "N"
    return g


def _ellipse(corner_a: list[float], corner_b: list[float]) -> Dataset:
    cx, cy = (corner_a[0] + corner_b[0]) / 2, (corner_a[1] + corner_b[1]) / 2
    rx, ry = abs(corner_b[0] - corner_a[0]) / 2, abs(corner_b[1] - corner_a[1]) / 2
    horizontal = [[cx - rx, cy], [cx + rx, cy]]
    vertical = [[cx, cy - ry], [cx, cy + ry]]
    g = _polyline(horizontal + vertical if rx >= ry else vertical + horizontal)
    g.GraphicType = "ELLIPSE"
    return g


def _arrow_head(tail: list[float], head: list[float]) -> list[Dataset]:
    length = math.dist(tail, head) or 1.0
    size = min(12.0, length / 3)
    ux, uy = (tail[0] - head[0]) / length, (tail[1] - head[1]) / length
    strokes = []
    for turn in (math.radians(25), -math.radians(25)):
        bx = ux * math.cos(turn) - uy * math.sin(turn)
        by = ux * math.sin(turn) + uy * math.cos(turn)
        strokes.append(_polyline([head, [head[0] + bx * size, head[1] + by * size]]))
    return strokes


def _text(value: str, anchor: list[float]) -> Dataset:
    t = Dataset()
    t.UnformattedTextValue = value[:1024]
    t.AnchorPointAnnotationUnits = "PIXEL"
    t.AnchorPoint = [float(anchor[0]), float(anchor[1])]
    t.AnchorPointVisibility = "N"
    return t


def graphics_of(mark: Mark) -> tuple[list[Dataset], list[Dataset]]:
    """(graphic objects, text objects) for one annotation."""
    p = mark.points
    graphics: list[Dataset] = []
    if mark.kind in ("length", "calibrate"):
        graphics = [_polyline(p)]
    elif mark.kind == "angle":
        graphics = [_polyline(p)]           # arm, vertex, arm
    elif mark.kind == "stenosis":
        graphics = [_polyline(p[0:2]), _polyline(p[2:4])]
    elif mark.kind == "ellipse":
        graphics = [_ellipse(p[0], p[1])]
    elif mark.kind == "arrow":
        graphics = [_polyline(p)] + _arrow_head(p[0], p[1])
    texts = [_text(mark.label, p[-1])] if mark.label else []
    return graphics, texts


def build(source_marks: list[tuple[SourceImage, int, list[Mark]]], *, window: tuple[float, float] | None,
          creator: str, series_number: int, label: str = "ANNOTATIONS",
          description: str = "Measurements", now: datetime | None = None) -> Dataset:
    """The GSPS for ``source_marks``: (image, frame counted from 0, annotations) per
    annotated frame, all of one study. ``window`` = (centre, width) or None."""
    if not source_marks:
        raise ValueError("nothing to save")
    now = now or datetime.now(timezone.utc)
    first = source_marks[0][0]
    ds = common_header(first, GSPS, "PR", description, series_number, now)
    # Presentation State Identification
    ds.PresentationCreationDate = ds.InstanceCreationDate
    ds.PresentationCreationTime = ds.InstanceCreationTime
    ds.ContentLabel = "".join(c if c.isalnum() else "_" for c in label.upper())[:16] or "ANNOTATIONS"
    ds.ContentDescription = description[:64]
    ds.ContentCreatorName = creator[:64]

    images: dict[str, tuple[SourceImage, list[int]]] = {}
    for source, frame, _ in source_marks:
        images.setdefault(source.sop, (source, []))[1].append(frame)

    # Presentation State Relationship: every referenced image, by series.
    by_series: dict[str, list[Dataset]] = {}
    for source, frames in images.values():
        by_series.setdefault(source.series, []).append(_image_reference(source, sorted(set(frames))))
    ds.ReferencedSeriesSequence = Sequence()
    for series, refs in by_series.items():
        item = Dataset()
        item.SeriesInstanceUID = series
        item.ReferencedImageSequence = Sequence(refs)
        ds.ReferencedSeriesSequence.append(item)

    # Displayed Area: each image whole, scaled to fit.
    ds.DisplayedAreaSelectionSequence = Sequence()
    for source, frames in images.values():
        area = Dataset()
        area.ReferencedImageSequence = Sequence([_image_reference(source, sorted(set(frames)))])
        area.DisplayedAreaTopLeftHandCorner = [1, 1]
        area.DisplayedAreaBottomRightHandCorner = [max(1, source.columns), max(1, source.rows)]
        area.PresentationSizeMode = "SCALE TO FIT"
        area.PresentationPixelAspectRatio = [1, 1]
        ds.DisplayedAreaSelectionSequence.append(area)

    # Graphic Annotation, one item per annotated frame; Graphic Layer.
    ds.GraphicAnnotationSequence = Sequence()
    for source, frame, marks in source_marks:
        graphics: list[Dataset] = []
        texts: list[Dataset] = []
        for mark in marks:
            g, t = graphics_of(mark)
            graphics += g
            texts += t
        if not graphics and not texts:
            continue
        item = Dataset()
        item.ReferencedImageSequence = Sequence([_image_reference(source, [frame])])
        item.GraphicLayer = LAYER
        if graphics:
            item.GraphicObjectSequence = Sequence(graphics)
        if texts:
            item.TextObjectSequence = Sequence(texts)
        ds.GraphicAnnotationSequence.append(item)
    layer = Dataset()
    layer.GraphicLayer = LAYER
    layer.GraphicLayerOrder = 1
    layer.GraphicLayerDescription = "Measurements and annotations"
    ds.GraphicLayerSequence = Sequence([layer])

    # Modality LUT as the images have it (CT), so the VOI window is in the same units.
    slope, intercept = first.header.get("RescaleSlope"), first.header.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.RescaleType = "HU" if first.header.get("Modality") == "CT" else "US"

    if window is not None:
        voi = Dataset()
        voi.ReferencedImageSequence = Sequence([_image_reference(s, sorted(set(f)))
                                                for s, f in images.values()])
        voi.WindowCenter = float(window[0])
        voi.WindowWidth = max(1.0, float(window[1]))
        ds.SoftcopyVOILUTSequence = Sequence([voi])
    ds.PresentationLUTShape = "IDENTITY"
    return ds


def marks_from(ds: Dataset, study: str) -> list[Mark]:
    """The annotations a GSPS carries, back as Marks for the viewer (read only):
    polylines as lengths or angles, ellipses, and texts. Enough to show what another
    viewer (or this one) saved in the study; the exact tool is not recorded in GSPS."""
    refs: dict[str, str] = {}
    for series in ds.get("ReferencedSeriesSequence", []):
        for image in series.get("ReferencedImageSequence", []):
            refs[str(image.ReferencedSOPInstanceUID)] = str(series.SeriesInstanceUID)
    out: list[Mark] = []
    for item in ds.get("GraphicAnnotationSequence", []):
        for image in item.get("ReferencedImageSequence", []):
            sop = str(image.ReferencedSOPInstanceUID)
            frames = _frames(image.get("ReferencedFrameNumber"))
            for frame in frames:
                out += _marks_of_item(item, refs.get(sop, ""), sop, frame)
    return out


def _frames(value) -> list[int]:
    """0-based frames of a Referenced Frame Number (IS, one or many; absent: the first)."""
    if value is None or value == "":
        return [0]
    values = [value] if isinstance(value, (int, str)) else list(value)
    return [int(v) - 1 for v in values]


def _points(g: Dataset) -> list[list[float]]:
    data = [float(v) for v in g.GraphicData]
    return [[data[i], data[i + 1]] for i in range(0, len(data) - 1, 2)]


def _marks_of_item(item: Dataset, series: str, sop: str, frame: int) -> list[Mark]:
    out: list[Mark] = []
    for g in item.get("GraphicObjectSequence", []):
        if g.get("GraphicAnnotationUnits") != "PIXEL":
            continue                    # DISPLAY units depend on the other viewer's screen
        pts = _points(g)
        kind = {"ELLIPSE": "ellipse"}.get(g.get("GraphicType"), "")
        if kind == "ellipse" and len(pts) == 4:
            xs = [p[0] for p in pts]
            ys = [p[1] for p in pts]
            mark = Mark("ellipse", [[min(xs), min(ys)], [max(xs), max(ys)]])
        elif g.get("GraphicType") == "POLYLINE" and len(pts) == 2:
            mark = Mark("length", pts)
        elif g.get("GraphicType") == "POLYLINE" and len(pts) == 3:
            mark = Mark("angle", pts)
        else:
            continue
        mark.series, mark.sop, mark.frame = series, sop, frame
        out.append(mark)
    for t in item.get("TextObjectSequence", []):
        anchor = t.get("AnchorPoint")
        if anchor is None or t.get("AnchorPointAnnotationUnits") != "PIXEL":
            continue
        mark = Mark("text", [[float(anchor[0]), float(anchor[1])]], str(t.get("UnformattedTextValue", "")))
        mark.series, mark.sop, mark.frame = series, sop, frame
        out.append(mark)
    return out
