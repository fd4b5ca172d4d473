"""Query/Retrieve C-MOVE SCP (Patient Root and Study Root), to registered destinations only."""
from __future__ import annotations

import logging

from dsmpacs.archive import Archive
from dsmpacs.archive.audit import AuditAction
from dsmpacs.archive.institutions import destination_refusal
from dsmpacs.archive.peers import Peer, PeerRegistry
from dsmpacs.archive.retrieve import (
    Batch,
    StoredInstance,
    plan_batches,
)
from dsmpacs.dicom import auditing, sender
from dsmpacs.dicom.connect import AssociationFailed, failure
from dsmpacs.dicom.retrieve_service import (
    MOVE_DESTINATION_UNKNOWN,
    NOT_AUTHORIZED,
    REFUSED_NO_SUBOPERATIONS,
    RetrieveCall,
    authorized,
    matched_instances,
    run_suboperations,
    suboperation_handler,
)

log = logging.getLogger(__name__)


@suboperation_handler
def handle_move(call: RetrieveCall, archive: Archive) -> None:
    """C-MOVE: send the selected instances to a registered move destination.

    The sub-operations run on a new association to the destination, one C-STORE
    per instance with the requester's AE title and message ID as Move
    Originator; dicom/sender.py chooses the transfer syntax of each.

    Statuses:
      0xFF00 Pending: after each sub-operation, with the remaining, completed,
             failed and warning counts
      0x0000 Success: every sub-operation completed (also when nothing matched)
      0xB000 Warning: sub-operations complete with one or more failures or
             warnings; FailedSOPInstanceUIDList lists the failed instances. An
             instance marked corrupt in storage (archive/integrity.py) is never
             sent: its sub-operation counts as failed
      0xA702 Refused, out of resources: every sub-operation failed, or the move
             destination could not be reached
      0xA701 Refused, out of resources: the index is unreachable, or more than
             65535 instances matched
      0xA801 Refused: move destination unknown (not registered as one)
      0xA900 Error: the identifier does not match the SOP class (level, keys)
      0x0124 Refused: not authorised (the calling AE may not retrieve, or the
             move destination is bound to an institution and a matched study
             belongs to another; nothing is sent)
      0xFE00 Cancel: C-CANCEL received; counts and failed instances so far
      0xC000 Error: unable to process (unexpected failure, see the log)
    """
    registry = PeerRegistry(archive.index)
    if not authorized(call, archive, registry):
        return
    destination_title = str(call.request.MoveDestination or "").strip()
    destination = registry.move_destination(destination_title) if destination_title else None
    if destination is None:
        log.warning("C-MOVE from %s refused: %r is not a registered move destination", call.peer,
                    destination_title)
        call.final(MOVE_DESTINATION_UNKNOWN, comment=f"unknown move destination {destination_title}")
        return
    instances = matched_instances(call, archive, f" to {destination_title}")
    if instances is None:
        return
    # A destination bound to a hospital receives that hospital's studies only (once
    # per request, one indexed query).
    refusal = destination_refusal(archive.index, destination_title, {i.study_instance_uid for i in instances})
    if refusal is not None:
        log.warning("C-MOVE from %s refused: %s", call.peer, refusal)
        auditing.for_archive(archive).refused(AuditAction.ACCESS_DENIED, call.calling_ae,
                                              str(call.assoc.acceptor.ae_title), call.address,
                                              f"C-MOVE to {destination_title}", refusal)
        call.final(NOT_AUTHORIZED, comment=refusal[:64])
        return

    log.info("C-MOVE from %s: %d instances to %s (%s)", call.peer, len(instances), destination_title,
             destination)
    link = _DestinationLink(call, archive, destination, plan_batches(instances))
    try:
        if not link.open(0):
            log.warning("C-MOVE from %s: cannot associate with %s", call.peer, destination)
            call.final(REFUSED_NO_SUBOPERATIONS, comment="move destination cannot be reached")
            return
        run_suboperations(call, instances, link.send)
    finally:
        link.close()


class _DestinationLink:
    """The association(s) to the move destination. One unless the instances need
    more presentation contexts than one association can carry; then one per
    batch, opened in turn."""

    def __init__(self, call: RetrieveCall, archive: Archive, destination: Peer, batches: list[Batch]):
        self.call = call
        self.archive = archive
        self.destination = destination
        self.batches = batches
        self.batch_of = {i.sop_instance_uid: n for n, b in enumerate(batches) for i in b.instances}
        self.current = -1
        self.assoc = None
        self.sender: sender.InstanceSender | None = None
        self.unreachable = ""

    def open(self, batch: int) -> bool:
        self.close()
        self.current = batch
        d = self.destination
        try:
            self.assoc = sender.open_batch(self.call.assoc.ae, d, self.batches[batch].contexts)
        except AssociationFailed as exc:     # marked TLS, but no TLS set up here
            self.unreachable = str(exc)
            return False
        if not self.assoc.is_established:
            self.unreachable = failure(self.assoc, d)
            return False
        self.sender = sender.InstanceSender(self.assoc, self.archive.storage,
                                            originator_ae=self.call.calling_ae,
                                            originator_message_id=self.call.message_id,
                                            refuse=lambda i: self.archive.refusal(i, "C-MOVE"))
        return True

    def send(self, instance: StoredInstance) -> sender.SubOperation:
        batch = self.batch_of[instance.sop_instance_uid]
        if batch != self.current and not self.open(batch):
            log.warning("C-MOVE: cannot associate with %s for batch %d: %s", self.destination, batch,
                        self.unreachable)
        if self.sender is None:
            return sender.SubOperation(instance.sop_instance_uid, sender.NOT_SENT,
                                       message=self.unreachable)
        return self.sender.send(instance)

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()
        self.assoc = None
        self.sender = None
