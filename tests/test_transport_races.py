"""Races between pynetdicom's two threads per connection and the engine's early
close (dsmpacs.dicom.engine.transport), provoked on demand against a real
in-process listener and raw loopback sockets.

The DUL thread reads the peer's first PDU header on its first turn, before it
has acted on the connection event queued when the socket was made (one event
per turn). A junk header marks the connection condemned at once; the
association thread, polling every 50 ms for the A-ASSOCIATE-RQ, then saw a
condemned connection in Sta1 and killed the DUL before it sent its A-ABORT, so
the peer got a bare close (the CI failure of
test_hostile_peers::test_trickling_and_junk_peers_do_not_keep_a_modality_out,
once in about a thousand junk connections). Here the DUL is held for 0.3 s right
after that header read, which makes the window certain.
"""
from __future__ import annotations

import time

import pytest
from pynetdicom import AE
from pynetdicom import transport as _transport
from pynetdicom.sop_class import Verification

from dsmpacs.dicom.engine import transport
from tests.hostile import A_ABORT, HTTP_GET, UNKNOWN_PDU, closed_by_server, connect

HOLD = 0.3      # six of the association thread's 50 ms looks


@pytest.fixture
def held_listener(monkeypatch):
    transport.install()
    engine_recv = _transport.AssociationSocket.recv

    def recv_then_hold(self, nr_bytes):
        data = engine_recv(self, nr_bytes)
        if nr_bytes == 6 and self.assoc.dul.state_machine.current_state == "Sta1":
            time.sleep(HOLD)    # the DUL thread descheduled between its read and its events
        return data

    monkeypatch.setattr(_transport.AssociationSocket, "recv", recv_then_hold)
    ae = AE(ae_title="RACES")
    ae.acse_timeout = 5
    ae.add_supported_context(Verification)
    server = ae.start_server(("127.0.0.1", 0), block=False)
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


@pytest.mark.parametrize("junk", [UNKNOWN_PDU, HTTP_GET], ids=["unknown-pdu", "http"])
def test_junk_read_before_the_connection_event_still_gets_its_a_abort(held_listener, junk):
    sock = connect(held_listener)
    try:
        sock.sendall(junk)      # here before the DUL's first turn, as from a fast peer
        closed, got = closed_by_server(sock, timeout=HOLD + 5)
    finally:
        sock.close()
    assert closed
    assert got == A_ABORT
