"""C-STORE of stored instances where this archive is the storage SCU: the C-MOVE
sub-association, the C-GET requester's own association, and pushes started here.

Per instance, archive/retrieve.py picks the transfer syntax from what the peer
accepted: the stored one, so the file's dataset bytes go out unchanged
(streamed from disk by pynetdicom's chunked send, never decoded), or else a
lossless conversion (archive/transcode.py) written to a temporary file in the
storage's tmp dir and streamed the same way.
"""
from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from pynetdicom import build_context
from pynetdicom.status import code_to_category

from dsmpacs.archive.retrieve import Context, StoredInstance, choose_transfer_syntax, describe
from dsmpacs.archive.storage import Storage
from dsmpacs.archive.transcode import ConversionError, convert
from dsmpacs.dicom.connect import open_association

log = logging.getLogger(__name__)

NOT_SENT = -1


@dataclass(frozen=True)
class SubOperation:
    """The outcome of one C-STORE (sub-)operation."""
    sop_instance_uid: str
    status: int                        # the peer's status, or NOT_SENT
    transfer_syntax_uid: str = ""      # what the instance went out in
    converted: bool = False
    message: str = ""

    @property
    def category(self) -> str:
        """success, warning or failure (anything unknown or unsent is a failure)."""
        if self.status == NOT_SENT:
            return "failure"
        category = code_to_category(self.status).lower()
        return category if category in ("success", "warning") else "failure"


def requested_contexts(contexts: Iterable[Context]) -> list:
    return [build_context(abstract, list(syntaxes)) for abstract, syntaxes in contexts]


def open_batch(ae, peer, contexts: Iterable[Context], *, required: bool = False):
    """Open an association to ``peer`` proposing ``contexts`` (dicom/connect.py: over
    TLS when the peer is marked TLS)."""
    return open_association(ae, peer, required=required, contexts=requested_contexts(contexts))


class InstanceSender:
    """Sends stored instances on one association, one C-STORE at a time."""

    def __init__(self, assoc, storage: Storage, *, contexts=None, originator_ae: str | None = None,
                 originator_message_id: int | None = None,
                 refuse: Callable[[StoredInstance], str | None] | None = None):
        # Files are sent by path: with the engine's chunked send, pynetdicom streams
        # the dataset bytes from disk in PDU-sized reads instead of decoding them.
        self.assoc = assoc
        self.storage = storage
        self.originator_ae = originator_ae
        self.originator_message_id = originator_message_id
        self.refuse = refuse            # why an instance must not go out (integrity.refusal)
        usable = contexts if contexts is not None else [cx for cx in assoc.accepted_contexts if cx.as_scu]
        self.accepted = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in usable}
        self._message_id = 0

    def _next_message_id(self) -> int:
        self._message_id = self._message_id % 65535 + 1
        return self._message_id

    def send(self, instance: StoredInstance) -> SubOperation:
        reason = self.refuse(instance) if self.refuse is not None else None
        if reason:
            log.error("not sending %s: %s", instance.sop_instance_uid, reason)
            return SubOperation(instance.sop_instance_uid, NOT_SENT, message=reason)
        target = choose_transfer_syntax(instance, self.accepted)
        if target is None:
            return SubOperation(instance.sop_instance_uid, NOT_SENT, message=(
                f"the peer accepted no context for {describe(instance.sop_class_uid)} in "
                f"{describe(instance.transfer_syntax_uid)} or an uncompressed syntax"))
        if target == instance.transfer_syntax_uid:
            try:
                return self._store(instance, self.storage.path(instance.path), target, False)
            except FileNotFoundError:
                log.error("stored file of %s is missing: %s", instance.sop_instance_uid, instance.path)
                return SubOperation(instance.sop_instance_uid, NOT_SENT, message="stored file is missing")
        scratch = self.storage.tmp_dir / f"{uuid.uuid4().hex}.conv"
        try:
            try:
                with open(scratch, "xb") as out:
                    convert(self.storage.path(instance.path), target, out)
            except (ConversionError, OSError) as exc:
                log.error("cannot convert %s to %s: %s", instance.sop_instance_uid, describe(target), exc)
                return SubOperation(instance.sop_instance_uid, NOT_SENT, target, True, str(exc))
            return self._store(instance, scratch, target, True)
        finally:
            try:
                os.unlink(scratch)
            except FileNotFoundError:
                pass

    def _store(self, instance: StoredInstance, path: Path, target: str, converted: bool) -> SubOperation:
        if not self.assoc.is_established:
            return SubOperation(instance.sop_instance_uid, NOT_SENT, target, converted, "association lost")
        try:
            rsp = self.assoc.send_c_store(path, msg_id=self._next_message_id(),
                                          originator_aet=self.originator_ae,
                                          originator_id=self.originator_message_id)
        except (ValueError, AttributeError, RuntimeError) as exc:
            return SubOperation(instance.sop_instance_uid, NOT_SENT, target, converted, str(exc))
        if "Status" not in rsp:
            return SubOperation(instance.sop_instance_uid, NOT_SENT, target, converted,
                                "no response (timeout or association aborted)")
        status = int(rsp.Status)
        comment = str(rsp.get("ErrorComment", "") or "") if status else ""
        return SubOperation(instance.sop_instance_uid, status, target, converted, comment)


def push(ae, storage: Storage, peer, instances: list[StoredInstance],
         progress: Callable[[StoredInstance, SubOperation], None] | None = None,
         refuse: Callable[[StoredInstance], str | None] | None = None) -> list[SubOperation]:
    """C-STORE instances to ``peer`` from ``ae`` (pushes started here: `dsmpacs send
    --study`). One association per batch of presentation contexts; raises
    AssociationFailed when the peer cannot be reached at all."""
    from dsmpacs.archive.retrieve import plan_batches
    results: list[SubOperation] = []
    for number, batch in enumerate(plan_batches(instances)):
        assoc = open_batch(ae, peer, batch.contexts, required=number == 0)
        sender = InstanceSender(assoc, storage, refuse=refuse)
        try:
            for instance in batch.instances:
                result = sender.send(instance)
                results.append(result)
                if progress:
                    progress(instance, result)
        finally:
            if assoc.is_established:
                assoc.release()
    return results
