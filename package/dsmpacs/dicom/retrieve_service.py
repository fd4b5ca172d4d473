"""What C-MOVE and C-GET share: this archive runs the sub-operations.

engine/retrieve_class.py routes each request whose bound handler is marked
``@suboperation_handler`` to ``serve``, which hands the handler a
``RetrieveCall``: the request, a way to answer pending and final responses,
and C-CANCEL state. The handler selects instances (archive/retrieve.py) and
drives the sub-operations with ``run_suboperations``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from io import BytesIO
from typing import Callable

from pydicom.dataset import Dataset
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.dsutils import decode, encode
from pynetdicom.service_class import QueryRetrieveServiceClass
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dsmpacs.archive.access import AccessPolicy, Action
from dsmpacs.archive.audit import AuditAction
from dsmpacs.archive.database import IndexUnavailable
from dsmpacs.archive.peers import PeerRegistry
from dsmpacs.archive.retrieve import RetrieveError, StoredInstance, retrieve_keys, select_instances
from dsmpacs.archive.visibility import Scope
from dsmpacs.dicom import auditing
from dsmpacs.dicom.engine.retrieve_class import suboperation_handler  # noqa: F401 (re-exported)
from dsmpacs.dicom.sender import SubOperation

log = logging.getLogger(__name__)

PENDING = 0xFF00
SUCCESS = 0x0000
WARNING_SUBOPERATIONS = 0xB000          # complete, one or more failures or warnings
REFUSED_NO_MATCH_COUNT = 0xA701         # out of resources: unable to calculate matches
REFUSED_NO_SUBOPERATIONS = 0xA702       # out of resources: unable to perform sub-operations
MOVE_DESTINATION_UNKNOWN = 0xA801
IDENTIFIER_MISMATCH = 0xA900
NOT_AUTHORIZED = 0x0124
CANCELLED = 0xFE00
UNABLE_TO_PROCESS = 0xC000
# Sub-operation counts are US: a final response cannot report more.
MAX_SUBOPERATIONS = 65535
# FailedSOPInstanceUIDList is UI, whose explicit-VR length field has 16 bits.
_MAX_FAILED_LIST_CHARS = 65000

@dataclass
class Counts:
    remaining: int = 0
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)

    def record(self, result: SubOperation) -> None:
        self.remaining -= 1
        if result.category == "success":
            self.completed += 1
        elif result.category == "warning":
            self.warning += 1
        else:
            self.failed += 1
            self.failed_uids.append(result.sop_instance_uid)


class RetrieveCall:
    """One C-MOVE or C-GET request and the means to answer it."""

    def __init__(self, service: QueryRetrieveServiceClass, request, context, kind: str):
        self.service = service
        self.assoc = service.assoc
        self.request = request
        self.context = context
        self.kind = kind                          # "C-MOVE" or "C-GET"
        self.answered = False
        self._transfer_syntax = context.transfer_syntax[0]

    # --- who asks, and for what ----------------------------------------------
    @property
    def calling_ae(self) -> str:
        return str(self.assoc.requestor.ae_title).strip()

    @property
    def address(self) -> str:
        return str(self.assoc.requestor.address)

    @property
    def peer(self) -> str:
        return f"{self.calling_ae} ({self.address}:{self.assoc.requestor.port})"

    @property
    def message_id(self) -> int:
        return int(self.request.MessageID)

    @property
    def patient_root(self) -> bool:
        return str(self.context.abstract_syntax) in (PatientRootQueryRetrieveInformationModelMove,
                                                     PatientRootQueryRetrieveInformationModelGet)

    def identifier(self) -> Dataset:
        """The decoded request identifier; raises ValueError when it cannot be decoded."""
        ts = self._transfer_syntax
        try:
            stream = self.request.Identifier
            stream.seek(0)
            return decode(stream, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
        except Exception as exc:
            raise ValueError(f"identifier cannot be decoded: {exc}") from exc

    @property
    def is_open(self) -> bool:
        return bool(self.assoc.is_established)

    def is_cancelled(self) -> bool:
        return self.service.is_cancelled(self.message_id)

    # --- answering -----------------------------------------------------------
    def _response(self, status: int, counts: Counts | None, *, remaining: bool, comment: str = ""):
        rsp = C_MOVE() if self.kind == "C-MOVE" else C_GET()
        rsp.MessageIDBeingRespondedTo = self.request.MessageID
        rsp.AffectedSOPClassUID = self.request.AffectedSOPClassUID
        rsp.Status = status
        if comment:
            rsp.ErrorComment = comment.encode("ascii", "replace").decode("ascii")[:64]
        if counts is not None:
            if remaining:
                rsp.NumberOfRemainingSuboperations = max(counts.remaining, 0)
            rsp.NumberOfCompletedSuboperations = counts.completed
            rsp.NumberOfFailedSuboperations = counts.failed
            rsp.NumberOfWarningSuboperations = counts.warning
        return rsp

    def _send(self, rsp) -> None:
        if self.assoc.is_established:
            self.service.dimse.send_msg(rsp, self.context.context_id)

    def pending(self, counts: Counts) -> None:
        self._send(self._response(PENDING, counts, remaining=True))

    def final(self, status: int, counts: Counts | None = None, comment: str = "") -> None:
        """The last response. With failures, warnings or a cancel it carries the
        FailedSOPInstanceUIDList identifier (PS3.4 C.4.2.1.4.2)."""
        self.answered = True
        rsp = self._response(status, counts, remaining=status == CANCELLED, comment=comment)
        if counts is not None and status != SUCCESS and (counts.failed or counts.warning
                                                         or status == CANCELLED):
            failed, total = [], 0
            for uid in counts.failed_uids:
                total += len(uid) + 1
                if total > _MAX_FAILED_LIST_CHARS:
                    log.warning("%s from %s: failed instance list truncated to %d UIDs", self.kind,
                                self.peer, len(failed))
                    break
                failed.append(uid)
            ds = Dataset()
            ds.FailedSOPInstanceUIDList = failed
            ts = self._transfer_syntax
            rsp.Identifier = BytesIO(encode(ds, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated))
        self._send(rsp)


def authorized(call: RetrieveCall, archive, registry: PeerRegistry) -> bool:
    """Whether the calling AE may retrieve; answers 0x0124 itself when not."""
    allowed, reason = AccessPolicy(archive.settings, registry).allows(
        Action.RETRIEVE, call.calling_ae, call.address)
    if not allowed:
        log.warning("%s refused for %s: %s", call.kind, call.peer, reason)
        auditing.for_archive(archive).refused(AuditAction.ACCESS_DENIED, call.calling_ae,
                                              str(call.assoc.acceptor.ae_title), call.address,
                                              call.kind, reason)
        call.final(NOT_AUTHORIZED, comment="calling AE may not retrieve")
    return allowed


def _visible(instances: list[StoredInstance], scope: Scope, archive) -> list[StoredInstance]:
    """Only the instances of studies the calling AE's scope holds: a peer bound to an
    institution retrieves what it could find, and another's study matches nothing
    (Success, 0 sub-operations: its existence is not revealed)."""
    if scope.is_everything:
        return instances
    allowed = {uid for uid in {i.study_instance_uid for i in instances} if scope.allows(uid, archive.index)}
    return [i for i in instances if i.study_instance_uid in allowed]


def matched_instances(call: RetrieveCall, archive, what: str = "") -> list[StoredInstance] | None:
    """The instances the identifier selects, or None after answering the final status
    (identifier mismatch, index unavailable, nothing matched, too many to count)."""
    try:
        keys = retrieve_keys(call.identifier(), patient_root=call.patient_root)
        instances = select_instances(archive.index, keys)
        instances = _visible(instances, Scope.for_ae(archive.index, call.calling_ae), archive)
    except (RetrieveError, ValueError) as exc:
        log.warning("%s from %s refused: %s", call.kind, call.peer, exc)
        call.final(IDENTIFIER_MISMATCH, comment=str(exc))
        return None
    except IndexUnavailable as exc:
        log.error("%s from %s: %s", call.kind, call.peer, exc)
        call.final(REFUSED_NO_MATCH_COUNT, comment="index unavailable")
        return None
    if not instances:
        log.info("%s from %s%s: nothing matched", call.kind, call.peer, what)
        call.final(SUCCESS, Counts())
        return None
    if len(instances) > MAX_SUBOPERATIONS:
        log.warning("%s from %s refused: %d instances match", call.kind, call.peer, len(instances))
        call.final(REFUSED_NO_MATCH_COUNT, comment="more than 65535 instances; retrieve by series")
        return None
    return instances


def run_suboperations(call: RetrieveCall, instances: list[StoredInstance],
                      send: Callable[[StoredInstance], SubOperation]) -> Counts:
    """Send each instance, answering Pending after each one, until done or cancelled;
    then the final response. Returns the counts. (When the link to the receiver
    breaks, ``send`` reports each remaining instance as not sent.)"""
    counts = Counts(remaining=len(instances))
    for position, instance in enumerate(instances):
        if not call.is_open:
            log.warning("%s from %s: requester went away after %d of %d sub-operations", call.kind,
                        call.peer, position, len(instances))
            return counts
        if call.is_cancelled():
            log.info("%s from %s cancelled after %d of %d sub-operations", call.kind, call.peer,
                     position, len(instances))
            call.final(CANCELLED, counts)
            return counts
        result = send(instance)
        counts.record(result)
        if result.category != "success":
            log.warning("%s from %s: %s %s: status %s %s", call.kind, call.peer,
                        "warning for" if result.category == "warning" else "failed to send",
                        instance.sop_instance_uid,
                        "not sent" if result.status < 0 else f"0x{result.status:04X}", result.message)
        elif result.converted:
            log.info("%s: sent %s converted to %s (receiver refused the stored transfer syntax)",
                     call.kind, instance.sop_instance_uid, result.transfer_syntax_uid)
        if counts.remaining:
            call.pending(counts)
    if counts.failed == 0 and counts.warning == 0:
        status = SUCCESS
    elif counts.completed == 0 and counts.warning == 0:
        status = REFUSED_NO_SUBOPERATIONS
    else:
        status = WARNING_SUBOPERATIONS
    log.info("%s from %s done: %d completed, %d failed, %d warnings", call.kind, call.peer,
             counts.completed, counts.failed, counts.warning)
    call.final(status, counts)
    return counts


def serve(service: QueryRetrieveServiceClass, kind: str, req, context, handler: Callable,
          args: list) -> None:
    """Run a @suboperation_handler for one request (called by engine/retrieve_class.py);
    answer the final status the handler could not."""
    call = RetrieveCall(service, req, context, kind)
    try:
        handler(call, *args)
    except IndexUnavailable as exc:
        log.error("%s from %s: %s", kind, call.peer, exc)
        if not call.answered:
            call.final(REFUSED_NO_MATCH_COUNT, comment="index unavailable")
    except Exception:
        log.exception("%s handler failed for %s", kind, call.peer)
        if not call.answered:
            call.final(UNABLE_TO_PROCESS, comment="internal error; see the archive log")


RETRIEVE_SOP_CLASSES = (PatientRootQueryRetrieveInformationModelMove,
                        StudyRootQueryRetrieveInformationModelMove,
                        PatientRootQueryRetrieveInformationModelGet,
                        StudyRootQueryRetrieveInformationModelGet)


def install(ae) -> None:
    """Accept the C-MOVE and C-GET SOP classes on ``ae`` (their requests reach
    ``serve`` through engine/retrieve_class.py)."""
    for sop_class in RETRIEVE_SOP_CLASSES:
        ae.add_supported_context(sop_class)
