"""The idle association thread reads its peer's next request itself
(dsmpacs.dicom.engine.inline), and only where nothing else needs the DUL."""
from __future__ import annotations

import socket
import ssl
import threading
from types import SimpleNamespace

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.pdu import P_DATA_TF

from dsmpacs.dicom.engine import inline, reactor
from dsmpacs.dicom.engine.store_service import fast_store_handler
from tests.peers import stores_over_one_association


def test_a_plain_association_reads_each_next_store_on_its_own_thread(tmp_path):
    """End to end on a real listener: once the association thread has answered the
    first C-STORE it reads every later one itself; each is answered, in order."""
    readers: list[tuple[bool, int]] = []     # (read on the association thread?, store number)
    stored: list[str] = []

    def on_pdu(event):
        if isinstance(event.pdu, P_DATA_TF):
            readers.append((threading.current_thread() is event.assoc, len(stored)))

    @fast_store_handler
    def handle(event):
        stored.append(event.request.AffectedSOPInstanceUID)
        return 0x0000

    statuses, sent = stores_over_one_association(
        tmp_path, "INLINE", [(evt.EVT_C_STORE, handle), (evt.EVT_PDU_RECV, on_pdu)], 6)
    assert statuses == [0x0000] * 6
    assert stored == sent
    later = [on_own for on_own, before in readers if before >= 1]
    assert later and all(later), readers


def _assoc(state="Sta6", acceptor=True, sock=None, ended=False):
    """What _socket_if_eligible looks at, with a stand-in DUL that is alive."""
    dul = SimpleNamespace(socket=SimpleNamespace(socket=sock, _is_connected=True), _kill_thread=False,
                          state_machine=SimpleNamespace(current_state=state), is_alive=lambda: True)
    if ended:
        dul._dsmpacs_ended = True
    return SimpleNamespace(dul=dul, is_acceptor=acceptor)


def test_only_an_established_plain_acceptor_reads_inline(socket_pair):
    ours, _ = socket_pair
    assert inline._socket_if_eligible(_assoc(sock=ours)) is ours
    assert inline._socket_if_eligible(_assoc(state="Sta8", sock=ours)) is None      # release asked
    assert inline._socket_if_eligible(_assoc(state="Sta13", sock=ours)) is None
    assert inline._socket_if_eligible(_assoc(acceptor=False, sock=ours)) is None    # our own SCU
    assert inline._socket_if_eligible(_assoc(sock=ours, ended=True)) is None        # cut by transport
    assert inline._socket_if_eligible(_assoc(sock=None)) is None
    killed = _assoc(sock=ours)
    killed.dul._kill_thread = True
    assert inline._socket_if_eligible(killed) is None
    tls_socket = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).wrap_socket(
        socket.socket(), server_side=True, do_handshake_on_connect=False)
    try:
        assert inline._socket_if_eligible(_assoc(sock=tls_socket)) is None         # one reader for TLS
    finally:
        tls_socket.close()


def _dul_wait(assoc, sock, monkeypatch) -> tuple[list, object]:
    """Run the DUL thread's idle wait once on the DUL's own thread: what its
    select() watched, and the readable answer it left for AssociationSocket.ready."""
    dul = assoc.dul
    dul.socket = SimpleNamespace(socket=sock)
    watched, seen = [], {}
    real_select = reactor.select.select

    def recording_select(rlist, *args):
        watched.append(list(rlist))
        return real_select(rlist, *args)

    monkeypatch.setattr(reactor.select, "select", recording_select)

    def wait_once():
        reactor._DulClock().sleep(0.001)
        seen["readable"] = dul.__dict__.get("_dsmpacs_readable")

    dul.run = wait_once
    dul.start()
    dul.join(5)
    assert not dul.is_alive()
    return watched, seen["readable"]


def test_the_dul_thread_leaves_the_socket_alone_while_the_association_thread_reads(socket_pair, monkeypatch):
    """With the turn taken, the DUL thread's wait watches only its wake-up pipe; with
    the turn free it watches the socket too, as before. Either way it leaves no
    "readable" answer for AssociationSocket.ready: the association thread may take
    the turn and read the request between that wait and the DUL thread's next
    turn, and a stale answer then blocked the DUL thread in a read, holding the
    turn, while the response to that request (a C-FIND's, queued for the DUL
    thread by pynetdicom) waited; findscu saw the association aborted (3 of 5
    runs of test_audit_coverage's C-FIND step, before this was fixed)."""
    inline.install()
    reactor.install()
    ours, peer = socket_pair
    peer.sendall(b"\x04")                       # the peer's next PDU has begun
    held = Association(AE(), "acceptor")
    with inline.turn(held.dul):
        watched, readable = _dul_wait(held, ours, monkeypatch)
    assert watched == [[held.dul._dsmpacs_waker.read_fd]] and readable is None
    free = Association(AE(), "acceptor")
    watched, readable = _dul_wait(free, ours, monkeypatch)
    assert watched == [[ours, free.dul._dsmpacs_waker.read_fd]] and readable is None
