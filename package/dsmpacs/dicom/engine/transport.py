"""PDU reading: large reads into one buffer, and a limit on what a peer may announce.

pynetdicom 3.0 reads a PDU with ``recv(4096)`` in a loop, extending a
bytearray: 32 system calls and as many copies for every 128 KB PDU of a
multi-frame run. It also believes the PDU length in the header, so a peer that
announces a 4 GB PDU makes it buffer until memory runs out.

``AssociationSocket.recv`` is replaced by a version that reads straight into a
preallocated buffer, and that refuses a PDU longer than this archive agreed to
receive (the AE's maximum PDU size for P-DATA, 1 MiB for association PDUs).
A refused PDU looks to pynetdicom like a connection closed early: it aborts the
association, and the refusal is logged with the peer's address.
"""
from __future__ import annotations

import logging
import struct

from pynetdicom import transport as _transport

log = logging.getLogger(__name__)

P_DATA_TF = 0x04
OTHER_PDU_LIMIT = 1 << 20          # A-ASSOCIATE, release and abort PDUs are small
UNLIMITED_P_DATA_LIMIT = 64 << 20  # when max_pdu is 0 ("unlimited"), still not 4 GB
READ_CHUNK = 1 << 20
_installed = False


def pdu_limit(pdu_type: int, maximum_pdu_size: int) -> int:
    if pdu_type != P_DATA_TF:
        return OTHER_PDU_LIMIT
    return maximum_pdu_size if maximum_pdu_size else UNLIMITED_P_DATA_LIMIT


def _recv(self, nr_bytes: int) -> bytearray:
    sock = self.socket
    expected = getattr(self, "_dsmpacs_expected", None)
    if expected is not None:
        self._dsmpacs_expected = None
        pdu_type, length = expected
        ae = getattr(self.assoc, "ae", None)
        limit = pdu_limit(pdu_type, getattr(ae, "maximum_pdu_size", 0) or 0)
        if nr_bytes == length and length > limit:
            log.warning("refusing PDU type 0x%02X of %d bytes from %s (limit %d); aborting",
                        pdu_type, length, _peer(self), limit)
            return bytearray()      # pynetdicom treats a short read as a closed connection
    buf = bytearray(nr_bytes)
    view = memoryview(buf)
    got = 0
    while got < nr_bytes:
        n = sock.recv_into(view[got:], min(nr_bytes - got, READ_CHUNK))
        if not n:                   # connection closed: return what arrived
            del view
            return buf[:got]
        got += n
    if nr_bytes == 6:
        # A PDU header: remember type and length to check the body read that follows.
        pdu_type, _, length = struct.unpack(">BBL", buf)
        self._dsmpacs_expected = (pdu_type, length)
    return buf


def _peer(sock) -> str:
    try:
        host, port = sock.socket.getpeername()[:2]
        return f"{host}:{port}"
    except (OSError, AttributeError):
        return "?"


def install() -> None:
    """Patch pynetdicom once per process (idempotent)."""
    global _installed
    if not _installed:
        _transport.AssociationSocket.recv = _recv
        _installed = True
