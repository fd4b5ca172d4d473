"""pynetdicom glue for C-STORE: call our handler and answer without pynetdicom's detour.

pynetdicom answers each C-STORE by triggering EVT_C_STORE through its event
machinery, then building a response primitive, validating it, encoding the
command set with pydicom and queuing it: about 1 ms of CPU per instance on the
2-core machines this archive targets, on the serial path of every instance a
modality sends. Here the handler marked with ``@fast_store_handler`` is called
directly and the C-STORE-RSP (a handful of command elements, always Implicit VR
Little Endian) is encoded by hand and written by engine/respond.py, on this
thread when the DUL would send it next, else queued on the association's DUL as
pynetdicom does after its encode. Associations whose EVT_C_STORE handler is not
marked (C-GET and C-MOVE as a client) keep pynetdicom's path.

On the way in, pynetdicom turns every received command set into its primitive
by converting each element of the pydicom dataset, looking up its keyword and
VM and probing the primitive for an attribute of that name: a sixth of the
CPU a small C-STORE costs the DICOM process, on the DUL thread, between one
instance and the next. ``install`` gives C-STORE-RQ a direct conversion of the
six elements a C-STORE primitive has, through the same validating setters;
anything unusual (a multi-valued element) takes pynetdicom's own path.
"""
from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from typing import Callable

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom import dimse_messages, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.service_class import StorageServiceClass

from dsmpacs.dicom.engine import respond

log = logging.getLogger(__name__)
_installed = False
_MARK = "_dsmpacs_fast_store"
C_STORE_RSP = 0x8001
NO_DATA_SET = 0x0101
PROCESSING_FAILURE = 0xC211          # what pynetdicom answers when a handler raises


def fast_store_handler(func: Callable) -> Callable:
    """Mark an EVT_C_STORE handler as taking a StoreCall and answering a status."""
    setattr(func, _MARK, True)
    return func


@dataclass
class StoreCall:
    """What a store handler needs from the event: the request and its association."""
    request: object
    assoc: object


def _element(group: int, element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", group, element, len(value)) + value


def _uid(value: object) -> bytes:
    raw = str(value or "").encode("ascii", "replace")[:64]
    return raw + b"\x00" if len(raw) % 2 else raw


def _text(value: str) -> bytes:
    raw = value.encode("ascii", "replace")[:64]
    return raw + b" " if len(raw) % 2 else raw


def encode_store_response(message_id: int, sop_class_uid: object, sop_instance_uid: object,
                          status: int, comment: str = "") -> bytes:
    """The C-STORE-RSP command set (PS3.7 9.3.1.2), Implicit VR Little Endian."""
    body = b"".join([
        _element(0x0000, 0x0002, _uid(sop_class_uid)),
        _element(0x0000, 0x0100, struct.pack("<H", C_STORE_RSP)),
        _element(0x0000, 0x0120, struct.pack("<H", message_id & 0xFFFF)),
        _element(0x0000, 0x0800, struct.pack("<H", NO_DATA_SET)),
        _element(0x0000, 0x0900, struct.pack("<H", status & 0xFFFF)),
        _element(0x0000, 0x0902, _text(comment)) if comment else b"",
        _element(0x0000, 0x1000, _uid(sop_instance_uid)),
    ])
    return _element(0x0000, 0x0000, struct.pack("<I", len(body))) + body


class FastStorageServiceClass(StorageServiceClass):
    def SCP(self, req, context) -> None:
        bound = self.assoc.get_handlers(evt.EVT_C_STORE)
        handler, args = bound if isinstance(bound, tuple) else (None, None)
        if not getattr(handler, _MARK, False):
            super().SCP(req, context)
            return
        try:
            outcome = handler(StoreCall(req, self.assoc), *(args or []))
        except Exception:
            log.exception("C-STORE handler failed")
            outcome = PROCESSING_FAILURE
        finally:
            spooled = getattr(req, "_dataset_file", None)
            # Handed to the ingest, which consumes it whatever the outcome, or removed by
            # the handler: only a spool the handler never got to is removed here.
            if spooled is not None and not getattr(spooled, "handed_over", False):
                spooled.close()
                try:
                    os.unlink(spooled.name)
                except OSError:
                    pass
        if not self.assoc.is_established:
            return
        if isinstance(outcome, Dataset):
            status, comment = int(outcome.Status), str(outcome.get("ErrorComment", "") or "")
        else:
            status, comment = int(outcome), ""
        value = b"\x03" + encode_store_response(int(req.MessageID), req.AffectedSOPClassUID,
                                                req.AffectedSOPInstanceUID, status, comment)
        pdata = P_DATA()
        pdata.presentation_data_value_list = [[context.context_id, value]]
        respond.send_response(self.assoc.dul, pdata, context.context_id, value)


# The command set elements of a C-STORE-RQ that are parameters of its primitive (PS3.7
# 9.3.1.1), by tag, with their VR: always Implicit VR Little Endian.
_STORE_RQ_PARAMETERS = (("MessageID", 0x00000110, "US"), ("AffectedSOPClassUID", 0x00000002, "UI"),
                        ("Priority", 0x00000700, "US"), ("AffectedSOPInstanceUID", 0x00001000, "UI"),
                        ("MoveOriginatorApplicationEntityTitle", 0x00001030, "AE"),
                        ("MoveOriginatorMessageID", 0x00001031, "US"))
_UNUSUAL = object()


def _parameter(command_set, tag: int, vr: str) -> object:
    """One parameter's value, decoded from its raw bytes where pydicom has not yet
    converted it (pydicom's conversion is most of the cost); _UNUSUAL for anything
    pynetdicom's own path should judge (multiple values, odd lengths, bad text)."""
    element = command_set.get_item(tag)
    if element is None:
        return None
    raw = element.value
    if not isinstance(raw, bytes):          # converted already (engine/command.py, or a read)
        return _UNUSUAL if isinstance(raw, MultiValue) else raw
    if vr == "US":
        return int.from_bytes(raw, "little") if len(raw) == 2 else _UNUSUAL
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return _UNUSUAL
    if "\\" in text:
        return _UNUSUAL
    return text.rstrip("\0 ") if vr == "UI" else text.strip()


def store_request_primitive(message) -> C_STORE | None:
    """The C-STORE primitive of a received C-STORE-RQ message, as pynetdicom's
    ``message_to_primitive`` makes it, from its parameters alone; None when one is
    unusual (multi-valued, say: pynetdicom's path takes the first value and warns)."""
    command_set = message.command_set
    primitive = C_STORE()
    for keyword, tag, vr in _STORE_RQ_PARAMETERS:
        value = _parameter(command_set, tag, vr)
        if value is _UNUSUAL:
            return None
        if value is not None:
            setattr(primitive, keyword, value)      # the primitive's own validating setters
    primitive.DataSet = message.data_set
    primitive._context_id = message.context_id
    primitive._dataset_path = message._data_set_path
    primitive._dataset_file = message._data_set_file
    return primitive


def install() -> None:
    """Route received C-STORE-RQ messages through ``store_request_primitive`` (engine.install)."""
    global _installed
    if _installed:
        return
    original = dimse_messages.DIMSEMessage.message_to_primitive

    def message_to_primitive(self):
        if type(self) is dimse_messages.C_STORE_RQ:
            primitive = store_request_primitive(self)
            if primitive is not None:
                return primitive
        return original(self)

    dimse_messages.DIMSEMessage.message_to_primitive = message_to_primitive
    _installed = True
