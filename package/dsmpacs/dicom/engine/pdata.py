"""A received PDU read into one buffer; a P-DATA-TF's values views of that buffer.

pynetdicom 3.0.4 copies every received P-DATA byte several times in Python before
the DIMSE layer writes it out, each copy of a large PDU a fresh allocation whose
pages fault in: the body appended to the header (``_read_pdu_data``), the whole PDU
again as ``bytes`` for ``EVT_DATA_RECV`` even when no handler is bound
(``_decode_pdu``), the body sliced off the header (``PDU.decode``), each PDV sliced
out of the body (``P_DATA_TF._generate_items``) and each fragment sliced off its
control byte (``DIMSEMessage.decode_msg``). For a 21 MB angiography run that is
over 100 MB of memmove on the receiving thread.

Here ``DULServiceProvider._read_pdu_data`` is ours. It reads the header and then the
body straight into one ``ReceivedBuffer`` (archive/storage.py: filled once, never
written again; engine/transport.py ``_recv`` makes it), and answers every short
read, unknown type or undecodable PDU with the event pynetdicom's gives (Evt17,
Evt19). A P-DATA-TF's PDV items become read-only views of that buffer, and
``decode_msg``'s ``data[1:]`` of a view is a view: no received byte is copied in
Python, and the spool keeps the views for hashing as they are. The PDV list is read
as pynetdicom reads it (item length, context ID, value); an item whose length is
zero or runs past the PDU is Evt19 (A-ABORT), as a failed decode is there. The PDU
is queued with Evt10 and ``EVT_PDU_RECV`` triggered, as pynetdicom does. A
P-DATA-TF while a handler is bound to ``EVT_DATA_RECV`` (it is given the raw
bytes), and every other PDU type, goes through pynetdicom's own ``_decode_pdu``.

Measured with bench/ingest_ir.py (the daemon's instructions per instance, two rounds),
against the PDU appended to its header and made ``bytes`` as before: a 21 MB XA run
0.937x (704 to 659 million; without SHA-256, which valgrind makes most of that count,
118 to 73 million); a small instance 0.98x (0.96-1.00), within that measure's spread.
Handing a P-DATA-TF straight to DIMSE instead of through the event queue and the state
machine was tried too: under 0.5% of a small instance's instructions (callgrind, both
ends of an association in one process). Not kept.

Upstream could do the same (slices of a memoryview in ``P_DATA_TF`` and
``_generate_items``, no ``bytes()`` for ``EVT_DATA_RECV`` with no handler, the body
read into the header's buffer); it is a change to offer pynetdicom, not yet offered.
"""
from __future__ import annotations

import logging
import struct

from pynetdicom import dul as _dul
from pynetdicom import evt
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_items import PresentationDataValueItem

from dsmpacs.dicom.engine import transport

_HEADER = struct.Struct(">BBL")
_ITEM_LENGTH = struct.Struct(">L")
# pynetdicom's own logger: what an operator already filters on says the same things.
_DUL_LOG = logging.getLogger("pynetdicom.dul")
_installed = False


def pdv_items(body) -> list[PresentationDataValueItem]:
    """The PDV items of a P-DATA-TF's body (the PDU after its 6-byte header), each value
    a read-only view of ``body``. ValueError when an item's length does not fit."""
    view = memoryview(body).toreadonly()
    items = []
    offset, end = 0, len(body)
    while offset < end:
        if end - offset < 5:
            raise ValueError(f"a PDV item header of {end - offset} bytes at offset {offset}")
        length = _ITEM_LENGTH.unpack_from(body, offset)[0]
        if length < 1 or offset + 4 + length > end:
            raise ValueError(f"a PDV item of {length} bytes at offset {offset} in a body of {end}")
        item = PresentationDataValueItem()
        item.presentation_context_id = body[offset + 4]
        item.presentation_data_value = view[offset + 5:offset + 4 + length]
        items.append(item)
        offset += 4 + length
    return items


def _closed(self, exc: BaseException) -> None:
    _DUL_LOG.error("Connection closed before the entire PDU was received")
    _DUL_LOG.exception(exc)
    self.event_queue.put("Evt17")


def _read_pdu_data(self) -> None:
    """DULServiceProvider._read_pdu_data: the same events for the same bytes."""
    sock = self.socket
    try:
        head = sock.recv(6)
    except (OSError, TimeoutError) as exc:
        _closed(self, exc)
        return
    if len(head) != 6:
        self.event_queue.put("Evt17")
        return
    pdu_type, _, length = _HEADER.unpack(head)
    if pdu_type not in transport.DICOM_PDU_TYPES:
        _DUL_LOG.error(f"Unknown PDU type received '0x{pdu_type:02X}'")
        self.event_queue.put("Evt19")
        return
    try:
        body = sock.recv(length)
    except (OSError, TimeoutError) as exc:
        _closed(self, exc)
        return
    if len(body) != length:
        _DUL_LOG.error(f"The received PDU is shorter than expected ({6 + len(body)} of "
                       f"{6 + length} bytes received)")
        self.event_queue.put("Evt17")
        return
    assoc = self.assoc
    if pdu_type == transport.P_DATA_TF and not assoc.get_handlers(evt.EVT_DATA_RECV):
        pdu = P_DATA_TF()
        try:
            pdu.presentation_data_value_items = pdv_items(body)
        except ValueError as exc:
            _DUL_LOG.error("Unable to decode the received PDU data")
            _DUL_LOG.exception(exc)
            self.event_queue.put("Evt19")
            return
        evt.trigger(assoc, evt.EVT_PDU_RECV, {"pdu": pdu})
        self.event_queue.put("Evt10")
        self._recv_pdu.put(pdu)
        return
    try:
        pdu, event = self._decode_pdu(head + body)
        self.event_queue.put(event)
    except Exception as exc:
        _DUL_LOG.error("Unable to decode the received PDU data")
        _DUL_LOG.exception(exc)
        self.event_queue.put("Evt19")
        return
    self._recv_pdu.put(pdu)


def install() -> None:
    """Replace DULServiceProvider._read_pdu_data (engine.install)."""
    global _installed
    if _installed:
        return
    _dul.DULServiceProvider._read_pdu_data = _read_pdu_data
    _installed = True
