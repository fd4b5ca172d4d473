"""The single store path, used by C-STORE, STOW-RS and import.

Order of work for one instance, and why:

1. The caller hands over a *staged* Part 10 file: complete, hashed, in the
   storage tmp dir (C-STORE streams straight into it; STOW-RS and import
   rebuild the envelope around the original dataset bytes). Its fsync runs in
   the background while the header is parsed, and is waited for before step 4.
2. The header is parsed (up to Pixel Data) and checked: readable, UIDs
   present and syntactically valid, and equal to what the command announced.
3. The file is renamed to a generated path; the directory's fsync starts.
4. The index rows are inserted while both fsyncs finish; the transaction
   commits only once they have. A duplicate SOP Instance UID shows here, by
   the unique key, and is settled against the archived copy. If the commit
   fails the file is removed, so an instance is either complete in both places
   or in neither.

Only after step 4 does the caller answer success.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from dsmpacs.archive.attributes import Level, extract
from dsmpacs.archive.database import IndexUnavailable
from dsmpacs.archive.index import Index, InstanceExists, StoredFile
from dsmpacs.archive.models import Instance
from dsmpacs.archive.part10 import Header, InvalidDataset, file_meta_bytes, read_header
from dsmpacs.archive.results import StoreOutcome, StoreResult
from dsmpacs.archive.storage import StagedFile, Storage, StorageError
from dsmpacs.archive.uids import clean_uid, is_valid_uid
from dsmpacs.archive.validation import dataset_problem

log = logging.getLogger(__name__)
_COMPARE_CHUNK = 1 << 20
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


@dataclass(frozen=True)
class Origin:
    """Who sent an instance, for the index and the logs."""
    kind: str              # dicom, stow, import, reindex
    calling_ae: str = ""
    peer: str = ""         # address or user, for logs

    def __str__(self) -> str:
        who = " ".join(x for x in (self.calling_ae, self.peer) if x)
        return f"{self.kind}({who})" if who else self.kind


class Ingest:
    def __init__(self, storage: Storage, index: Index, duplicate_policy: str = "keep-first"):
        self.storage = storage
        self.index = index
        self.duplicate_policy = duplicate_policy

    # --- entry points --------------------------------------------------------
    def store(self, staged: StagedFile, origin: Origin, *, expected_sop_class_uid: str | None = None,
              expected_sop_instance_uid: str | None = None) -> StoreResult:
        """Archive a staged file. The staged file is always consumed (moved or removed)."""
        try:
            result = self._store(staged, origin, expected_sop_class_uid, expected_sop_instance_uid)
        except BaseException:
            self.storage.discard(staged)
            raise
        if staged.path.exists():        # refused: nothing of it may stay behind
            self.storage.discard(staged)
        self._log(result, origin)
        return result

    def import_file(self, source: Path, origin: Origin) -> StoreResult:
        """Copy a Part 10 (or bare) file into the archive through ``store``."""
        try:
            staged = self.restage(source, source_ae=origin.calling_ae)
        except InvalidDataset as exc:
            result = StoreResult(StoreOutcome.INVALID_DATASET, str(exc))
            self._log(result, origin, source)
            return result
        except StorageError as exc:
            result = StoreResult(StoreOutcome.OUT_OF_RESOURCES, str(exc))
            self._log(result, origin, source)
            return result
        return self.store(staged, origin)

    def restage(self, source: Path, source_ae: str = "") -> StagedFile:
        """Stage ``source`` with a fresh zero preamble and file meta around its
        unchanged dataset bytes (an upload's preamble may be anything)."""
        header = read_header(source)
        sop_class, sop_instance = _sop_uids(header)
        if not sop_class or not sop_instance:
            raise InvalidDataset("SOP Class UID or SOP Instance UID missing")
        if sop_class == MEDIA_STORAGE_DIRECTORY:
            raise InvalidDataset("a DICOMDIR is a media index, not an instance")
        head = file_meta_bytes(sop_class, sop_instance, header.transfer_syntax_uid, source_ae or None)
        with open(source, "rb") as fh:
            fh.seek(header.dataset_offset)
            return self.storage.stage_stream(head, fh)

    # --- the store path --------------------------------------------------------
    def _store(self, staged: StagedFile, origin: Origin, expected_class: str | None,
               expected_instance: str | None) -> StoreResult:
        pending_sync = self.storage.start_sync(staged)
        try:
            header = read_header(staged.path)
        except InvalidDataset as exc:
            return StoreResult(StoreOutcome.INVALID_DATASET, str(exc))
        sop_class, sop_instance = _sop_uids(header)
        ids = dict(sop_class_uid=sop_class, sop_instance_uid=sop_instance)

        problem = dataset_problem(staged.path, header) or _uid_problem(header, sop_class, sop_instance)
        if problem:
            return StoreResult(StoreOutcome.INVALID_DATASET, problem, **ids)
        if expected_instance is not None and clean_uid(expected_instance) != sop_instance:
            return StoreResult(StoreOutcome.UID_MISMATCH,
                               f"dataset SOP Instance UID {sop_instance} differs from the "
                               f"command's {clean_uid(expected_instance)[:64]}", **ids)
        if expected_class is not None and clean_uid(expected_class) != sop_class:
            return StoreResult(StoreOutcome.UID_MISMATCH,
                               f"dataset SOP Class UID {sop_class} differs from the command's "
                               f"{clean_uid(expected_class)[:64]}", **ids)

        extracted = extract(header.dataset)
        ids.update(study_instance_uid=str(extracted.values[Level.STUDY]["study_instance_uid"]),
                   series_instance_uid=str(extracted.values[Level.SERIES]["series_instance_uid"]))
        stored = StoredFile("", staged.size, staged.sha256, header.dataset_offset,
                            header.transfer_syntax_uid)
        try:
            self.storage.check_writable()
            relpath, dir_sync = self.storage.publish_pending(staged)
        except StorageError as exc:
            return StoreResult(StoreOutcome.OUT_OF_RESOURCES, str(exc), **ids)

        def durable() -> None:
            # The file's data and its new name reach the disk before the row commits.
            self.storage.finish_sync(pending_sync)
            self.storage.finish_sync(dir_sync)

        # No look-up first: the unique key on SOP Instance UID finds duplicates, which
        # are rare, for the price of one query less on every new instance.
        try:
            self.index.add_instance(extracted, _with_path(stored, relpath), origin=origin.kind,
                                    calling_ae=origin.calling_ae, before_commit=durable)
        except StorageError as exc:
            self.storage.remove(relpath)
            return StoreResult(StoreOutcome.OUT_OF_RESOURCES, str(exc), **ids)
        except InstanceExists:
            # Take the published file back to staging and settle it against the copy
            # already archived (a resend, a conflict, or a concurrent store).
            back = self.storage.tmp_dir / (Path(relpath).stem + ".again")
            os.rename(self.storage.root / relpath, back)
            again = StagedFile(back, staged.size, staged.sha256)
            try:
                existing = self.index.find_instance(sop_instance)
                if existing is None:
                    raise IndexUnavailable("instance vanished during store")
                return self._existing(existing, again, header, extracted, stored, origin, ids)
            except (IndexUnavailable, StorageError) as exc:
                self.storage.discard(again)
                outcome = (StoreOutcome.OUT_OF_RESOURCES if isinstance(exc, StorageError)
                           else StoreOutcome.INDEX_UNAVAILABLE)
                return StoreResult(outcome, str(exc), **ids)
        except IndexUnavailable as exc:
            self.storage.remove(relpath)
            return StoreResult(StoreOutcome.INDEX_UNAVAILABLE, str(exc), **ids)

        if extracted.problems:
            return StoreResult(StoreOutcome.STORED_WITH_WARNINGS,
                               "stored unchanged; index text could not be fully decoded: "
                               + "; ".join(extracted.problems), path=relpath, **ids)
        return StoreResult(StoreOutcome.STORED, path=relpath, **ids)

    def _existing(self, existing: Instance, staged: StagedFile, header: Header, extracted,
                  stored: StoredFile, origin: Origin, ids: dict) -> StoreResult:
        if self._same_dataset(existing, staged, header):
            self.storage.discard(staged)
            return StoreResult(StoreOutcome.DUPLICATE, "identical instance already stored",
                               path=existing.path, **ids)
        if self.duplicate_policy == "overwrite":
            relpath = self.storage.publish(staged)
            try:
                old_path = self.index.replace_instance(existing, extracted, _with_path(stored, relpath),
                                                       origin=origin.kind, calling_ae=origin.calling_ae)
            except IndexUnavailable as exc:
                self.storage.remove(relpath)
                return StoreResult(StoreOutcome.INDEX_UNAVAILABLE, str(exc), **ids)
            self.storage.remove(old_path)
            return StoreResult(StoreOutcome.REPLACED, "replaced the stored copy (overwrite policy)",
                               path=relpath, **ids)
        qpath = self.storage.quarantine(staged, "conflict")
        reason = "different content under an already stored SOP Instance UID"
        try:
            self.index.add_quarantine(sop_instance_uid=ids["sop_instance_uid"],
                                      sop_class_uid=ids["sop_class_uid"], path=qpath, reason=reason,
                                      size=staged.size, sha256=staged.sha256,
                                      calling_ae=origin.calling_ae, origin=origin.kind)
        except IndexUnavailable:
            log.error("quarantined %s but could not record it in the index", qpath)
        return StoreResult(StoreOutcome.CONFLICT_QUARANTINED,
                           f"{reason}; the stored copy was kept and this one quarantined",
                           path=qpath, **ids)

    def _same_dataset(self, existing: Instance, staged: StagedFile, header: Header) -> bool:
        """Equal dataset bytes and transfer syntax; the envelopes may differ."""
        if staged.sha256 == existing.sha256 and staged.size == existing.size:
            return True
        if header.transfer_syntax_uid != existing.transfer_syntax_uid:
            return False
        if staged.size - header.dataset_offset != existing.size - existing.dataset_offset:
            return False
        try:
            with open(staged.path, "rb") as a, self.storage.open(existing.path) as b:
                a.seek(header.dataset_offset)
                b.seek(existing.dataset_offset)
                while True:
                    x, y = a.read(_COMPARE_CHUNK), b.read(_COMPARE_CHUNK)
                    if x != y:
                        return False
                    if not x:
                        return True
        except OSError:
            # The stored copy is unreadable: never call that "identical".
            return False

    def _log(self, result: StoreResult, origin: Origin, source: Path | None = None) -> None:
        what = result.sop_instance_uid or (str(source) if source else "?")
        if result.outcome in (StoreOutcome.STORED, StoreOutcome.DUPLICATE):
            log.debug("%s %s from %s", result.outcome.value, what, origin)
        elif result.outcome.archived:
            log.info("%s %s from %s: %s", result.outcome.value, what, origin, result.message)
        else:
            log.warning("%s %s from %s: %s", result.outcome.value, what, origin, result.message)


def _with_path(stored: StoredFile, relpath: str) -> StoredFile:
    return StoredFile(relpath, stored.size, stored.sha256, stored.dataset_offset,
                      stored.transfer_syntax_uid)


def _sop_uids(header: Header) -> tuple[str, str]:
    ds = header.dataset
    return (clean_uid(ds.get("SOPClassUID", "") or header.meta.get("MediaStorageSOPClassUID", "")),
            clean_uid(ds.get("SOPInstanceUID", "")))


def _uid_problem(header: Header, sop_class: str, sop_instance: str) -> str:
    ds = header.dataset
    checks = {
        "SOP Instance UID": sop_instance,
        "SOP Class UID": sop_class,
        "Study Instance UID": clean_uid(ds.get("StudyInstanceUID", "")),
        "Series Instance UID": clean_uid(ds.get("SeriesInstanceUID", "")),
    }
    for name, value in checks.items():
        if not value:
            return f"{name} is missing"
        if not is_valid_uid(value):
            return f"{name} {value[:80]!r} is not a valid UID"
    if not header.transfer_syntax_uid or not is_valid_uid(header.transfer_syntax_uid):
        return f"transfer syntax {header.transfer_syntax_uid[:80]!r} is not a valid UID"
    return ""
