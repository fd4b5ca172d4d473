"""Measurements and annotations drawn in the viewer, kept per user.

A user's annotations on a frame are replaced as a whole (the viewer sends the
frame's list after each change), which keeps the protocol idempotent: a repeated
request leaves the same rows. Geometry is validated here, in image pixel
coordinates, so what the index holds can always be drawn again and turned into a
Grayscale Softcopy Presentation State (archive/derived/presentation_state.py).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from dsmpacs.archive.index import Index
from dsmpacs.archive.models import Annotation, utcnow
from dsmpacs.archive.uids import is_valid_uid

# kind -> (least, most) points it is drawn with
KINDS: dict[str, tuple[int, int]] = {
    "length": (2, 2),
    "angle": (3, 3),
    "stenosis": (4, 4),     # two diameters: reference (points 0-1), narrowest (points 2-3)
    "ellipse": (2, 2),      # two opposite corners of the bounding box
    "arrow": (2, 2),        # tail, head
    "text": (1, 1),
    "calibrate": (2, 2),    # a line over an object of known size (a catheter)
}
MAX_PER_FRAME = 200
MAX_LABEL = 255
_MAX_COORD = 1e6


class AnnotationError(ValueError):
    """A request that cannot be stored as given (the message says why)."""


@dataclass
class Mark:
    """One annotation: ``points`` in image pixels ([x, y], continuous, 0..columns/rows)."""
    kind: str
    points: list[list[float]]
    label: str = ""
    extra: dict = field(default_factory=dict)      # e.g. {"mm": 2.0} for a calibration
    id: int | None = None
    series: str = ""
    sop: str = ""
    frame: int = 0
    created: str = ""
    updated: str = ""

    def as_dict(self) -> dict:
        return {"id": self.id, "series": self.series, "sop": self.sop, "frame": self.frame,
                "kind": self.kind, "points": self.points, "label": self.label, "extra": self.extra,
                "created": self.created, "updated": self.updated}


def _finite(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AnnotationError("coordinates must be numbers")
    number = float(value)
    if not math.isfinite(number) or abs(number) > _MAX_COORD:
        raise AnnotationError("coordinates must be finite")
    return number


def parse_mark(data) -> Mark:
    """A Mark from the viewer's JSON ({kind, points, label, extra}), or AnnotationError."""
    if not isinstance(data, dict):
        raise AnnotationError("an annotation must be an object")
    kind = data.get("kind")
    if kind not in KINDS:
        raise AnnotationError(f"unknown annotation kind {kind!r}")
    points = data.get("points")
    least, most = KINDS[kind]
    if not isinstance(points, list) or not least <= len(points) <= most:
        raise AnnotationError(f"{kind} needs {least} point(s)" if least == most
                              else f"{kind} needs {least} to {most} points")
    parsed = []
    for point in points:
        if not isinstance(point, list) or len(point) != 2:
            raise AnnotationError("a point is [x, y]")
        parsed.append([_finite(point[0]), _finite(point[1])])
    label = data.get("label", "")
    if not isinstance(label, str):
        raise AnnotationError("label must be text")
    extra = data.get("extra") or {}
    if not isinstance(extra, dict) or len(json.dumps(extra)) > 1024:
        raise AnnotationError("extra must be a small object")
    return Mark(kind, parsed, label[:MAX_LABEL], extra)


def _mark_of(row: Annotation) -> Mark:
    geometry = json.loads(row.geometry)
    return Mark(row.kind, geometry.get("points", []), row.label, geometry.get("extra", {}), row.id,
                row.series_instance_uid, row.sop_instance_uid, row.frame,
                row.created_at.isoformat() + "Z", row.updated_at.isoformat() + "Z")


def _check_uids(*uids: str) -> None:
    if not all(is_valid_uid(u) for u in uids):
        raise AnnotationError("invalid UID")


class Annotations:
    def __init__(self, index: Index):
        self.index = index

    def for_study(self, username: str, study: str) -> list[Mark]:
        _check_uids(study)
        with self.index.read():
            rows = (Annotation.select()
                    .where((Annotation.username == username) & (Annotation.study_instance_uid == study))
                    .order_by(Annotation.series_instance_uid, Annotation.sop_instance_uid,
                              Annotation.frame, Annotation.id))
            return [_mark_of(r) for r in rows]

    def replace_frame(self, username: str, study: str, series: str, sop: str, frame: int,
                      marks: list[Mark]) -> list[Mark]:
        """The user's annotations on this frame become ``marks``; returns them as stored."""
        _check_uids(study, series, sop)
        if frame < 0:
            raise AnnotationError("frame counts from 0")
        if len(marks) > MAX_PER_FRAME:
            raise AnnotationError(f"at most {MAX_PER_FRAME} annotations per frame")
        now = utcnow()
        where = ((Annotation.username == username) & (Annotation.study_instance_uid == study)
                 & (Annotation.series_instance_uid == series) & (Annotation.sop_instance_uid == sop)
                 & (Annotation.frame == frame))
        with self.index.write():
            # Rows keep their creation time when the same annotation comes back by id.
            created = {r.id: r.created_at for r in Annotation.select(Annotation.id, Annotation.created_at)
                       .where(where)}
            Annotation.delete().where(where).execute()
            for mark in marks:
                Annotation.create(
                    username=username, study_instance_uid=study, series_instance_uid=series,
                    sop_instance_uid=sop, frame=frame, kind=mark.kind,
                    geometry=json.dumps({"points": mark.points, "extra": mark.extra}),
                    label=mark.label, created_at=created.get(mark.id, now), updated_at=now)
        return [m for m in self.for_study(username, study)
                if (m.series, m.sop, m.frame) == (series, sop, frame)]

    def delete(self, username: str, study: str, annotation_id: int) -> bool:
        """Remove one of the user's own annotations; False when there is none such."""
        _check_uids(study)
        with self.index.write():
            return Annotation.delete().where(
                (Annotation.id == annotation_id) & (Annotation.username == username)
                & (Annotation.study_instance_uid == study)).execute() > 0
