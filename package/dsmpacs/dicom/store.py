"""Storage SCP (C-STORE), for every storage SOP class, private ones included."""
from __future__ import annotations

import logging

from pydicom.dataset import Dataset

from dsmpacs.archive import Archive
from dsmpacs.archive.access import AccessPolicy, Action
from dsmpacs.archive.audit import AuditAction
from dsmpacs.archive.database import IndexUnavailable
from dsmpacs.archive.ingest import Origin
from dsmpacs.archive.results import StoreOutcome, StoreResult
from dsmpacs.archive.storage import SpoolWriter, StorageError
from dsmpacs.archive.uids import clean_uid
from dsmpacs.archive.visibility import ae_binding
from dsmpacs.dicom import associations, auditing
from dsmpacs.dicom.associations import peer_of
from dsmpacs.dicom.engine.store_service import fast_store_handler
from dsmpacs.dicom.status import store_status

log = logging.getLogger(__name__)


def _may_store(assoc, policy: AccessPolicy | None) -> tuple[bool, str]:
    """The policy's answer, asked once per association: a registry query on every
    instance of a 2,000-image run would cost more than the rest of the check.
    Registry edits therefore apply from the next association on. No policy means
    the archive itself asked for these instances (C-MOVE or C-GET as the client)."""
    if policy is None:
        return True, ""
    decision = getattr(assoc, associations.STORE_DECISION, None)
    if decision is None:
        decision = policy.allows(Action.STORE, assoc.requestor.ae_title, assoc.requestor.address)
        setattr(assoc, associations.STORE_DECISION, decision)
    return decision


def _binding(assoc, archive: Archive) -> int | None:
    """The institution the calling AE is bound to, asked once per association like
    the policy's answer (a registry query per instance cost about a tenth of a small
    instance's time); a changed binding applies from the next association on."""
    if not hasattr(assoc, associations.AE_BINDING):
        with archive.index.read():
            setattr(assoc, associations.AE_BINDING, ae_binding(assoc.requestor.ae_title))
    return getattr(assoc, associations.AE_BINDING)


@fast_store_handler
def handle_store(event, archive: Archive, policy: AccessPolicy | None) -> Dataset | int:
    """C-STORE. The dataset was streamed to a staged file by dicom/engine/spool.py.

    Statuses:
      0x0000 Success: stored, or an identical copy was already stored (and put in
             place of the stored copy if that was known damaged)
      0xB000 Warning: stored unchanged, but some text could not be decoded in its
             character set (see ErrorComment)
      0xA700 Refused, out of resources: no space, storage root missing or read-only
      0xA701 Refused, out of resources: index database unreachable
      0xA900 Error: the dataset's SOP Class/Instance UID differs from the command's
      0xC000 Error: unreadable dataset, or a missing or invalid (path-like) UID
      0xC111 Error: a different payload under a SOP Instance UID already archived;
             the stored copy was kept and this one quarantined, not archived
      0x0124 Refused: the calling AE may not store (access policy)
      0xC211 Error: unable to process (an unexpected failure; see the log)
    """
    req = event.request
    spool = getattr(req, "_dataset_file", None)
    uids = dict(sop_class_uid=clean_uid(req.AffectedSOPClassUID)[:64],
                sop_instance_uid=clean_uid(req.AffectedSOPInstanceUID)[:64])
    if not isinstance(spool, SpoolWriter):
        # Chunked receive is installed for our AE; anything else is a wiring bug.
        log.error("C-STORE dataset was not spooled to storage; refusing")
        return store_status(StoreResult(StoreOutcome.OUT_OF_RESOURCES, "internal spool error", **uids))
    calling = event.assoc.requestor.ae_title
    try:
        allowed, reason = _may_store(event.assoc, policy)
    except IndexUnavailable as exc:
        spool.abandon()
        log.warning("refused %s from %s (%s): %s", uids["sop_instance_uid"], calling,
                    peer_of(event.assoc), exc)
        return store_status(StoreResult(StoreOutcome.INDEX_UNAVAILABLE, "index database unreachable",
                                        **uids))
    if not allowed:
        spool.abandon()
        associations.count(event.assoc, "C-STORE", ok=False)
        log.warning("refused %s from %s (%s): %s", uids["sop_instance_uid"], calling,
                    peer_of(event.assoc), reason)
        # Like a refused C-FIND: an access-denied record (once per AE and address for a
        # while, not per instance), besides the association's store record.
        auditing.for_archive(archive).refused(
            AuditAction.ACCESS_DENIED, calling, str(event.assoc.acceptor.ae_title),
            event.assoc.requestor.address, "C-STORE", reason)
        return store_status(StoreResult(StoreOutcome.REFUSED, "calling AE may not store", **uids))
    try:
        binding = _binding(event.assoc, archive)
    except IndexUnavailable as exc:
        spool.abandon()
        log.warning("refused %s from %s (%s): %s", uids["sop_instance_uid"], calling,
                    peer_of(event.assoc), exc)
        return store_status(StoreResult(StoreOutcome.INDEX_UNAVAILABLE, "index database unreachable",
                                        **uids))
    origin = Origin("dicom", calling, peer_of(event.assoc), binding=binding, binding_known=True)
    try:
        # From here the ingest owns the file, whatever the outcome (SpoolWriter.handed_over).
        staged = spool.staged(sync=False)     # written back while the ingest checks it
    except StorageError as exc:
        result = StoreResult(StoreOutcome.OUT_OF_RESOURCES, str(exc), **uids)
        log.warning("refused %s from %s: %s", uids["sop_instance_uid"], peer_of(event.assoc), exc)
        associations.count(event.assoc, "C-STORE", ok=False)
        return store_status(result)
    result = archive.ingest.store(staged, origin, expected_sop_class_uid=req.AffectedSOPClassUID,
                                  expected_sop_instance_uid=req.AffectedSOPInstanceUID)
    associations.count(event.assoc, "C-STORE", ok=result.archived, warning=result.outcome.is_warning,
                       size=staged.size)
    return store_status(result)
