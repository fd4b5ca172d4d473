"""What the archive holds: totals, volume received per day, recent studies, quarantine."""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from peewee import SQL, fn

from dsmpacs.archive.database import is_mysql
from dsmpacs.archive.index import Index
from dsmpacs.archive.models import Instance, Patient, Quarantine, Series, Study, utcnow


@dataclass(frozen=True)
class Totals:
    patients: int
    studies: int
    series: int
    instances: int
    bytes: int
    quarantined: int
    quarantined_bytes: int


@dataclass(frozen=True)
class DayVolume:
    day: date
    instances: int
    bytes: int


@dataclass(frozen=True)
class StudySummary:
    study_instance_uid: str
    patient_name: str
    patient_id: str
    study_date: str
    study_description: str
    modalities: str
    series: int
    instances: int
    updated_at: datetime


@dataclass(frozen=True)
class QuarantineEntry:
    id: int
    received_at: datetime
    sop_instance_uid: str
    sop_class_uid: str
    reason: str
    calling_ae: str
    origin: str
    size: int
    path: str


def local_utc_offset_minutes() -> int:
    """The server's current offset from UTC (the index stores UTC)."""
    return time.localtime().tm_gmtoff // 60


class Statistics:
    def __init__(self, index: Index):
        self.index = index

    def totals(self) -> Totals:
        with self.index.read():
            instances, size = Instance.select(fn.COUNT(Instance.id), fn.SUM(Instance.size)).scalar(
                as_tuple=True)
            q_count, q_size = Quarantine.select(fn.COUNT(Quarantine.id), fn.SUM(Quarantine.size)).scalar(
                as_tuple=True)
            return Totals(patients=Patient.select().count(), studies=Study.select().count(),
                          series=Series.select().count(), instances=int(instances or 0),
                          bytes=int(size or 0), quarantined=int(q_count or 0),
                          quarantined_bytes=int(q_size or 0))

    def received_per_day(self, days: int = 30, *, utc_offset_minutes: int | None = None,
                         today: date | None = None) -> list[DayVolume]:
        """Instances and bytes received per local day, oldest first, ``days`` entries
        ending today (days without arrivals are zero)."""
        offset = local_utc_offset_minutes() if utc_offset_minutes is None else int(utc_offset_minutes)
        today = today or (utcnow() + timedelta(minutes=offset)).date()
        first = today - timedelta(days=days - 1)
        since = datetime.combine(first, datetime.min.time()) - timedelta(minutes=offset)
        until = since + timedelta(days=days)
        with self.index.read():
            if is_mysql(self.index.db):
                day = fn.DATE(fn.DATE_ADD(Instance.received_at, SQL(f"INTERVAL {offset} MINUTE")))
            else:
                day = fn.date(Instance.received_at, f"{offset:+d} minutes")
            rows = (Instance.select(day.alias("day"), fn.COUNT(Instance.id), fn.SUM(Instance.size))
                    .where((Instance.received_at >= since) & (Instance.received_at < until))
                    .group_by(day).tuples())
            found = {_as_date(d): (int(n), int(s or 0)) for d, n, s in rows}
        return [DayVolume(first + timedelta(days=i), *found.get(first + timedelta(days=i), (0, 0)))
                for i in range(days)]

    def recent_studies(self, limit: int = 20) -> list[StudySummary]:
        """Studies that most recently received an instance, newest first."""
        with self.index.read():
            rows = (Study.select(Study, Patient).join(Patient)
                    .order_by(Study.updated_at.desc(), Study.id.desc()).limit(limit))
            return [StudySummary(s.study_instance_uid, s.patient.patient_name or "",
                                 s.patient.patient_id or "", s.study_date or "", s.study_description or "",
                                 s.modalities_in_study or "", s.number_of_study_related_series or 0,
                                 s.number_of_study_related_instances or 0, s.updated_at) for s in rows]

    def quarantine(self, *, limit: int = 50, offset: int = 0) -> list[QuarantineEntry]:
        with self.index.read():
            rows = Quarantine.select().order_by(Quarantine.received_at.desc(), Quarantine.id.desc()
                                                ).limit(limit).offset(offset)
            return [QuarantineEntry(q.id, q.received_at, q.sop_instance_uid, q.sop_class_uid, q.reason,
                                    q.calling_ae, q.origin, q.size, q.path) for q in rows]


def _as_date(value) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])
