"""Deleting a study or one series: index rows first, then the files.

The order keeps the promise that nothing listed is missing: once the
transaction commits, no query, viewer or retrieve can reach the instances, and
only then are their files unlinked (with the directory fsynced, so a crash
cannot bring a deleted file back). A crash between the two leaves unindexed
files that the next start moves to quarantine (maintenance.quarantine_orphans),
never half a study in the index.

Who asked and why is the caller's audit record; this module only deletes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from dsmpacs.archive.index import Index
from dsmpacs.archive.models import Instance, Patient, Series, Study, utcnow
from dsmpacs.archive.storage import Storage

log = logging.getLogger(__name__)


class NotFound(LookupError):
    """No such study or series in the index."""


@dataclass(frozen=True)
class Deleted:
    study_instance_uid: str
    series: int
    instances: int
    bytes: int
    files_missing: int         # files already gone from the storage (reported, not an error)


def delete_study(index: Index, storage: Storage, study_instance_uid: str) -> Deleted:
    return _delete(index, storage, study_instance_uid, None)


def delete_series(index: Index, storage: Storage, study_instance_uid: str, series_instance_uid: str) -> Deleted:
    return _delete(index, storage, study_instance_uid, series_instance_uid)


def _delete(index: Index, storage: Storage, study_uid: str, series_uid: str | None) -> Deleted:
    with index.write():
        study = Study.get_or_none(Study.study_instance_uid == study_uid)
        if study is None:
            raise NotFound(f"study {study_uid} is not in the index")
        series_query = Series.select(Series.id).where(Series.study == study.id)
        if series_uid is not None:
            series_query = series_query.where(Series.series_instance_uid == series_uid)
        series_ids = [s.id for s in series_query]
        if series_uid is not None and not series_ids:
            raise NotFound(f"series {series_uid} is not in study {study_uid}")
        files = [(r.path, r.size) for r in
                 Instance.select(Instance.path, Instance.size).where(Instance.series.in_(series_ids))]
        if series_ids:
            Instance.delete().where(Instance.series.in_(series_ids)).execute()
            Series.delete().where(Series.id.in_(series_ids)).execute()
        remaining = Series.select().where(Series.study == study.id).count()
        if series_uid is None or remaining == 0:
            Study.delete().where(Study.id == study.id).execute()
            if not Study.select().where(Study.patient == study.patient_id).exists():
                Patient.delete().where(Patient.id == study.patient_id).execute()
        else:
            modalities = "\\".join(sorted({s.modality for s in Series.select(Series.modality)
                                           .where((Series.study == study.id) & (Series.modality != ""))}))
            Study.update(number_of_study_related_series=remaining,
                         number_of_study_related_instances=Instance.select().join(Series)
                         .where(Series.study == study.id).count(),
                         modalities_in_study=modalities[:256], updated_at=utcnow()
                         ).where(Study.id == study.id).execute()
    missing = 0
    for relpath, _size in files:
        if not storage.path(relpath).exists():
            missing += 1
            continue
        try:
            storage.remove(relpath)       # unlink + fsync of the directory
        except OSError as exc:
            # The index no longer lists it: the file is an orphan for the next recovery.
            log.error("deleted %s from the index but could not remove its file: %s", relpath, exc)
    log.info("deleted study %s%s: %d series, %d instances", study_uid,
             f" series {series_uid}" if series_uid else "", len(series_ids), len(files))
    return Deleted(study_uid, len(series_ids), len(files), sum(size for _p, size in files), missing)
