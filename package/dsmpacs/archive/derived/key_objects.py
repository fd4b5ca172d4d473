"""A Key Object Selection Document (PS3.3 A.35.4, template TID 2010) flagging a
user's key images "Of Interest" (DCM 113000), so that any workstation pulling the
study sees which frames the reader picked."""
from __future__ import annotations

from datetime import datetime, timezone

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dsmpacs.archive.derived import SourceImage, common_header

KOS = "1.2.840.10008.5.1.4.1.1.88.59"
OF_INTEREST = ("113000", "DCM", "Of Interest")
KEY_OBJECT_DESCRIPTION = ("113012", "DCM", "Key Object Description")


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    c = Dataset()
    c.CodeValue = value
    c.CodingSchemeDesignator = scheme
    c.CodeMeaning = meaning
    return c


def build(images: list[tuple[SourceImage, int]], *, creator: str, series_number: int,
          description: str = "", now: datetime | None = None) -> Dataset:
    """The KOS for ``images``: (image, frame counted from 0) pairs of one study."""
    if not images:
        raise ValueError("no key images")
    now = now or datetime.now(timezone.utc)
    first = images[0][0]
    ds = common_header(first, KOS, "KO", "Key images", series_number, now)
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    ds.ContentDate = ds.InstanceCreationDate
    ds.ContentTime = ds.InstanceCreationTime
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code(*OF_INTEREST)])
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "2010"
    ds.ContentTemplateSequence = Sequence([template])
    author = Dataset()
    author.ObserverType = "PSN"
    author.PersonName = creator[:64]
    ds.AuthorObserverSequence = Sequence([author])

    content = []
    if description:
        text = Dataset()
        text.RelationshipType = "CONTAINS"
        text.ValueType = "TEXT"
        text.ConceptNameCodeSequence = Sequence([_code(*KEY_OBJECT_DESCRIPTION)])
        text.TextValue = description[:1024]
        content.append(text)
    frames_of: dict[str, tuple[SourceImage, list[int]]] = {}
    for source, frame in images:
        frames_of.setdefault(source.sop, (source, []))[1].append(frame)
    for source, frames in frames_of.values():
        ref = Dataset()
        ref.ReferencedSOPClassUID = source.sop_class
        ref.ReferencedSOPInstanceUID = source.sop
        if source.frames > 1:
            ref.ReferencedFrameNumber = sorted({f + 1 for f in frames})
        item = Dataset()
        item.RelationshipType = "CONTAINS"
        item.ValueType = "IMAGE"
        item.ReferencedSOPSequence = Sequence([ref])
        content.append(item)
    ds.ContentSequence = Sequence(content)

    # Current Requested Procedure Evidence: every referenced instance, by series.
    by_series: dict[str, list[Dataset]] = {}
    for source, _ in frames_of.values():
        ref = Dataset()
        ref.ReferencedSOPClassUID = source.sop_class
        ref.ReferencedSOPInstanceUID = source.sop
        by_series.setdefault(source.series, []).append(ref)
    study = Dataset()
    study.StudyInstanceUID = first.study
    study.ReferencedSeriesSequence = Sequence()
    for series, refs in by_series.items():
        s = Dataset()
        s.SeriesInstanceUID = series
        s.ReferencedSOPSequence = Sequence(refs)
        study.ReferencedSeriesSequence.append(s)
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([study])
    return ds
