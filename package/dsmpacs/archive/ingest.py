"""The single store path, used by C-STORE, STOW-RS, import and retrieve.

The staging contract, the same for every entry: the caller hands over a
*staged* Part 10 file (``StagedFile``) in the storage tmp dir, made of our own
file meta and the sender's dataset bytes unchanged, written once and hashed
while written. C-STORE (and the archive's own C-MOVE/C-GET retrieves) stream
the received dataset behind a meta built from the command; STOW-RS builds it
from each part's own meta while the part arrives (archive/staging.py
``Part10Stager``); import copies the dataset from the source behind a new
meta (``restage``) and hands over the header it parsed. The staged file carries
its sync state, so no outcome can forget to wait for it.

Order of work for one instance, and why:

1. The staged file, whose data the kernel has been writing back since its spool
   closed (SpoolWriter.close), is renamed to a generated path
   (Storage.publish_first: the name mostly goes to the disk in the file's own
   journal commit, so the directory's fsync is nearly free). A crash before
   the commit may leave the name with incomplete data, never indexed nor
   acknowledged: start-up recovery quarantines such orphans.
2. Meanwhile the header is parsed, once (unless the stager already parsed
   it), and checked: readable, the whole dataset's structure sound
   (archive/validation.py: every length fits, Pixel Data long enough, a
   deflated dataset inflates within its bound), UIDs present and syntactically
   valid, and equal to what the sender announced (C-STORE command, part meta,
   STOW-RS study in the URL). A refused file is unlinked.
3. The storing thread fsyncs the file, then its directory (SyncOnWait, on
   this thread: no hand-over per instance). Then the index rows are inserted, in
   a transaction shared with the stores arriving at the same moment
   (archive/commits.py, group commit); it commits only once every one of their
   fsyncs has finished. A duplicate SOP
   Instance UID shows here, by the unique key, and is settled against the
   archived copy: an identical resend
   (nothing committed), a replacement under ``duplicate_policy=overwrite``
   (published and fsynced, then committed, then the old copy removed), or a
   conflict (quarantined and fsynced, then recorded). If the commit fails the
   file is removed, so an instance is either complete in both places or in
   neither.

Every outcome, stored or not, is answered only after step 3 (or after the
staged file was removed): file fsync, directory fsync, commit, answer.
tests/test_durability_order.py checks that order on each path.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from dsmpacs.archive.attributes import Level, extract
from dsmpacs.archive.database import IndexUnavailable
from dsmpacs.archive.index import LOOK_UP, Index, InstanceExists, StoredFile, StudyElsewhere
from dsmpacs.archive.integrity import file_problem
from dsmpacs.archive.models import Instance
from dsmpacs.archive.part10 import (
    Header,
    InvalidDataset,
    ascii_value,
    file_meta_bytes,
    parse_header,
    read_header,
)
from dsmpacs.archive.results import StoreOutcome, StoreResult
from dsmpacs.archive.storage import StagedFile, Storage, StorageError
from dsmpacs.archive.uids import clean_uid, is_valid_uid
from dsmpacs.archive.validation import dataset_problem

log = logging.getLogger(__name__)
_COMPARE_CHUNK = 1 << 20
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
SOP_CLASS_UID, SOP_INSTANCE_UID = 0x00080016, 0x00080018
STUDY_INSTANCE_UID, SERIES_INSTANCE_UID = 0x0020000D, 0x0020000E
# The quarantine reason of a conflicting copy, as stored (web/labels.py translates it).
CONFLICT_REASON = "different content under an already stored SOP Instance UID"


@dataclass(frozen=True)
class Origin:
    """Who sent an instance, for the index and the logs."""
    kind: str              # dicom, stow, import, reindex, derived (archive/derived)
    calling_ae: str = ""
    peer: str = ""         # address or user, for logs
    # Where a new study goes when the sender says (STOW-RS into the caller's
    # institution); None: decided by the sending AE or Institution Name
    # (archive/visibility.placement).
    institution: int | None = None
    # The institution the calling AE is bound to (None: unbound), when the entry
    # already asked (once per association, dicom/store.py); else the index asks.
    binding: int | None = None
    binding_known: bool = False

    def __str__(self) -> str:
        who = " ".join(x for x in (self.calling_ae, self.peer) if x)
        return f"{self.kind}({who})" if who else self.kind


class Ingest:
    def __init__(self, storage: Storage, index: Index, duplicate_policy: str = "keep-first"):
        self.storage = storage
        self.index = index
        self.duplicate_policy = duplicate_policy
        # Called with the extracted values (by level) of each newly archived instance and
        # its origin, after its commit: archive/reconcile.py matches studies to orders
        # there. An observer must not raise; what it does never changes the outcome.
        self.observers: list[Callable[[dict, Origin], None]] = []

    # --- entry points --------------------------------------------------------
    def store(self, staged: StagedFile, origin: Origin, *, expected_sop_class_uid: str | None = None,
              expected_sop_instance_uid: str | None = None,
              expected_study_instance_uid: str | None = None) -> StoreResult:
        """Archive a staged file. The staged file is always consumed (moved or removed).
        The expected UIDs are what the sender announced (C-STORE command, STOW-RS part
        meta and URL); a dataset that disagrees is refused as UID_MISMATCH."""
        expected = (expected_sop_class_uid, expected_sop_instance_uid, expected_study_instance_uid)
        try:
            result = self._store(staged, origin, *expected)
        except BaseException:
            self.storage.discard(staged)
            raise
        self._log(result, origin)
        return result

    def import_file(self, source: Path, origin: Origin, *,
                    expected_study_instance_uid: str | None = None) -> StoreResult:
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
        return self.store(staged, origin, expected_study_instance_uid=expected_study_instance_uid)

    def restage(self, source: Path, source_ae: str = "") -> StagedFile:
        """Stage ``source`` with a fresh zero preamble and file meta around its
        unchanged dataset bytes (an upload's preamble may be anything). The header
        parsed here travels with the staged file, so the store does not parse again;
        the fsync is left to the store, once it has checked the file."""
        header = read_header(source)
        sop_class, sop_instance = _sop_uids(header)
        if not sop_class or not sop_instance:
            raise InvalidDataset("SOP Class UID or SOP Instance UID missing")
        head = file_meta_bytes(sop_class, sop_instance, header.transfer_syntax_uid, source_ae or None)
        with open(source, "rb") as fh:
            fh.seek(header.dataset_offset)
            staged = self.storage.stage_stream(head, fh, sync=False)
        # Without the source's bytes: they are not the staged file's, and a STOW-RS
        # upload stages all its instances before storing them.
        return replace(staged, header=replace(header, dataset_offset=len(head), data=None, walked=None,
                                              value_shift=len(head) - header.dataset_offset))

    # --- the store path --------------------------------------------------------
    def _store(self, staged: StagedFile, origin: Origin, expected_class: str | None,
               expected_instance: str | None, expected_study: str | None) -> StoreResult:
        # Published first, so that its data goes to the disk while it is checked (see
        # publish_first).
        relpath, dir_sync, full = "", None, None
        try:
            self.storage.check_writable()
            staged, relpath, dir_sync = self.storage.publish_first(staged)
        except StorageError as exc:
            full = exc
        try:
            return self._checked(staged, origin, expected_class, expected_instance, expected_study,
                                 relpath, dir_sync, full)
        except BaseException:
            if relpath:
                self.storage.discard(staged)
            raise
        finally:
            if not relpath:         # still in the tmp dir: refused, nothing of it may stay
                self.storage.discard(staged)

    def _checked(self, staged: StagedFile, origin: Origin, expected_class: str | None,
                 expected_instance: str | None, expected_study: str | None, relpath: str,
                 dir_sync, full: StorageError | None) -> StoreResult:
        def refused(result: StoreResult) -> StoreResult:
            if relpath:
                self.storage.discard(staged)    # never indexed: no fsync needed to drop it
            return result

        try:
            header = staged.header or _header_of(staged)
        except InvalidDataset as exc:
            if full is not None:
                return StoreResult(StoreOutcome.OUT_OF_RESOURCES, str(full))
            return refused(StoreResult(StoreOutcome.INVALID_DATASET, str(exc)))
        sop_class, sop_instance = _sop_uids(header)
        ids = dict(sop_class_uid=sop_class, sop_instance_uid=sop_instance)
        if full is not None:
            return StoreResult(StoreOutcome.OUT_OF_RESOURCES, str(full), **ids)

        problem = dataset_problem(staged.path, header) or _uid_problem(header, sop_class, sop_instance)
        if problem:
            return refused(StoreResult(StoreOutcome.INVALID_DATASET, problem, **ids))
        mismatch = _announced_mismatch(header, sop_class, sop_instance, expected_class,
                                       expected_instance, expected_study)
        if mismatch:
            return refused(StoreResult(StoreOutcome.UID_MISMATCH, mismatch, **ids))

        extracted = extract(header.dataset, lambda elem: header.deferred_value(elem, staged.path))
        ids.update(study_instance_uid=str(extracted.values[Level.STUDY]["study_instance_uid"]),
                   series_instance_uid=str(extracted.values[Level.SERIES]["series_instance_uid"]))
        stored = StoredFile("", staged.size, staged.sha256, header.dataset_offset,
                            header.transfer_syntax_uid)

        def durable() -> None:
            # The file's data, then its new name, reach the disk before the row commits.
            self.storage.finish_sync(dir_sync)

        # No look-up first: the unique key on SOP Instance UID finds duplicates, which
        # are rare, for the price of one query less on every new instance.
        try:
            # The fsyncs on this thread, before the index's write lock is asked for:
            # the transaction then waits for none of them (``durable`` only checks).
            durable()
            self.index.add_instance(extracted, _with_path(stored, relpath), origin=origin.kind,
                                    calling_ae=origin.calling_ae, before_commit=durable,
                                    institution=origin.institution,
                                    institution_name=_institution_name(header),
                                    binding=origin.binding if origin.binding_known else LOOK_UP)
        except StorageError as exc:
            self.storage.remove(relpath)
            return StoreResult(StoreOutcome.OUT_OF_RESOURCES, str(exc), **ids)
        except InstanceExists:
            # Take the published file back to staging and settle it against the copy
            # already archived (a resend, a conflict, or a concurrent store).
            back = self.storage.tmp_dir / (Path(relpath).stem + ".again")
            os.rename(self.storage.root / relpath, back)
            again = replace(staged, path=back)      # still carries its pending fsync
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
        except StudyElsewhere:
            self.storage.remove(relpath)
            return StoreResult(StoreOutcome.REFUSED, "not stored: the study is outside the sender's institution",
                               **ids)

        for observe in self.observers:
            observe(extracted.values, origin)
        if extracted.problems:
            return StoreResult(StoreOutcome.STORED_WITH_WARNINGS,
                               "stored unchanged; index text could not be fully decoded: "
                               + "; ".join(extracted.problems), path=relpath, **ids)
        return StoreResult(StoreOutcome.STORED, path=relpath, **ids)

    def _existing(self, existing: Instance, staged: StagedFile, header: Header, extracted,
                  stored: StoredFile, origin: Origin, ids: dict) -> StoreResult:
        if staged.sha256 == existing.sha256 and staged.size == existing.size:
            # The very file that was acknowledged: if the stored copy is known bad, this
            # resend is the chance to put it right.
            damage = self._damage(existing)
            if damage:
                return self._repair(existing, staged, damage, ids)
        if self._same_dataset(existing, staged, header):
            # Nothing to commit; still answered only once the received bytes were on
            # disk, like every other outcome (one rule, one order test).
            self.storage.wait_synced(staged)
            self.storage.discard(staged)
            return StoreResult(StoreOutcome.DUPLICATE, "identical instance already stored",
                               path=existing.path, **ids)
        if self.duplicate_policy == "overwrite":
            # Durable (file, then directory) before the commit that drops the old copy.
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
        qpath = self.storage.quarantine(staged, "conflict")     # fsyncs file, then directory
        reason = CONFLICT_REASON
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

    def _damage(self, existing: Instance) -> str:
        """Why the stored copy cannot be served ("" when it can, as far as a stat tells):
        marked corrupt by a re-hash or a retrieve, or missing, unreadable or of the wrong
        size (integrity.file_problem, the test every retrieve makes). A same-size
        alteration not yet found by the verification job is not looked for here (that
        would re-read every resend)."""
        if existing.corrupt:
            return existing.corrupt_reason or "marked corrupt"
        return file_problem(self.storage, existing)

    def _repair(self, existing: Instance, staged: StagedFile, damage: str, ids: dict) -> StoreResult:
        """Put an identical resend in place of a damaged copy: published and fsynced (file,
        then directory), then the row repointed and cleared in one commit, then the damaged
        file removed. Its size and SHA-256 are the ones recorded at the first store, so the
        archive holds again exactly what it acknowledged then."""
        relpath = self.storage.publish(staged)
        try:
            old_path = self.index.repair_instance(existing, relpath)
        except IndexUnavailable as exc:
            self.storage.remove(relpath)
            return StoreResult(StoreOutcome.INDEX_UNAVAILABLE, str(exc), **ids)
        self.storage.remove(old_path)
        log.warning("instance %s: the stored copy was damaged (%s); an identical resend replaced it "
                    "and it is served again", ids["sop_instance_uid"], damage)
        return StoreResult(StoreOutcome.REPAIRED,
                           f"the stored copy was damaged ({damage}); this identical resend replaced it",
                           path=relpath, **ids)

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


def _header_of(staged: StagedFile) -> Header:
    """The staged file's header, from the bytes its spool kept when it was small
    (SpoolWriter.staged), else read from the file."""
    if staged.content is not None:
        return parse_header(staged.content)
    return read_header(staged.path)


def _with_path(stored: StoredFile, relpath: str) -> StoredFile:
    return StoredFile(relpath, stored.size, stored.sha256, stored.dataset_offset,
                      stored.transfer_syntax_uid)


def _institution_name(header: Header) -> str:
    """Institution Name (0008,0080) for placing a new study; "" when absent or unreadable."""
    try:
        return str(header.dataset.get("InstitutionName", "") or "")
    except Exception:      # a sender's odd bytes must never stop a store
        return ""


def _sop_uids(header: Header) -> tuple[str, str]:
    ds = header.dataset
    return (ascii_value(ds, SOP_CLASS_UID) or clean_uid(header.meta.get("MediaStorageSOPClassUID", "")),
            ascii_value(ds, SOP_INSTANCE_UID))


def _announced_mismatch(header: Header, sop_class: str, sop_instance: str, expected_class: str | None,
                        expected_instance: str | None, expected_study: str | None) -> str:
    """Where the dataset disagrees with what its sender announced, in words."""
    study = ascii_value(header.dataset, STUDY_INSTANCE_UID)
    for name, found, announced in (("SOP Instance UID", sop_instance, expected_instance),
                                   ("SOP Class UID", sop_class, expected_class),
                                   ("Study Instance UID", study, expected_study)):
        if announced is not None and clean_uid(announced) != found:
            return f"dataset {name} {found} differs from the announced {clean_uid(announced)[:64]}"
    return ""


def _uid_problem(header: Header, sop_class: str, sop_instance: str) -> str:
    ds = header.dataset
    checks = {
        "SOP Instance UID": sop_instance,
        "SOP Class UID": sop_class,
        "Study Instance UID": ascii_value(ds, STUDY_INSTANCE_UID),
        "Series Instance UID": ascii_value(ds, SERIES_INSTANCE_UID),
    }
    if sop_class == MEDIA_STORAGE_DIRECTORY:
        return "a DICOMDIR is a media index, not an instance"
    for name, value in checks.items():
        if not value:
            return f"{name} is missing"
        if not is_valid_uid(value):
            return f"{name} {value[:80]!r} is not a valid UID"
    if not header.transfer_syntax_uid or not is_valid_uid(header.transfer_syntax_uid):
        return f"transfer syntax {header.transfer_syntax_uid[:80]!r} is not a valid UID"
    return ""
