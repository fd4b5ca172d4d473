"""Storage commitment, independent of the protocol: may the sender delete its copy?

An angiography system deletes its local copy of a run once the archive says
"committed", so a wrong "yes" loses a patient's images. An instance is
committed only when all of these hold, checked now and not remembered from
the time it was stored:

* it is in the index under that SOP Instance UID, with the SOP class the
  requester names;
* its file exists and re-hashes to the size and SHA-256 recorded at ingest;
* no later copy with different content under the same UID waits in
  quarantine (the requester may hold that other copy, not the archived one).

What the re-hash finds is recorded (archive/integrity.py): a mismatch marks
the instance corrupt, so no retrieve path serves it from then on.

Anything that cannot be checked (index down, unreadable file) is a failure.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from typing import Iterable

from dsmpacs.archive.database import IndexUnavailable
from dsmpacs.archive.integrity import Finding, hash_check, record
from dsmpacs.archive.models import Instance, Quarantine
from dsmpacs.archive.uids import clean_uid, is_valid_uid

log = logging.getLogger(__name__)


class CommitFailure(Enum):
    INVALID_UID = "invalid-uid"
    NO_SUCH_INSTANCE = "no-such-instance"
    CLASS_MISMATCH = "class-mismatch"
    FILE_MISSING = "file-missing"
    CHECKSUM_MISMATCH = "checksum-mismatch"
    CONFLICT_QUARANTINED = "conflict-quarantined"
    INDEX_UNAVAILABLE = "index-unavailable"


@dataclass(frozen=True)
class CommitResult:
    sop_class_uid: str
    sop_instance_uid: str
    failure: CommitFailure | None = None
    detail: str = ""

    @property
    def committed(self) -> bool:
        return self.failure is None


def _check(archive, sop_class_uid: str, sop_instance_uid: str) -> CommitResult:
    def fail(failure: CommitFailure, detail: str) -> CommitResult:
        return CommitResult(sop_class_uid, sop_instance_uid, failure, detail)

    if not is_valid_uid(sop_instance_uid) or not is_valid_uid(sop_class_uid):
        return fail(CommitFailure.INVALID_UID, "missing or malformed UID")
    try:
        with archive.index.read():
            row = Instance.get_or_none(Instance.sop_instance_uid == sop_instance_uid)
            conflicts = 0 if row is None else (
                Quarantine.select()
                .where((Quarantine.sop_instance_uid == sop_instance_uid)
                       & (Quarantine.received_at >= row.received_at)).count())
    except IndexUnavailable as exc:
        return fail(CommitFailure.INDEX_UNAVAILABLE, str(exc))
    if row is None:
        return fail(CommitFailure.NO_SUCH_INSTANCE, "not stored")
    if row.sop_class_uid != sop_class_uid:
        return fail(CommitFailure.CLASS_MISMATCH, f"stored as SOP class {row.sop_class_uid}")
    if conflicts:
        return fail(CommitFailure.CONFLICT_QUARANTINED,
                    "a later copy with different content is in quarantine")
    check = hash_check(archive.storage, row.path, row.size, row.sha256)
    try:
        # What we found is kept: a mismatch marks the instance corrupt for every
        # retrieve path, a match counts as this period's verification.
        record(archive.index, row, check, "storage commitment")
    except IndexUnavailable as exc:
        log.error("storage commitment: cannot record the check of %s: %s", sop_instance_uid, exc)
    if check.finding is Finding.MISMATCH:
        return fail(CommitFailure.CHECKSUM_MISMATCH, check.detail)
    if not check.ok:
        return fail(CommitFailure.FILE_MISSING, check.detail)
    return CommitResult(sop_class_uid, sop_instance_uid)


def verify_references(archive, references: Iterable[tuple[str, str]]) -> list[CommitResult]:
    """Check each (SOP Class UID, SOP Instance UID) now; one result per reference,
    in order. A file referenced twice is hashed once."""
    seen: dict[tuple[str, str], CommitResult] = {}
    results = []
    for sop_class_uid, sop_instance_uid in references:
        key = (clean_uid(sop_class_uid), clean_uid(sop_instance_uid))
        if key not in seen:
            seen[key] = _check(archive, *key)
            if not seen[key].committed:
                log.warning("storage commitment: %s not committed (%s: %s)", key[1] or "(no UID)",
                            seen[key].failure.value, seen[key].detail)
        results.append(seen[key])
    return results
