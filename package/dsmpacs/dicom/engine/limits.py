"""A bound on each DIMSE message, enforced while its fragments arrive; and no
fragment on a presentation context that was not accepted.

pynetdicom gathers a DIMSE message from P-DATA fragments until one carries the
"last fragment" bit, with no bound: a C-STORE dataset is spooled to disk
(engine/spool.py) and anything else (command sets, query identifiers, storage
commitment lists) is gathered in memory. A peer that never sets the bit fills
the disk or the memory. ``DIMSEServiceProvider.receive_primitive`` is the one
place every fragment passes; it is wrapped here to count the message's bytes
before pynetdicom sees them. Past a bound, the partial spool file is removed,
the event logged, and the association aborted the way pynetdicom aborts an
undecodable message (Evt19: A-ABORT to the peer, A-P-ABORT to our side). A
fragment on a presentation context that was not accepted (a C-STORE of a
refused SOP class or transfer syntax) is aborted the same way.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from pynetdicom import dimse as _dimse

from dsmpacs.dicom.engine import spool

log = logging.getLogger(__name__)
MIB = 1 << 20
COMMAND_SET_LIMIT = 64 << 10    # a command set is a dozen elements; N-GET's tag list fits too
IN_MEMORY_LIMIT = 64 * MIB      # non-C-STORE datasets are decoded from memory
DEFAULT_MESSAGE_LIMIT = 4096 * MIB
_AE_ATTRIBUTE = "_dsmpacs_limits"
_installed = False


@dataclass(frozen=True)
class MessageLimits:
    message: int = DEFAULT_MESSAGE_LIMIT     # command + dataset, when spooled to disk
    in_memory: int = IN_MEMORY_LIMIT
    command: int = COMMAND_SET_LIMIT


def bind(ae, settings) -> None:
    """Apply the settings' bounds to every association of ``ae``."""
    message = settings.max_dimse_message_mb * MIB
    setattr(ae, _AE_ATTRIBUTE, MessageLimits(message=message, in_memory=min(message, IN_MEMORY_LIMIT)))


def limits_of(assoc) -> MessageLimits:
    return getattr(getattr(assoc, "ae", None), _AE_ATTRIBUTE, None) or MessageLimits()


def _sizes(primitive) -> tuple[int, int]:
    command = data = 0
    for _context_id, pdv in primitive.presentation_data_value_list:
        if pdv[0] & 1:
            command += len(pdv) - 1
        else:
            data += len(pdv) - 1
    return command, data


def _excess(message, command: int, data: int, limits: MessageLimits) -> str:
    if command > limits.command:
        return f"command set of more than {limits.command} bytes"
    if getattr(message, "_data_set_file", None) is not None:
        if command + data > limits.message:
            return f"message of more than {limits.message // MIB} MiB (max_dimse_message_mb)"
    elif command + data > limits.in_memory:
        return f"message held in memory of more than {limits.in_memory // MIB} MiB"
    return ""


def _unaccepted_context(assoc, primitive) -> str:
    # pynetdicom looks the context up only after it opened the spool file, and its
    # KeyError then kills the DUL thread without an A-ABORT to the peer.
    accepted = getattr(assoc, "_accepted_cx", {})
    for context_id, _pdv in primitive.presentation_data_value_list:
        if context_id not in accepted:
            return f"P-DATA on presentation context {context_id}, which was not accepted"
    return ""


def install() -> None:
    """Wrap DIMSEServiceProvider.receive_primitive once per process (engine.install)."""
    global _installed
    if _installed:
        return
    original = _dimse.DIMSEServiceProvider.receive_primitive

    def receive_primitive(self, primitive) -> None:
        if getattr(self, "_dsmpacs_refused", False):
            return          # the abort is queued; drop what was already on the way
        command, data = _sizes(primitive)
        message = self.message
        if message is not None:
            command += message.__dict__.get("_dsmpacs_command", 0)
            data += message.__dict__.get("_dsmpacs_data", 0)
        reason = (_unaccepted_context(self.assoc, primitive)
                  or _excess(message, command, data, limits_of(self.assoc)))
        if reason:
            peer = self.assoc.requestor if self.assoc.is_acceptor else self.assoc.acceptor
            log.warning("aborting the association with %s (%s:%s): %s", getattr(peer, "ae_title", "?"),
                        getattr(peer, "address", "?"), getattr(peer, "port", "?"), reason)
            self._dsmpacs_refused = True
            self.dul._dsmpacs_ended = True       # read nothing more (engine/transport.py)
            spool.abandon_message(message)
            self.message = None
            self.dul.event_queue.put("Evt19")
            return
        original(self, primitive)
        if self.message is not None:     # still incomplete: carry the counts
            self.message._dsmpacs_command = command
            self.message._dsmpacs_data = data

    _dimse.DIMSEServiceProvider.receive_primitive = receive_primitive
    _installed = True

