"""A received P-DATA-TF PDU decoded into views of one copy, not three more copies.

pynetdicom 3.0.4 copies every received P-DATA byte several times in Python before
the DIMSE layer writes it out, each copy of a large PDU a fresh allocation whose
pages fault in: the body appended to the header (``_read_pdu_data``), the whole PDU
again as ``bytes`` for ``EVT_DATA_RECV`` even when no handler is bound
(``_decode_pdu``), the body sliced off the header (``PDU.decode``), each PDV sliced
out of the body (``P_DATA_TF._generate_items``) and each fragment sliced off its
control byte (``DIMSEMessage.decode_msg``). For a 21 MB angiography run that is
over 100 MB of memmove on the receiving thread.

Here ``DULServiceProvider._decode_pdu`` takes a P-DATA-TF itself: the PDU becomes
``bytes`` once (as pynetdicom made it), its PDV items are memoryviews of those
bytes, and ``decode_msg``'s ``data[1:]`` of a view is a view: the last three
copies are gone (the first, in ``_read_pdu_data``, stays). A view of ``bytes``
cannot change under its holder, so the spool keeps it for hashing without copying
it (archive/storage.py, ``SpoolWriter.write``). The PDV list is read as
pynetdicom reads it: item length, context ID, value; an item whose length is
zero or runs past the PDU raises, which pynetdicom's ``_read_pdu_data`` turns into
Evt19 (an invalid PDU: A-ABORT), as a failed decode there does.

Every other PDU type, and a P-DATA-TF while a handler is bound to
``EVT_DATA_RECV`` (it is given the raw bytes), goes through pynetdicom's own
decode. ``EVT_PDU_RECV`` is triggered as pynetdicom triggers it.

Upstream could do the same (slices of a memoryview in ``P_DATA_TF`` and
``_generate_items``, and no ``bytes()`` for ``EVT_DATA_RECV`` with no handler); it is
a change to offer pynetdicom, not yet offered.
"""
from __future__ import annotations

import struct

from pynetdicom import dul as _dul
from pynetdicom import evt
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_items import PresentationDataValueItem

P_DATA_TF_TYPE = 0x04
_ITEM_LENGTH = struct.Struct(">L")
_installed = False


def pdv_items(pdu: bytes) -> list[PresentationDataValueItem]:
    """The PDV items of an encoded P-DATA-TF PDU (header included), each value a
    memoryview of ``pdu``. ValueError when an item's length does not fit."""
    view = memoryview(pdu)
    items = []
    offset, end = 6, len(pdu)
    while offset < end:
        if end - offset < 5:
            raise ValueError(f"a PDV item header of {end - offset} bytes at offset {offset}")
        length = _ITEM_LENGTH.unpack_from(pdu, offset)[0]
        if length < 1 or offset + 4 + length > end:
            raise ValueError(f"a PDV item of {length} bytes at offset {offset} in a PDU of {end}")
        item = PresentationDataValueItem()
        item.presentation_context_id = pdu[offset + 4]
        item.presentation_data_value = view[offset + 5:offset + 4 + length]
        items.append(item)
        offset += 4 + length
    return items


def install() -> None:
    """Replace DULServiceProvider._decode_pdu's P-DATA-TF decode (engine.install)."""
    global _installed
    if _installed:
        return
    original_decode_pdu = _dul.DULServiceProvider._decode_pdu

    def _decode_pdu(self, bytestream):
        if bytestream[0] != P_DATA_TF_TYPE or self.assoc.get_handlers(evt.EVT_DATA_RECV):
            return original_decode_pdu(self, bytestream)
        pdu = P_DATA_TF()
        pdu.presentation_data_value_items = pdv_items(bytes(bytestream))
        evt.trigger(self.assoc, evt.EVT_PDU_RECV, {"pdu": pdu})
        return pdu, "Evt10"

    _dul.DULServiceProvider._decode_pdu = _decode_pdu
    _installed = True
