"""Storage Commitment Push Model SCP: N-ACTION in, N-EVENT-REPORT out.

The N-ACTION is answered at once; the instances are checked afterwards
(archive/commitment.py re-hashes every file) on a worker thread, and the
result goes back as an N-EVENT-REPORT:

* on the same association when it is still open and the requester has not
  asked to release it. The worker starts only once pynetdicom has handed our
  N-ACTION response to the network layer (EVT_DIMSE_SENT), so the report
  follows the response;
* otherwise on a new association to the requester's registered AE, where this
  archive is the association requestor and proposes the SCP role for the SOP
  class (PS3.4 J.3.3.1.2 note 1, PS3.7 D.3.3.4).

pynetdicom cannot send from inside a handler without racing its own reply,
hence the thread.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pynetdicom import build_context, build_role, evt
from pynetdicom.pdu_primitives import A_RELEASE
from pynetdicom.sop_class import StorageCommitmentPushModel, StorageCommitmentPushModelInstance

from dsmpacs.archive import Archive
from dsmpacs.archive.access import AccessPolicy, Action
from dsmpacs.archive.commitment import CommitFailure, CommitResult, verify_references
from dsmpacs.archive.peers import Peer, PeerRegistry
from dsmpacs.archive.uids import clean_uid, is_valid_uid
from dsmpacs.dicom.associations import peer_of

log = logging.getLogger(__name__)

SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
NO_SUCH_ACTION = 0x0123
INVALID_ARGUMENT_VALUE = 0x0115
NOT_AUTHORIZED = 0x0124
REQUEST_STORAGE_COMMITMENT = 1          # Action Type ID
EVENT_ALL_COMMITTED = 1                 # Event Type IDs
EVENT_FAILURES = 2

# FailureReason (0008,1197) values, PS3.3 C.14.1.1.
FAILURE_REASON: dict[CommitFailure, int] = {
    CommitFailure.INVALID_UID: 0x0112,            # no such object instance
    CommitFailure.NO_SUCH_INSTANCE: 0x0112,
    CommitFailure.CLASS_MISMATCH: 0x0119,         # class / instance conflict
    CommitFailure.FILE_MISSING: 0x0110,           # processing failure
    CommitFailure.CHECKSUM_MISMATCH: 0x0110,
    CommitFailure.CONFLICT_QUARANTINED: 0x0110,
    CommitFailure.INDEX_UNAVAILABLE: 0x0213,      # resource limitation
}
REPORT_ATTEMPTS = (0.0, 5.0, 30.0)      # seconds to wait before each new-association attempt
# A requester that wants the report on a new association releases within
# milliseconds of our N-ACTION response; one that waits keeps the association
# open. Letting this much time pass after the response tells the two apart
# (while our report is being sent, the release could not be processed).
RELEASE_GRACE = 0.5
# A requester that stays open answers an N-EVENT-REPORT at once; past this the
# report goes to a new association instead.
SAME_ASSOCIATION_TIMEOUT = 15.0
_JOBS = "_dsmpacs_commitment_jobs"


def install(ae) -> None:
    ae.add_supported_context(StorageCommitmentPushModel)


@dataclass
class CommitmentJob:
    archive: Archive
    assoc: object
    message_id: int
    transaction_uid: str
    references: list[tuple[str, str]]
    calling_ae: str
    address: str
    peer: str
    started: float = 0.0                # monotonic time our N-ACTION response went out
    done: threading.Event = field(default_factory=threading.Event)


def handle_n_action(event, archive: Archive):
    """N-ACTION (Request Storage Commitment). The answer only acknowledges the
    request; the commitment result follows in an N-EVENT-REPORT (Event Type 1:
    all committed; 2: with a FailedSOPSequence whose FailureReason is 0x0112 no
    such instance, 0x0119 SOP class differs, 0x0110 file missing, altered or in
    conflict with a quarantined copy, 0x0213 index unreachable).

    Statuses:
      0x0000 Success: request accepted; the N-EVENT-REPORT follows
      0x0123 Failure: no such action (Action Type ID is not 1)
      0x0115 Failure: invalid argument value (Transaction UID or Referenced SOP
             Sequence missing or malformed)
      0x0124 Failure: not authorised (the calling AE is not registered, or may
             not store)
      0x0110 Failure: processing failure (unreadable Action Information)
    """
    assoc = event.assoc
    calling_ae = str(assoc.requestor.ae_title).strip()
    address = str(assoc.requestor.address)
    peer = f"{calling_ae} ({peer_of(assoc)})"
    allowed, reason = AccessPolicy(archive.settings, PeerRegistry(archive.index)).allows(
        Action.COMMIT, calling_ae, address)
    if not allowed:
        log.warning("storage commitment refused for %s: %s", peer, reason)
        return NOT_AUTHORIZED, None
    if event.action_type != REQUEST_STORAGE_COMMITMENT:
        log.warning("storage commitment from %s: unknown action type %s", peer, event.action_type)
        return NO_SUCH_ACTION, None
    try:
        info = event.action_information
        transaction_uid = clean_uid(info.get("TransactionUID", ""))
        items = info.get("ReferencedSOPSequence") or []
        references = [(clean_uid(item.get("ReferencedSOPClassUID", "")),
                       clean_uid(item.get("ReferencedSOPInstanceUID", ""))) for item in items]
    except Exception as exc:
        log.warning("storage commitment from %s: unreadable action information: %s", peer, exc)
        return PROCESSING_FAILURE, None
    if not is_valid_uid(transaction_uid) or not references:
        log.warning("storage commitment from %s: Transaction UID or Referenced SOP Sequence missing", peer)
        return INVALID_ARGUMENT_VALUE, None

    job = CommitmentJob(archive, assoc, int(event.request.MessageID), transaction_uid, references,
                        calling_ae, address, peer)
    jobs = getattr(assoc, _JOBS, None)
    if jobs is None:
        jobs = []
        setattr(assoc, _JOBS, jobs)
        assoc.bind(evt.EVT_DIMSE_SENT, _start_after_response)
    jobs.append(job)
    log.info("storage commitment %s from %s: %d instances", transaction_uid, peer, len(references))
    return SUCCESS, None


def _start_after_response(event) -> None:
    """EVT_DIMSE_SENT: once our N-ACTION response is on its way, check and report."""
    message = event.message
    if type(message).__name__ != "N_ACTION_RSP":
        return
    responded_to = message.command_set.get("MessageIDBeingRespondedTo")
    for job in getattr(event.assoc, _JOBS, []):
        if not job.started and job.message_id == responded_to:
            job.started = time.monotonic()
            threading.Thread(target=run_job, args=(job,), name=f"commitment-{job.transaction_uid[-12:]}",
                             daemon=True).start()


def event_report(transaction_uid: str, results: list[CommitResult], retrieve_ae: str) -> tuple[int, Dataset]:
    """(Event Type ID, Event Information) for the N-EVENT-REPORT (PS3.4 J.3.3)."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    ds.RetrieveAETitle = retrieve_ae
    committed, failed = [], []
    for result in results:
        item = Dataset()
        item.ReferencedSOPClassUID = result.sop_class_uid
        item.ReferencedSOPInstanceUID = result.sop_instance_uid
        if result.committed:
            committed.append(item)
        else:
            item.FailureReason = FAILURE_REASON[result.failure]
            failed.append(item)
    if committed:
        ds.ReferencedSOPSequence = committed
    if failed:
        ds.FailedSOPSequence = failed
    return (EVENT_FAILURES if failed else EVENT_ALL_COMMITTED), ds


def run_job(job: CommitmentJob) -> None:
    try:
        results = verify_references(job.archive, job.references)
        event_type, info = event_report(job.transaction_uid, results, job.archive.settings.ae_title)
        ok = sum(r.committed for r in results)
        log.info("storage commitment %s for %s: %d committed, %d failed", job.transaction_uid, job.peer,
                 ok, len(results) - ok)
        if not _report_on_same_association(job, event_type, info):
            _report_on_new_association(job, event_type, info)
    except Exception:
        log.exception("storage commitment %s for %s failed", job.transaction_uid, job.peer)
    finally:
        job.done.set()


def _releasing(assoc) -> bool:
    return not assoc.is_established or isinstance(assoc.dul.peek_next_pdu(), A_RELEASE)


def _report_on_same_association(job: CommitmentJob, event_type: int, info: Dataset) -> bool:
    assoc = job.assoc
    while time.monotonic() < job.started + RELEASE_GRACE:
        if _releasing(assoc):
            return False
        time.sleep(0.01)
    if _releasing(assoc):
        return False
    previous = assoc.dimse_timeout
    assoc.dimse_timeout = min(previous or SAME_ASSOCIATION_TIMEOUT, SAME_ASSOCIATION_TIMEOUT)
    try:
        status, _reply = assoc.send_n_event_report(info, event_type, StorageCommitmentPushModel,
                                           StorageCommitmentPushModelInstance, msg_id=1)
    except (RuntimeError, ValueError) as exc:
        log.info("storage commitment %s: same association unusable (%s)", job.transaction_uid, exc)
        return False
    finally:
        assoc.dimse_timeout = previous
    if int(status.get("Status", -1)) == SUCCESS:
        log.info("storage commitment %s reported to %s on the same association", job.transaction_uid,
                 job.peer)
        return True
    log.warning("storage commitment %s: report on the same association not acknowledged (%s)",
                job.transaction_uid, status.get("Status", "no response"))
    return False


def _report_on_new_association(job: CommitmentJob, event_type: int, info: Dataset) -> None:
    from dsmpacs.dicom.connect import AssociationFailed, failure, open_association
    from dsmpacs.dicom.scu import client_ae

    peer: Peer | None = AccessPolicy(job.archive.settings, PeerRegistry(job.archive.index)).peer_for(
        job.calling_ae, job.address)
    if peer is None:
        log.error("storage commitment %s: %s is not registered; the result cannot be reported",
                  job.transaction_uid, job.peer)
        return
    ae = client_ae(job.archive.settings)
    wait = threading.Event()
    for attempt, delay in enumerate(REPORT_ATTEMPTS, 1):
        if delay:
            wait.wait(delay)
        # This archive requests the association but is the SCP of the SOP class.
        try:
            assoc = open_association(ae, peer, required=False,
                                     contexts=[build_context(StorageCommitmentPushModel)],
                                     ext_neg=[build_role(StorageCommitmentPushModel, scp_role=True)])
        except AssociationFailed as exc:      # marked TLS, but no TLS set up here
            log.error("storage commitment %s: %s", job.transaction_uid, exc)
            return
        if not assoc.is_established:
            log.warning("storage commitment %s: cannot associate with %s (attempt %d): %s",
                        job.transaction_uid, peer, attempt, failure(assoc, peer))
            continue
        try:
            status, _reply = assoc.send_n_event_report(info, event_type, StorageCommitmentPushModel,
                                               StorageCommitmentPushModelInstance, msg_id=1)
        except (RuntimeError, ValueError) as exc:
            log.warning("storage commitment %s: %s refused the report context: %s", job.transaction_uid,
                        peer, exc)
            status = Dataset()
        finally:
            if assoc.is_established:
                assoc.release()
        if int(status.get("Status", -1)) == SUCCESS:
            log.info("storage commitment %s reported to %s on a new association", job.transaction_uid, peer)
            return
        log.warning("storage commitment %s: %s answered the report with %s (attempt %d)",
                    job.transaction_uid, peer, status.get("Status", "no response"), attempt)
    log.error("storage commitment %s: the result could not be delivered to %s", job.transaction_uid, peer)
