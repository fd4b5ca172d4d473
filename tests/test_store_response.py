"""The C-STORE-RSP written by the association thread (dsmpacs.dicom.engine.respond):
the bytes pynetdicom would send, written only when the DUL would send them next
and never beside another write, queued for the DUL otherwise, and a peer that stops
reading cannot hold the association thread."""
from __future__ import annotations

import queue
import socket
import threading
import time
from types import SimpleNamespace

import pytest
from pynetdicom import evt
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from dsmpacs.dicom.engine import respond
from dsmpacs.dicom.engine.store_service import encode_store_response, fast_store_handler
from tests.peers import stores_over_one_association

VALUE = b"\x03" + encode_store_response(7, "1.2.840.10008.5.1.4.1.1.7", "1.2.3.4", 0x0000)


class FakeDul:
    """What send_response looks at on a DUL, over one end of a real socket pair."""

    def __init__(self, sock: socket.socket, state: str = "Sta6"):
        self._dsmpacs_send_lock = threading.RLock()
        self.socket = SimpleNamespace(socket=sock, _is_connected=True)
        self.state_machine = SimpleNamespace(current_state=state)
        self.to_provider_queue: queue.Queue = queue.Queue()
        self.event_queue: queue.Queue = queue.Queue()
        self.assoc = SimpleNamespace(network_timeout=0.3)
        self.queued: list[object] = []

    def send_pdu(self, primitive) -> None:
        self.queued.append(primitive)


@pytest.fixture
def pair():
    ours, peer = socket.socketpair()
    peer.settimeout(5)
    yield ours, peer
    ours.close()
    peer.close()


def _pdata() -> P_DATA:
    pdata = P_DATA()
    pdata.presentation_data_value_list = [[1, VALUE]]
    return pdata


def test_written_here_byte_for_byte_as_pynetdicom_would(pair):
    ours, peer = pair
    dul = FakeDul(ours)
    pdata = _pdata()
    assert respond.send_response(dul, pdata, 1, VALUE) is True
    expected = P_DATA_TF(pdata).encode()
    assert peer.recv(65536) == expected
    assert dul.queued == []


@pytest.mark.parametrize("case", ["Sta8", "Sta13", "queued", "event", "condemned", "no socket"])
def test_queued_for_the_dul_whenever_it_would_not_send_it_next(pair, case):
    ours, peer = pair
    dul = FakeDul(ours, state=case if case.startswith("Sta") else "Sta6")
    if case == "queued":
        dul.to_provider_queue.put(object())      # e.g. an earlier response still waiting
    elif case == "event":
        dul.event_queue.put("Evt19")             # e.g. junk to answer with A-ABORT first
    elif case == "condemned":
        dul._dsmpacs_ended = True                # engine/transport.py cut the connection
    elif case == "no socket":
        dul.socket.socket = None
    pdata = _pdata()
    assert respond.send_response(dul, pdata, 1, VALUE) is False
    assert dul.queued == [pdata]
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(1)


def test_waits_for_a_state_machine_action_under_way(pair):
    """The DUL thread holds the send lock for each action (an A-ABORT being sent, a
    state change): the response is neither written inside it nor decided before it."""
    ours, peer = pair
    dul = FakeDul(ours)
    lock = dul._dsmpacs_send_lock
    lock.acquire()
    done = threading.Event()
    results = []
    writer = threading.Thread(target=lambda: (results.append(respond.send_response(dul, _pdata(), 1, VALUE)),
                                              done.set()))
    writer.start()
    try:
        assert not done.wait(0.3)
        dul.state_machine.current_state = "Sta13"    # the action moved the state on
    finally:
        lock.release()
    writer.join(5)
    assert results == [False] and len(dul.queued) == 1


def fill(sock: socket.socket) -> None:
    """Fill the socket's send buffer (the peer reads nothing), then make it blocking again."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sock.setblocking(False)
    try:
        while True:
            sock.send(b"\0" * 4096)
    except BlockingIOError:
        pass
    sock.setblocking(True)


def test_a_full_socket_leaves_the_response_to_the_dul(pair):
    ours, _peer = pair
    fill(ours)
    dul = FakeDul(ours)
    start = time.monotonic()
    assert respond.send_response(dul, _pdata(), 1, VALUE) is False
    assert time.monotonic() - start < 1
    assert len(dul.queued) == 1


def test_the_rest_of_a_partly_written_pdu_waits_at_most_network_timeout(pair):
    ours, peer = pair
    fill(ours)
    dul = FakeDul(ours)
    start = time.monotonic()
    respond._finish(dul, ours, memoryview(b"rest of the response"))
    assert 0.25 < time.monotonic() - start < 3
    with pytest.raises(OSError):
        ours.send(b"x")                          # shut down: the DUL's read ends too


def test_an_association_answers_every_store_from_its_own_thread(tmp_path, monkeypatch):
    """End to end on a real listener: every C-STORE-RSP of a plain association is
    written by the association thread, and the requester gets each one."""
    written = []
    original = respond.send_response

    def recording(dul, pdata, context_id, value):
        result = original(dul, pdata, context_id, value)
        written.append((result, threading.current_thread() is dul.assoc))
        return result

    monkeypatch.setattr(respond, "send_response", recording)

    @fast_store_handler
    def handle(event):
        return 0x0000

    statuses, _ = stores_over_one_association(tmp_path, "RESPOND", [(evt.EVT_C_STORE, handle)], 5)
    assert statuses == [0x0000] * 5
    assert written == [(True, True)] * 5
