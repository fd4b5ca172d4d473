"""Retrieve, independent of the protocol: which stored instances a retrieve selects,
and in which transfer syntax each one goes out.

Used by C-MOVE and C-GET (dicom/move.py, dicom/get.py) and by pushes started
here (`dsmpacs send --study`). The rules:

* Selection follows the unique keys of PS3.4 C.4.2.1.4 / C.4.3.1.3: PatientID at
  PATIENT level (Patient Root only), StudyInstanceUID, SeriesInstanceUID or
  SOPInstanceUID (a backslash list allowed) at the lower levels. Higher-level
  keys, when given, must match too. Wildcards are not retrieve keys.
* Each instance is offered in its stored transfer syntax first, on a
  presentation context of its own, so a receiver that accepts it gets the
  original bytes. Only when the receiver refuses it is the instance converted,
  losslessly, to Explicit (or Implicit) VR Little Endian: see archive/transcode.py.
  Nothing is ever compressed, so nothing can be lost.
* Selection returns corrupt instances too, marked: each path asks
  archive/integrity.py ``refusal`` before it reads a file, and reports the
  instance as refused in its own terms (a failed sub-operation, an HTTP error).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Collection, Iterable, Iterator

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dsmpacs.archive.attributes import Level
from dsmpacs.archive.database import statement
from dsmpacs.archive.index import Index
from dsmpacs.archive.models import Instance, Patient, Series, Study
from dsmpacs.archive.transcode import can_convert
from dsmpacs.archive.uids import clean_uid, is_valid_uid

# DICOM allows at most 128 presentation contexts (odd IDs 1-255) per association.
MAX_CONTEXTS = 128
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_UID_CHUNK = 500           # UIDs per IN (...) clause


class RetrieveError(ValueError):
    """The identifier cannot select anything: missing or malformed keys (0xA900)."""


@dataclass(frozen=True)
class RetrieveKeys:
    """What a retrieve asks for, already validated."""
    level: Level
    patient_id: str = ""
    study_instance_uids: tuple[str, ...] = ()
    series_instance_uids: tuple[str, ...] = ()
    sop_instance_uids: tuple[str, ...] = ()

    @classmethod
    def study(cls, study_instance_uid: str, series_instance_uids: Iterable[str] = ()) -> "RetrieveKeys":
        """One study, or some of its series (what `dsmpacs send --study` asks for)."""
        series = tuple(series_instance_uids)
        keys = cls(Level.SERIES if series else Level.STUDY, study_instance_uids=(study_instance_uid,),
                   series_instance_uids=series)
        for uid in (study_instance_uid, *series):
            if not is_valid_uid(uid):
                raise RetrieveError(f"{uid!r} is not a valid UID")
        return keys


@dataclass(frozen=True)
class StoredInstance:
    """One instance to send, as the index knows it."""
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    path: str                   # relative to the storage root
    size: int
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    corrupt: bool = False
    corrupt_reason: str = ""


# --- the identifier ---------------------------------------------------------

def _values(identifier: Dataset, keyword: str) -> list[str]:
    """The element's values as strings; [] when absent or empty (universal)."""
    elem = identifier.get(keyword)
    if elem is None or elem == "":
        return []
    raw = elem if isinstance(elem, (list, tuple, MultiValue)) else str(elem).split("\\")
    return [clean_uid(v).strip() for v in raw if clean_uid(v).strip()]


def _uids(identifier: Dataset, keyword: str) -> tuple[str, ...]:
    values = _values(identifier, keyword)
    for value in values:
        if "*" in value or "?" in value:
            raise RetrieveError(f"{keyword}: wildcards are not allowed in a retrieve")
        if not is_valid_uid(value):
            raise RetrieveError(f"{keyword}: {value[:64]!r} is not a valid UID")
    return tuple(dict.fromkeys(values))


def retrieve_keys(identifier: Dataset, *, patient_root: bool) -> RetrieveKeys:
    """Validate a C-MOVE/C-GET identifier for the Patient Root or Study Root model."""
    level_text = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    try:
        level = Level(level_text)
    except ValueError:
        raise RetrieveError(f"QueryRetrieveLevel {level_text[:16]!r} is not PATIENT, STUDY, "
                            "SERIES or IMAGE") from None
    if level is Level.PATIENT and not patient_root:
        raise RetrieveError("the Study Root model has no PATIENT level")

    patient_ids = _values(identifier, "PatientID")
    if len(patient_ids) > 1 or any(c in "".join(patient_ids) for c in "*?"):
        raise RetrieveError("PatientID must be a single value without wildcards")
    keys = RetrieveKeys(
        level,
        patient_id=patient_ids[0] if patient_ids else "",
        study_instance_uids=_uids(identifier, "StudyInstanceUID"),
        series_instance_uids=_uids(identifier, "SeriesInstanceUID") if level in (Level.SERIES, Level.IMAGE)
        else (),
        sop_instance_uids=_uids(identifier, "SOPInstanceUID") if level is Level.IMAGE else (),
    )
    required = {Level.PATIENT: ("PatientID", keys.patient_id),
                Level.STUDY: ("StudyInstanceUID", keys.study_instance_uids),
                Level.SERIES: ("SeriesInstanceUID", keys.series_instance_uids),
                Level.IMAGE: ("SOPInstanceUID", keys.sop_instance_uids)}[level]
    if not required[1]:
        raise RetrieveError(f"{required[0]} is required at {level.value} level")
    return keys


# --- selection --------------------------------------------------------------

def _chunks(values: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    for start in range(0, len(values), _UID_CHUNK):
        yield values[start:start + _UID_CHUNK]


def select_instances(index: Index, keys: RetrieveKeys) -> list[StoredInstance]:
    """Every stored instance the keys select, in study, series number and instance
    number order (so a workstation receives a run frame order-wise sensibly)."""
    # The key at the retrieve level may be a long list; split it into chunks and
    # keep the overall order by sorting the collected rows at the end.
    lists = {Level.STUDY: keys.study_instance_uids, Level.SERIES: keys.series_instance_uids,
             Level.IMAGE: keys.sop_instance_uids}
    driving = lists.get(keys.level, ())
    batches = list(_chunks(driving)) if driving else [()]
    rows: list[tuple] = []
    if (keys.level is Level.IMAGE and not keys.patient_id
            and len(keys.study_instance_uids) == len(keys.series_instance_uids) == len(driving) == 1):
        # One instance by its three UIDs: what every WADO-RS frame or rendered request
        # asks; a prepared text (database.statement) with the same columns and joins.
        sql = statement(index.db, "retrieve.one_instance", _one_instance_sql)
        params = [keys.study_instance_uids[0], keys.series_instance_uids[0], driving[0]]
        with index.read():
            rows = [_row_of(row) for row in index.db.execute_sql(sql, params).fetchall()]
        batches = []
    with index.read():
        for batch in batches:
            query = (Instance
                     .select(Instance.sop_class_uid, Instance.sop_instance_uid, Instance.transfer_syntax_uid,
                             Instance.path, Instance.size, Instance.instance_number, Instance.id,
                             Series.series_instance_uid, Series.series_number, Series.id,
                             Study.study_instance_uid, Study.study_date, Study.study_time, Study.id,
                             Instance.corrupt, Instance.corrupt_reason)
                     .join(Series).join(Study).join(Patient))
            conditions = []
            if keys.patient_id:
                conditions.append(Patient.patient_id == keys.patient_id)
            for level, column in ((Level.STUDY, Study.study_instance_uid),
                                  (Level.SERIES, Series.series_instance_uid),
                                  (Level.IMAGE, Instance.sop_instance_uid)):
                values = batch if level is keys.level else lists[level]
                if values:
                    conditions.append(column.in_(list(values)))
            for condition in conditions:
                query = query.where(condition)
            rows.extend(query.tuples())
    rows.sort(key=lambda r: (r[11] or "", r[12] or "", r[13],
                             r[8] if r[8] is not None else -1, r[9],
                             r[5] if r[5] is not None else -1, r[6]))
    return [StoredInstance(r[0], r[1], r[2], r[3], r[4], study_instance_uid=r[10],
                           series_instance_uid=r[7], corrupt=bool(r[14]), corrupt_reason=r[15])
            for r in rows]


def _one_instance_sql(q, p) -> str:
    return (f"SELECT i.{q('sop_class_uid')}, i.{q('sop_instance_uid')}, i.{q('transfer_syntax_uid')}, "
            f"i.{q('path')}, i.{q('size')}, i.{q('instance_number')}, i.{q('id')}, "
            f"se.{q('series_instance_uid')}, se.{q('series_number')}, se.{q('id')}, "
            f"st.{q('study_instance_uid')}, st.{q('study_date')}, st.{q('study_time')}, st.{q('id')}, "
            f"i.{q('corrupt')}, i.{q('corrupt_reason')} "
            f"FROM {q('instance')} i JOIN {q('series')} se ON i.{q('series_id')} = se.{q('id')} "
            f"JOIN {q('study')} st ON se.{q('study_id')} = st.{q('id')} "
            f"JOIN {q('patient')} pa ON st.{q('patient_id')} = pa.{q('id')} "
            f"WHERE st.{q('study_instance_uid')} = {p} AND se.{q('series_instance_uid')} = {p} "
            f"AND i.{q('sop_instance_uid')} = {p}")


def _row_of(row: tuple) -> tuple:
    """As peewee's .tuples() gives it: the corrupt flag as a bool."""
    return (*row[:14], Instance.corrupt.python_value(row[14]), row[15])


# --- transfer syntaxes --------------------------------------------------------

Context = tuple[str, tuple[str, ...]]      # (abstract syntax, transfer syntaxes)


def fallback_syntaxes(stored_ts: str) -> tuple[str, ...]:
    """What to offer beside the stored syntax, in order of preference."""
    return tuple(ts for ts in UNCOMPRESSED if ts != stored_ts and can_convert(stored_ts, ts))


def proposals(instance: StoredInstance) -> list[Context]:
    """The presentation contexts that let this instance go out: its stored transfer
    syntax alone (so the receiver cannot choose anything else for it), then the
    uncompressed fallbacks in a second context."""
    out: list[Context] = [(instance.sop_class_uid, (instance.transfer_syntax_uid,))]
    fallback = fallback_syntaxes(instance.transfer_syntax_uid)
    if fallback:
        out.append((instance.sop_class_uid, fallback))
    return out


@dataclass
class Batch:
    """Instances that share one association, and the contexts to propose for them."""
    instances: list[StoredInstance] = field(default_factory=list)
    contexts: list[Context] = field(default_factory=list)


def plan_batches(instances: Iterable[StoredInstance], limit: int = MAX_CONTEXTS) -> list[Batch]:
    """Split instances into runs whose contexts fit one association, keeping their order.
    A study rarely needs more than one; a patient with many SOP classes may."""
    batches: list[Batch] = []
    current = Batch()
    seen: set[Context] = set()
    for instance in instances:
        needed = [c for c in proposals(instance) if c not in seen]
        if current.instances and len(current.contexts) + len(needed) > limit:
            batches.append(current)
            current, seen = Batch(), set()
            needed = proposals(instance)
        current.instances.append(instance)
        current.contexts.extend(needed)
        seen.update(needed)
    if current.instances:
        batches.append(current)
    return batches


def choose_transfer_syntax(instance: StoredInstance, accepted: Collection[tuple[str, str]]) -> str | None:
    """The transfer syntax to send in, given the accepted (abstract syntax, transfer
    syntax) pairs: the stored one when accepted, else a lossless conversion target,
    else None (the receiver takes nothing this archive can produce without loss)."""
    stored = instance.transfer_syntax_uid
    if (instance.sop_class_uid, stored) in accepted:
        return stored
    for target in UNCOMPRESSED:
        if (instance.sop_class_uid, target) in accepted and can_convert(stored, target):
            return target
    return None


def describe(ts: str) -> str:
    name = UID(ts).name
    return name if name and name != ts else ts
