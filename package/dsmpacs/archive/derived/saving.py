"""Saving a user's annotations and key images into the study, and reading back the
presentation states a study holds: the domain side of the viewer's "Save to study"."""
from __future__ import annotations

import logging

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from dsmpacs.archive.annotations import Annotations, Mark
from dsmpacs.archive.browse import study_files
from dsmpacs.archive.derived import (
    SourceImage,
    key_objects,
    load_source,
    next_series_number,
    presentation_state,
    store,
)
from dsmpacs.archive.index import Index
from dsmpacs.archive.ingest import Ingest
from dsmpacs.archive.results import StoreResult

log = logging.getLogger(__name__)

# Calibration lines are the user's tool, not a finding: they stay out of the study.
_NOT_SAVED = {"calibrate"}


class NothingToSave(ValueError):
    pass


def save_presentation_state(index: Index, ingest: Ingest, username: str, study: str, *,
                            window: tuple[float, float] | None = None) -> tuple[StoreResult, str]:
    """Store the user's annotations on ``study`` as one GSPS in a new series;
    returns the ingest's result and the new SOP Instance UID."""
    marks = [m for m in Annotations(index).for_study(username, study) if m.kind not in _NOT_SAVED]
    if not marks:
        raise NothingToSave("no annotations to save")
    sources: dict[str, SourceImage] = {}
    per_frame: dict[tuple[str, int], list[Mark]] = {}
    for mark in marks:
        if mark.sop not in sources:
            sources[mark.sop] = load_source(index, ingest.storage, study, mark.series, mark.sop)
        per_frame.setdefault((mark.sop, mark.frame), []).append(mark)
    ds = presentation_state.build(
        [(sources[sop], frame, found) for (sop, frame), found in per_frame.items()],
        window=window, creator=username, series_number=next_series_number(index, study))
    return store(ingest, ds, username), str(ds.SOPInstanceUID)


def save_key_images(index: Index, ingest: Ingest, username: str, study: str,
                    images: list[tuple[str, str, int]], description: str = "") -> tuple[StoreResult, str]:
    """Store a KOS "Of Interest" for ``images`` ((series, sop, frame) triples)."""
    if not images:
        raise NothingToSave("no key images")
    sources: dict[str, SourceImage] = {}
    for series, sop, _ in images:
        if sop not in sources:
            sources[sop] = load_source(index, ingest.storage, study, series, sop)
    ds = key_objects.build([(sources[sop], frame) for _, sop, frame in images], creator=username,
                           series_number=next_series_number(index, study), description=description)
    return store(ingest, ds, username), str(ds.SOPInstanceUID)


def study_presentation_marks(index: Index, ingest: Ingest, study: str) -> list[dict]:
    """The annotations of every GSPS stored in the study, read only, each with the
    presentation state it came from and its creator."""
    out = []
    for found in study_files(index, study):
        if found.sop_class_uid != presentation_state.GSPS or found.corrupt:
            continue
        try:
            ds = dcmread(ingest.storage.path(found.path))
        except (InvalidDicomError, OSError, ValueError) as exc:
            log.warning("cannot read presentation state %s: %s", found.sop_instance_uid, exc)
            continue
        creator = str(ds.get("ContentCreatorName", "") or "")
        for mark in presentation_state.marks_from(ds, study):
            item = mark.as_dict()
            item.update(id=None, source=found.sop_instance_uid, creator=creator)
            out.append(item)
    return out
