"""Read models for browsing: a page of studies, one patient's timeline, one study's
series with frame counts and sizes, the files of a series. No protocol here: the
web UI's study browser and viewer are thin layers over these functions.

Searching goes through query.Search, the same matcher as C-FIND and QIDO-RS,
so a name found in the browser is found by a workstation too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from peewee import fn

from dsmpacs.archive.attributes import Level
from dsmpacs.archive.index import Index
from dsmpacs.archive.models import Instance, Patient, Series, Study
from dsmpacs.archive.query import Query, Search

STUDY_COLUMNS = ("StudyInstanceUID", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                 "StudyDate", "StudyTime", "AccessionNumber", "StudyDescription", "ModalitiesInStudy",
                 "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")


@dataclass(frozen=True)
class StudyPage:
    rows: list[dict]          # keyword -> value, plus "patient_row" (Patient.id) and "series" (first ones)
    page: int
    per_page: int
    total: int

    @property
    def has_next(self) -> bool:
        return self.page * self.per_page < self.total


@dataclass
class SeriesSummary:
    series_instance_uid: str
    series_number: int | None
    modality: str
    description: str
    instances: int
    frames: int
    bytes: int
    transfer_syntaxes: list[str]
    first_instance_uid: str


@dataclass
class StudyDetail:
    study: Study
    patient: Patient
    series: list[SeriesSummary] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.series)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.series)


def search_studies(index: Index, filters: Mapping[str, str], *, page: int = 1, per_page: int = 25,
                   scope=None) -> StudyPage:
    """One page of matching studies, the latest study date first (undated ones last,
    then the most recently indexed), so a patient's newest visit heads the list.
    ``scope`` (archive/visibility.Scope): only the studies it may see."""
    search = Search(index)
    page = max(1, page)
    # pn_pinyin: a reader may type a Chinese patient's name in pinyin (wang xiaoming).
    total = search.count(Query(Level.STUDY, dict(filters), STUDY_COLUMNS, pn_pinyin=True, scope=scope))
    rows = search.newest_first(Query(Level.STUDY, dict(filters), STUDY_COLUMNS, limit=per_page,
                                     offset=(page - 1) * per_page, pn_pinyin=True, scope=scope),
                               "StudyDate", "StudyTime")
    _add_links(index, rows)
    return StudyPage(rows, page, per_page, total)


def _add_links(index: Index, rows: list[dict]) -> None:
    """The patient row (for the timeline link) and the series (for thumbnails) of each study."""
    uids = [r["StudyInstanceUID"] for r in rows]
    if not uids:
        return
    with index.read():
        studies = {s.study_instance_uid: s for s in
                   Study.select(Study.id, Study.study_instance_uid, Study.patient).where(
                       Study.study_instance_uid.in_(uids))}
        series: dict[int, list[dict]] = {}
        for s in (Series.select(Series.study, Series.series_instance_uid, Series.series_number,
                                Series.modality, Series.series_description)
                  .where(Series.study.in_([s.id for s in studies.values()]))
                  .order_by(Series.series_number, Series.id)):
            series.setdefault(s.study_id, []).append(
                {"uid": s.series_instance_uid, "number": s.series_number, "modality": s.modality,
                 "description": s.series_description})
    for row in rows:
        study = studies.get(row["StudyInstanceUID"])
        row["patient_row"] = study.patient_id if study else None
        row["series"] = series.get(study.id, []) if study else []


def study_detail(index: Index, study_instance_uid: str) -> StudyDetail | None:
    with index.read():
        study = Study.get_or_none(Study.study_instance_uid == study_instance_uid)
        if study is None:
            return None
        detail = StudyDetail(study, Patient.get_by_id(study.patient_id))
        per_series = (Instance.select(Instance.series, fn.COUNT(Instance.id).alias("n"),
                                      fn.SUM(fn.COALESCE(Instance.number_of_frames, 1)).alias("frames"),
                                      fn.SUM(Instance.size).alias("bytes"))
                      .join(Series).where(Series.study == study.id).group_by(Instance.series))
        counts = {r.series_id: (r.n, int(r.frames or 0), int(r.bytes or 0)) for r in per_series}
        syntaxes: dict[int, set[str]] = {}
        for series_id, ts in (Instance.select(Instance.series, Instance.transfer_syntax_uid).distinct()
                              .join(Series).where(Series.study == study.id).tuples()):
            syntaxes.setdefault(series_id, set()).add(ts)
        for s in Series.select().where(Series.study == study.id).order_by(Series.series_number, Series.id):
            first = (Instance.select(Instance.sop_instance_uid).where(Instance.series == s.id)
                     .order_by(Instance.instance_number, Instance.id).first())
            n, frames, size = counts.get(s.id, (0, 0, 0))
            detail.series.append(SeriesSummary(
                s.series_instance_uid, s.series_number, s.modality or "", s.series_description or "",
                n, frames, size, sorted(syntaxes.get(s.id, ())), first.sop_instance_uid if first else ""))
    return detail


def patient_timeline(index: Index, patient_row: int, scope=None) -> tuple[Patient, list[Study]] | None:
    """A patient and all their studies, oldest first (by study date and time).
    With a ``scope``, only the studies it may see; a patient with none of them is,
    to that scope, not there (None)."""
    with index.read():
        patient = Patient.get_or_none(Patient.id == patient_row)
        if patient is None:
            return None
        query = Study.select().where(Study.patient == patient.id)
        if scope is not None:
            query = scope.restrict(query)
        studies = list(query.order_by(Study.study_date, Study.study_time, Study.id))
    if scope is not None and not scope.is_everything and not studies:
        return None
    return patient, studies


@dataclass(frozen=True)
class InstanceFile:
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None
    frames: int
    path: str                 # relative to the storage root
    size: int
    sha256: str
    transfer_syntax_uid: str
    series_instance_uid: str
    series_number: int | None
    modality: str
    corrupt: bool = False
    corrupt_reason: str = ""


def _instance_files(query) -> list[InstanceFile]:
    rows = (query.select(Instance.sop_instance_uid, Instance.sop_class_uid, Instance.instance_number,
                         Instance.number_of_frames, Instance.path, Instance.size, Instance.sha256,
                         Instance.transfer_syntax_uid, Series.series_instance_uid, Series.series_number,
                         Series.modality, Instance.corrupt, Instance.corrupt_reason)
            .order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id).tuples())
    return [InstanceFile(r[0], r[1], r[2], max(1, int(r[3] or 1)), r[4], r[5], r[6], r[7], r[8], r[9],
                         r[10] or "", bool(r[11]), r[12]) for r in rows]


def study_files(index: Index, study_instance_uid: str, series_instance_uid: str | None = None) -> list[InstanceFile]:
    """The stored files of a study (or one of its series), in series and instance order."""
    with index.read():
        query = Instance.select().join(Series).join(Study).where(
            Study.study_instance_uid == study_instance_uid)
        if series_instance_uid is not None:
            query = query.where(Series.series_instance_uid == series_instance_uid)
        return _instance_files(query)


def instance_file(index: Index, study_instance_uid: str, series_instance_uid: str,
                  sop_instance_uid: str) -> InstanceFile | None:
    """One instance, only if it belongs to that series of that study."""
    with index.read():
        found = _instance_files(Instance.select().join(Series).join(Study).where(
            (Study.study_instance_uid == study_instance_uid)
            & (Series.series_instance_uid == series_instance_uid)
            & (Instance.sop_instance_uid == sop_instance_uid)))
    return found[0] if found else None
