"""Whether a stored file still holds what was acknowledged, and what follows when not.

Re-hashing (``dsmpacs verify``, storage commitment, the background verification
job in archive/verification.py) compares a file with the size and SHA-256 the
index recorded at ingest. A mismatch, a missing or an unreadable file marks the
instance corrupt in the index: from then on no retrieve path serves it (see
``refusal``, which every protocol asks), and the administration pages raise an
alert until a matching file is back (restored from a backup) and re-hashing
clears the mark.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from dsmpacs.archive.index import Index
from dsmpacs.archive.models import Instance, Series, Study, utcnow
from dsmpacs.archive.storage import Storage

log = logging.getLogger(__name__)


class Finding(Enum):
    OK = "ok"
    MISSING = "missing"
    MISMATCH = "mismatch"
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class Check:
    finding: Finding
    size: int = 0                # bytes read (what the job throttles on)
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.finding is Finding.OK


def hash_check(storage: Storage, path: str, size: int, sha256: str) -> Check:
    """Re-hash one stored file against its recorded size and SHA-256."""
    try:
        got_size, digest = storage.hash_file(path)
    except FileNotFoundError:
        return Check(Finding.MISSING, 0, f"file {path} is missing")
    except (OSError, ValueError) as exc:
        return Check(Finding.UNREADABLE, 0, f"file {path} is unreadable: {exc}")
    if got_size != size or digest != sha256:
        return Check(Finding.MISMATCH, got_size, f"file {path} no longer matches its checksum")
    return Check(Finding.OK, got_size)


def record(index: Index, row: Instance, check: Check, by: str) -> None:
    """Store what a re-hash found: the verified time, or the corrupt mark (logged as an
    error when it is new). ``by`` names who looked (verify, commitment, job)."""
    if check.ok:
        _mark_verified(index, [row], by)
        return
    mark_corrupt(index, row.id, row.sop_instance_uid, f"{check.finding.value}: {check.detail}", by,
                 rehashed=True)


class Recorder:
    """``record`` for many rows: matches are written in batches, one short transaction
    for up to ``batch`` rows, so a full verify of a million small files does not add a
    million commits (each an fsync on SQLite) to the reading. Mismatches are written at
    once. Call ``flush`` at the end (and before saving progress)."""

    def __init__(self, index: Index, by: str, batch: int = 200):
        self.index, self.by, self.batch = index, by, batch
        self._ok: list[Instance] = []

    def add(self, row: Instance, check: Check) -> None:
        if not check.ok:
            record(self.index, row, check, self.by)
            return
        self._ok.append(row)
        if len(self._ok) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if not self._ok:
            return
        rows, self._ok = self._ok, []
        _mark_verified(self.index, rows, self.by)


def _mark_verified(index: Index, rows: list[Instance], by: str) -> None:
    """Rows whose files matched: verified now, and served again if they were marked."""
    with index.write():
        Instance.update(verified_at=utcnow(), corrupt=False, corrupt_reason="").where(
            Instance.id.in_([r.id for r in rows])).execute()
    for row in rows:
        if row.corrupt:
            log.warning("%s: %s matches its checksum again; it is served again", by, row.sop_instance_uid)


def mark_corrupt(index: Index, instance_id: int, sop_instance_uid: str, reason: str, by: str, *,
                 rehashed: bool = False) -> bool:
    """Mark an instance corrupt; True (and an error in the log) when it was not yet.
    ``rehashed``: the whole file was read just now, which counts as its verification
    (so the job does not re-read a corrupt file on every pass)."""
    with index.write():
        if rehashed:
            Instance.update(verified_at=utcnow()).where(Instance.id == instance_id).execute()
        changed = (Instance.update(corrupt=True, corrupt_reason=reason[:255])
                   .where((Instance.id == instance_id) & (Instance.corrupt == False))  # noqa: E712
                   .execute())
    if changed:
        log.error("%s: instance %s is corrupt and will not be served (%s); restore its file "
                  "from a backup", by, sop_instance_uid, reason)
    return bool(changed)


# --- may this instance be served? ---------------------------------------------

class Servable(Protocol):
    """What every retrieve path knows of an instance it is about to serve
    (archive.retrieve.StoredInstance, archive.browse.InstanceFile)."""
    sop_instance_uid: str
    path: str
    size: int
    corrupt: bool
    corrupt_reason: str


def refusal(index: Index, storage: Storage, instance: Servable, by: str = "retrieve") -> str | None:
    """Why this instance must not be served, or None. Every retrieve path (C-MOVE,
    C-GET, pushes, WADO-RS, WADO-URI, ZIP, rendering) asks this before reading.

    Besides the corrupt mark, the file's size is checked now: a stat is cheap, and a
    truncated or vanished file found here is marked corrupt at once. (A same-size
    alteration needs a re-hash, which the verification job does in the background.)"""
    if instance.corrupt:
        return f"instance {instance.sop_instance_uid} is corrupt in storage ({instance.corrupt_reason})"
    problem = file_problem(storage, instance)
    if not problem:
        return None
    row = index.find_instance(instance.sop_instance_uid)
    if row is not None:
        mark_corrupt(index, row.id, instance.sop_instance_uid, problem, by)
    return f"instance {instance.sop_instance_uid} is corrupt in storage ({problem})"


def file_problem(storage: Storage, instance: Servable) -> str:
    """What a stat finds wrong with an instance's file: missing, unreadable or of
    another size than stored; "" when its size is right. The cheap half of ``refusal``,
    which the ingest also asks of a stored copy that an identical resend may repair."""
    try:
        size = storage.path(instance.path).stat().st_size
    except FileNotFoundError:
        return f"missing: file {instance.path} is missing"
    except (OSError, ValueError) as exc:
        return f"unreadable: file {instance.path}: {exc}"
    if size == instance.size:
        return ""
    return f"mismatch: file {instance.path} is {size} bytes, {instance.size} were stored"


# --- what the administrator sees ------------------------------------------------

@dataclass(frozen=True)
class CorruptInstance:
    sop_instance_uid: str
    study_instance_uid: str
    path: str
    reason: str
    received_at: object


def corrupt_count(index: Index) -> int:
    with index.read():
        return Instance.select().where(Instance.corrupt == True).count()  # noqa: E712


def corrupt_in_study(index: Index, study_instance_uid: str) -> int:
    with index.read():
        return (Instance.select().join(Series).join(Study)
                .where((Study.study_instance_uid == study_instance_uid)
                       & (Instance.corrupt == True)).count())  # noqa: E712


def corrupt_instances(index: Index, limit: int = 100) -> list[CorruptInstance]:
    with index.read():
        rows = (Instance.select(Instance.sop_instance_uid, Study.study_instance_uid, Instance.path,
                                Instance.corrupt_reason, Instance.received_at)
                .join(Series).join(Study).where(Instance.corrupt == True)  # noqa: E712
                .order_by(Instance.id).limit(limit).tuples())
        return [CorruptInstance(*r) for r in rows]
