"""PDU reading with bounds on size, time and type, and an immediate close after an abort.

pynetdicom 3.0 reads a PDU with blocking ``recv(4096)`` calls until the length
its header announced has arrived. While it waits, its DUL thread runs neither
the ARTIM timer nor any abort, so a peer that trickles an A-ASSOCIATE-RQ one
byte every few seconds, or sends half a PDU and stays, holds an association
slot for as long as it likes. It also believes the announced length, so a peer
that announces a 4 GB PDU makes it buffer until memory runs out. In Sta13
(after it sent an A-ABORT or A-ASSOCIATE-RJ) it goes on reading and decoding
whatever the peer sends until the peer stops, so a peer that sent junk and
stays connected is never closed.

Here:

* ``AssociationSocket.recv`` reads straight into one buffer (one system call
  per MiB instead of per 4 KiB) and refuses a PDU longer than this archive
  agreed to receive (the AE's maximum PDU size for P-DATA, 1 MiB otherwise);
* every read has a deadline. Until the association is established it is the
  connection's open time plus ``acse_timeout``, fixed, so trickling bytes
  cannot extend it; afterwards a PDU whose first byte arrived must be complete
  within ``network_timeout``. Past a deadline the peer gets an A-ABORT, the
  connection is shut down and the event is logged with the peer's address;
* a header whose PDU type is not 0x01-0x07 (HTTP, a TLS ClientHello, junk) is
  logged; pynetdicom then answers it with A-ABORT (Evt19), and
* in Sta13 the connection is closed at once, after discarding what the peer
  already sent (closing with unread data would send an RST that can destroy
  the A-ABORT or A-ASSOCIATE-RJ before the peer reads it).

A refused or late PDU looks to pynetdicom like a connection closed early: it
ends the association (A-P-ABORT once established).
"""
from __future__ import annotations

import contextlib
import logging
import math
import select
import socket
import ssl
import struct
import time

from pynetdicom import dul as _dul
from pynetdicom import transport as _transport
from pynetdicom.pdu import A_ABORT_RQ

from dsmpacs.archive.storage import ReceivedBuffer
from dsmpacs.dicom.engine import respond, tls

log = logging.getLogger(__name__)

P_DATA_TF = 0x04
DICOM_PDU_TYPES = range(0x01, 0x08)
OTHER_PDU_LIMIT = 1 << 20          # A-ASSOCIATE, release and abort PDUs are small
UNLIMITED_P_DATA_LIMIT = 64 << 20  # when max_pdu is 0 ("unlimited"), still not 4 GB
READ_CHUNK = 1 << 20
DRAIN_LIMIT = 1 << 20              # what a closing connection may still discard
# States before the association is established (PS3.8 9.2): awaiting the
# A-ASSOCIATE-RQ (Sta2), our answer (Sta3), the connection (Sta4), the AC/RJ (Sta5).
NEGOTIATING = frozenset({"Sta1", "Sta2", "Sta3", "Sta4", "Sta5"})
_installed = False


def pdu_limit(pdu_type: int, maximum_pdu_size: int) -> int:
    if pdu_type != P_DATA_TF:
        return OTHER_PDU_LIMIT
    return maximum_pdu_size if maximum_pdu_size else UNLIMITED_P_DATA_LIMIT


def _seconds(value) -> float:
    return float(value) if value else math.inf


def _deadline(self, header: bool) -> tuple[float, str]:
    """When the read that starts now must be done, and what was late if it is not."""
    assoc = self.assoc
    if assoc.dul.state_machine.current_state in NEGOTIATING:
        return (self._dsmpacs_opened + _seconds(assoc.acse_timeout),
                f"association request not complete {assoc.acse_timeout} s after connecting "
                "(acse_timeout)")
    if header:
        self._dsmpacs_pdu_deadline = time.monotonic() + _seconds(assoc.network_timeout)
    return (self._dsmpacs_pdu_deadline,
            f"PDU not complete {assoc.network_timeout} s after it began (network_timeout)")


def _recv(self, nr_bytes: int) -> bytearray:
    sock = self.socket
    expected = getattr(self, "_dsmpacs_expected", None)
    header = expected is None
    if not header:
        self._dsmpacs_expected = None
        pdu_type, length = expected
        ae = getattr(self.assoc, "ae", None)
        limit = pdu_limit(pdu_type, getattr(ae, "maximum_pdu_size", 0) or 0)
        if nr_bytes == length and length > limit:
            log.warning("refusing PDU type 0x%02X of %d bytes from %s (limit %d); aborting",
                        pdu_type, length, _peer(self), limit)
            return bytearray()      # pynetdicom treats a short read as a closed connection
    deadline, late = _deadline(self, header)
    read = _read_tls if isinstance(sock, ssl.SSLSocket) else _read_plain
    buf = ReceivedBuffer(nr_bytes)      # filled here once; engine/pdata.py keeps views of it
    view = memoryview(buf)
    got = 0
    while got < nr_bytes:
        n = read(sock, view[got:], min(nr_bytes - got, READ_CHUNK), deadline)
        if n is None:
            del view
            _cut(self, f"{late}; {got} of {nr_bytes} bytes read")
            return buf[:got]
        if not n:                   # connection closed: return what arrived
            del view
            # Nothing more will come. pynetdicom queues "connection closed" on every
            # read of a socket at its end, and reads again on every turn while its
            # state machine acts on one event per turn: the second such event
            # reaches Sta1, which has no transition for it, the DUL thread dies and
            # leaves one queued. Then connection_gone never saw an empty queue, and
            # a peer that connected and closed without a word (a port probe, a
            # health check) held its association slot until acse_timeout.
            self.assoc.dul._dsmpacs_ended = True
            return buf[:got]
        got += n
    if header and nr_bytes == 6:
        # A PDU header: remember type and length to check the body read that follows.
        pdu_type, _, length = struct.unpack(">BBL", buf)
        if pdu_type in DICOM_PDU_TYPES:
            self._dsmpacs_expected = (pdu_type, length)
        else:
            log.warning("not DICOM from %s: PDU type 0x%02X (first bytes %r%s); aborting",
                        _peer(self), pdu_type, bytes(buf), _guess(bytes(buf)))
            self.assoc.dul._dsmpacs_ended = True     # pynetdicom answers A-ABORT (Evt19)
    return buf


def _read_plain(sock: socket.socket, view: memoryview, size: int, deadline: float) -> int | None:
    """One recv_into that waits at most until ``deadline`` (None when it passed).
    The socket stays blocking: a non-blocking attempt first, and poll() only when
    nothing is there, costs one system call per chunk on the bulk path, where a
    socket timeout would add a poll() per chunk and two fcntl() per PDU."""
    while True:
        try:
            return sock.recv_into(view, size, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            pass
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        waiter = select.poll()      # not select(): descriptors above 1024 are normal here
        waiter.register(sock, select.POLLIN)
        waiter.poll(min(remaining, 3600.0) * 1000)


def _read_tls(sock, view: memoryview, size: int, deadline: float) -> int | None:
    # SSLSocket.recv_into takes no flags; its own timeout handles records in flight.
    previous = sock.gettimeout()
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            sock.settimeout(min(remaining, 3600.0))
            try:
                return sock.recv_into(view, size)
            except socket.timeout:
                continue
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(previous)


def _guess(head: bytes) -> str:
    if head[:1] == b"\x16" and head[1:2] == b"\x03":
        return ", a TLS handshake: this port speaks plain DICOM"
    if head[:4] in (b"GET ", b"POST", b"HEAD", b"PUT ", b"OPTI", b"CONN"):
        return ", an HTTP request"
    return ""


def _cut(self, reason: str) -> None:
    """Abort a connection whose peer missed a deadline: A-ABORT (service provider),
    then shut the socket down so the peer sees the end at once. The descriptor is
    closed by pynetdicom when the association thread ends."""
    log.warning("closing the connection from %s: %s", _peer(self), reason)
    dul = self.assoc.dul
    sock = self.socket
    abort = A_ABORT_RQ()
    abort.source, abort.reason_diagnostic = 0x02, 0x00
    # Under the send lock: the association thread may be writing a response
    # (engine/respond.py), and the A-ABORT must not land inside it.
    with respond.send_lock(dul):
        dul._dsmpacs_ended = True
        with contextlib.suppress(OSError):
            sock.settimeout(1.0)
            sock.sendall(abort.encode())
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _peer(sock) -> str:
    try:
        host, port = sock.socket.getpeername()[:2]
        return f"{host}:{port}"
    except (OSError, AttributeError):
        return "?"


def _drain(sock: socket.socket) -> None:
    discarded = 0
    tls_socket = isinstance(sock, ssl.SSLSocket)
    try:
        if tls_socket:
            sock.setblocking(False)     # SSLSocket.recv takes no flags; it is closed next anyway
        while discarded < DRAIN_LIMIT:
            chunk = sock.recv(65536) if tls_socket else sock.recv(65536, socket.MSG_DONTWAIT)
            if not chunk:
                return
            discarded += len(chunk)
    except (BlockingIOError, InterruptedError, OSError):
        return


def connection_gone(dul) -> bool:
    """The DUL is idle (Sta1), has acted on every event it queued, and its
    connection was closed or cut: nothing more will arrive on it.

    The queue matters: the DUL reads the peer's first header on its first turn,
    before it acts on the connection event queued with the socket, so a junk
    header marks the connection condemned while still in Sta1 with its A-ABORT
    not yet sent (tests/test_transport_races.py)."""
    if dul.state_machine.current_state != "Sta1" or not dul.event_queue.empty():
        return False
    wrapped = dul.socket
    return (getattr(dul, "_dsmpacs_ended", False) or wrapped is None
            or getattr(wrapped, "socket", None) is None)


def install() -> None:
    """Patch pynetdicom once per process (idempotent)."""
    global _installed
    if _installed:
        return
    original_init = _transport.AssociationSocket.__init__
    original_connect = _transport.AssociationSocket.connect
    original_transport_event = _dul.DULServiceProvider._is_transport_event
    original_receive_pdu = _dul.DULServiceProvider.receive_pdu

    def __init__(self, *args, **kwargs):
        # Set before pynetdicom's __init__, which already queues the connection event.
        self._dsmpacs_opened = time.monotonic()
        self._dsmpacs_pdu_deadline = math.inf
        original_init(self, *args, **kwargs)

    def connect(self, primitive):
        if self.tls_args:
            tls.capture_connect_errors(self.tls_args[0])
            tls.take_connect_error()                  # nothing stale from an earlier connect
        original_connect(self, primitive)
        self._dsmpacs_opened = time.monotonic()      # as a requestor, the clock starts here
        error = tls.take_connect_error() if self.tls_args else None
        if error is not None:
            # pynetdicom only logged it; the caller says it (dicom/connect.py).
            host, port = primitive.address_info.as_tuple[:2]
            self.assoc._dsmpacs_connect_error = tls.describe_connect_error(host, port, error)
        elif not self._is_connected:
            self.assoc._dsmpacs_connect_error = "no connection"

    def _is_transport_event(self):
        wrapped = self.socket
        if (self.state_machine.current_state == "Sta13" and wrapped is not None
                and wrapped.socket is not None):
            # We sent A-ABORT, A-ASSOCIATE-RJ or A-RELEASE-RP: nothing the peer
            # says now can change the outcome, so close without waiting for it.
            _drain(wrapped.socket)
            wrapped.close()
            return True
        if getattr(self, "_dsmpacs_ended", False):
            # Condemned (junk, a missed deadline, an oversized message): read nothing
            # more, or a second "connection closed" event would reach pynetdicom's
            # state machine in Sta1, where it has no transition.
            return False
        return original_transport_event(self)

    def receive_pdu(self, wait=False, timeout=None):
        # The acceptor's association thread waits acse_timeout for the A-ASSOCIATE-RQ
        # even when the connection is already gone (junk answered with A-ABORT, a
        # missed deadline), holding its slot; wait in slices and stop when it is.
        if not wait or not self.assoc.is_acceptor:
            return original_receive_pdu(self, wait, timeout)
        end = time.monotonic() + (timeout if timeout is not None else math.inf)
        while True:
            primitive = original_receive_pdu(self, True, max(0.0, min(0.05, end - time.monotonic())))
            if primitive is not None or connection_gone(self) or time.monotonic() >= end:
                return primitive

    _transport.AssociationSocket.__init__ = __init__
    _transport.AssociationSocket.connect = connect
    _transport.AssociationSocket.recv = _recv
    _dul.DULServiceProvider._is_transport_event = _is_transport_event
    _dul.DULServiceProvider.receive_pdu = receive_pdu
    _installed = True
