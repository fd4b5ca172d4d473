"""Query/Retrieve C-GET SCP (Patient Root and Study Root): sub-operations on the
requester's own association."""
from __future__ import annotations

import logging

from dsmpacs.archive import Archive
from dsmpacs.archive.peers import PeerRegistry
from dsmpacs.dicom.retrieve_service import (
    RetrieveCall,
    authorized,
    matched_instances,
    run_suboperations,
    suboperation_handler,
)
from dsmpacs.dicom.sender import InstanceSender

log = logging.getLogger(__name__)


def storage_contexts(assoc) -> list:
    """Accepted contexts on which the requester agreed to be the storage SCP.

    A C-GET requester proposes the storage SOP classes it can receive with an
    SCP/SCU Role Selection item giving itself the SCP role (PS3.7 D.3.3.4); a
    context without one is not a place to send C-STORE requests to it.
    """
    roles = assoc.requestor.role_selection
    return [cx for cx in assoc.accepted_contexts
            if cx.as_scu and getattr(roles.get(cx.abstract_syntax), "scp_role", False)]


@suboperation_handler
def handle_get(call: RetrieveCall, archive: Archive) -> None:
    """C-GET: send the selected instances back over the requester's association.

    Each instance goes out in its stored transfer syntax when the requester
    accepted that syntax for its SOP class, else converted losslessly to an
    uncompressed syntax it accepted (dicom/sender.py).

    Statuses:
      0xFF00 Pending: after each sub-operation, with the remaining, completed,
             failed and warning counts
      0x0000 Success: every sub-operation completed (also when nothing matched)
      0xB000 Warning: sub-operations complete with one or more failures or
             warnings; FailedSOPInstanceUIDList lists the failed instances. An
             instance marked corrupt in storage (archive/integrity.py) is never
             sent: its sub-operation counts as failed
      0xA702 Refused, out of resources: every sub-operation failed (for example
             no storage context with the SCP role was negotiated)
      0xA701 Refused, out of resources: the index is unreachable, or more than
             65535 instances matched
      0xA900 Error: the identifier does not match the SOP class (level, keys)
      0x0124 Refused: not authorised (the calling AE may not retrieve)
      0xFE00 Cancel: C-CANCEL received; counts and failed instances so far
      0xC000 Error: unable to process (unexpected failure, see the log)
    """
    if not authorized(call, archive, PeerRegistry(archive.index)):
        return
    instances = matched_instances(call, archive)
    if instances is None:
        return
    contexts = storage_contexts(call.assoc)
    if not contexts:
        log.warning("C-GET from %s: no storage context with the SCP role was negotiated", call.peer)
    log.info("C-GET from %s: %d instances", call.peer, len(instances))
    send = InstanceSender(call.assoc, archive.storage, contexts=contexts,
                          refuse=lambda i: archive.refusal(i, "C-GET"))
    run_suboperations(call, instances, send.send)
