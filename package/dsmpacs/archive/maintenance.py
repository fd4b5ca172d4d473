"""Verify, reindex and crash recovery: the archive checking itself against its files."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

from dsmpacs.archive.attributes import extract
from dsmpacs.archive.index import InstanceExists, StoredFile
from dsmpacs.archive.ingest import SERIES_INSTANCE_UID, SOP_INSTANCE_UID, STUDY_INSTANCE_UID
from dsmpacs.archive.integrity import Finding, Recorder, hash_check
from dsmpacs.archive.models import Instance, Patient, Series, Study
from dsmpacs.archive.part10 import InvalidDataset, ascii_value, read_header
from dsmpacs.archive.storage import StagedFile
from dsmpacs.archive.uids import is_valid_uid

log = logging.getLogger(__name__)
Progress = Callable[[int], None]
# Quarantine reasons as stored (web/labels.py translates them).
DUPLICATE_REASON = "second file with an already indexed SOP Instance UID"
ORPHAN_REASON = "published but not indexed (interrupted store)"


@dataclass
class VerifyReport:
    checked: int = 0
    missing: list[str] = field(default_factory=list)      # SOP Instance UIDs
    mismatched: list[str] = field(default_factory=list)   # altered or unreadable files
    orphans: list[str] = field(default_factory=list)      # published files without an index row

    @property
    def ok(self) -> bool:
        return not self.missing and not self.mismatched and not self.orphans


def verify(archive, progress: Progress | None = None) -> VerifyReport:
    """Re-hash every indexed file and compare size and SHA-256 with the index. A
    mismatch marks the instance corrupt (archive/integrity.py), a match clears an
    earlier mark. Then list the published files that no index row names: reported,
    never deleted (an administrator decides; `reindex` would take them in)."""
    report = VerifyReport()
    recorder = Recorder(archive.index, "verify")
    for row in archive.index.iter_instances():
        report.checked += 1
        check = hash_check(archive.storage, row.path, row.size, row.sha256)
        recorder.add(row, check)
        if check.finding is Finding.MISSING:
            report.missing.append(row.sop_instance_uid)
        elif not check.ok:
            report.mismatched.append(row.sop_instance_uid)
        if progress:
            progress(1)
    recorder.flush()
    report.orphans = find_orphans(archive)
    for relpath in report.orphans:
        log.warning("verify: %s is in storage but not in the index", relpath)
    return report


def find_orphans(archive, newest_days: int | None = None) -> list[str]:
    """Published files (relative paths) that no index row refers to."""
    orphans: list[str] = []
    chunk: list[str] = []

    def flush() -> None:
        indexed = archive.index.indexed_paths(chunk)
        orphans.extend(p for p in chunk if p not in indexed)
        chunk.clear()

    for relpath in archive.storage.iter_published(newest_days=newest_days):
        chunk.append(relpath)
        if len(chunk) >= 500:
            flush()
    if chunk:
        flush()
    return orphans


@dataclass
class ReindexReport:
    indexed: int = 0
    unreadable: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


def _index_file(archive, relpath: str, origin: str) -> str:
    """Index one published file; returns "indexed", "unreadable" or "duplicate"."""
    path = archive.storage.path(relpath)
    try:
        header = read_header(path)
    except InvalidDataset:
        return "unreadable"
    ds = header.dataset
    if not all(is_valid_uid(ascii_value(ds, tag))
               for tag in (SOP_INSTANCE_UID, STUDY_INSTANCE_UID, SERIES_INSTANCE_UID)):
        return "unreadable"
    size, digest = archive.storage.hash_file(relpath)
    stored = StoredFile(relpath, size, digest, header.dataset_offset, header.transfer_syntax_uid)
    extracted = extract(ds, lambda elem: header.deferred_value(elem, path))
    try:
        archive.index.add_instance(extracted, stored, origin=origin,
                                   calling_ae=str(header.meta.get("SourceApplicationEntityTitle", "")))
    except InstanceExists:
        return "duplicate"
    return "indexed"


def reindex(archive, progress: Progress | None = None) -> ReindexReport:
    """Rebuild patient, study, series and instance rows from the files alone.
    Other tables (remote AEs, users, quarantine records) are kept."""
    with archive.index.write():
        for model in (Instance, Series, Study, Patient):
            model.delete().execute()
    report = ReindexReport()
    for relpath in archive.storage.iter_published():
        outcome = _index_file(archive, relpath, "reindex")
        if outcome == "indexed":
            report.indexed += 1
        elif outcome == "duplicate":
            report.duplicates.append(relpath)
            _to_quarantine(archive, relpath, DUPLICATE_REASON, "duplicate")
        else:
            report.unreadable.append(relpath)
            log.error("reindex: %s is not a readable instance", relpath)
        if progress:
            progress(1)
    return report


def _to_quarantine(archive, relpath: str, reason: str, label: str = "orphan") -> str:
    path = archive.storage.path(relpath)
    size = path.stat().st_size
    qpath = archive.storage.quarantine(StagedFile(path, size, ""), label)
    archive.index.add_quarantine(sop_instance_uid="", sop_class_uid="", path=qpath, reason=reason,
                                 size=size, sha256="", calling_ae="", origin="recovery")
    log.warning("moved %s to %s: %s", relpath, qpath, reason)
    return qpath


def quarantine_orphans(archive, newest_days: int = 2) -> int:
    """Files published but never indexed (a crash between rename and commit) were
    never acknowledged. Move them out of the archive so they cannot be served,
    but keep them for an administrator. Only the newest day directories can hold
    such files from the last run."""
    orphans = find_orphans(archive, newest_days=newest_days)
    for relpath in orphans:
        _to_quarantine(archive, relpath, ORPHAN_REASON)
    return len(orphans)
