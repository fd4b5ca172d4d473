"""A C-STORE-RSP written by the association thread itself, not handed to the DUL thread.

pynetdicom writes every PDU from its DUL thread: the association thread queues the
response (``send_pdu``), reactor.py's self-pipe wakes the DUL thread, which turns
the primitive into Evt9, runs DT-1 and writes the P-DATA-TF. For a small C-STORE
that hand-over is, per instance, a pipe write, a wake-up of the DUL thread, two
pipe reads, a select, and the GIL passed from one thread to the other and back, on
the serial path between one instance and the next.

``send_response`` writes the PDU on the association thread instead, but only where
the DUL would do exactly that next and nothing else can happen in between:

* the DUL's state is Sta6 (established; DT-1 sends P-DATA and stays in Sta6);
* nothing is queued for it to send first (``to_provider_queue``) and no event
  waits for its state machine (``event_queue``): the response takes the place its
  Evt9 would have had;
* the connection is plain TCP. An ``SSLSocket`` is never written by one thread
  while another reads it (OpenSSL's connection objects are not thread-safe), so
  TLS associations keep the queue;
* the check and the write happen under the DUL's send lock (``send_lock``), which
  the DUL thread holds around every state-machine action (``do_action``: every
  other PDU pynetdicom sends, every state change) and engine/transport.py around
  its early close. So the state cannot change and no other PDU can be written
  between the check and the write, and the two threads never write at once.

The write never waits on the peer unbounded: ``MSG_DONTWAIT``. When the socket's
buffer takes nothing (a peer that stopped reading), the primitive is queued for the
DUL as before. When it takes only part, the rest waits for the socket at most
``network_timeout`` (30 s without one); past it the connection is shut down, and
the DUL thread's read of it ends as for any closed connection (Evt17, A-P-ABORT).
A failed write is left to that read too, so Evt17 reaches the state machine once.

Anything else (another state, a queue not empty, TLS, no socket) goes through
``send_pdu`` unchanged, so the answer is never lost, only not hurried.
"""
from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import struct
import threading
import time

from pynetdicom import dul as _dul
from pynetdicom import fsm as _fsm

log = logging.getLogger(__name__)
PARTIAL_SEND_LIMIT = 30.0      # seconds for the rest of a partly written PDU, without network_timeout
_installed = False


def send_lock(dul):
    """The DUL's send lock (made with the DUL; see the module doc). A DUL made
    before ``install`` has none: nothing sends from another thread on it."""
    return getattr(dul, "_dsmpacs_send_lock", None) or contextlib.nullcontext()


def encode_p_data(context_id: int, value: bytes) -> bytes:
    """A P-DATA-TF PDU (PS3.8 9.3.5) of one presentation data value: ``value`` is its
    message control header followed by the fragment, as in pynetdicom's P_DATA lists."""
    item = struct.pack(">IB", len(value) + 1, context_id) + value
    return struct.pack(">BBI", 0x04, 0x00, len(item)) + item


def send_response(dul, pdata, context_id: int, value: bytes) -> bool:
    """Write the one-PDV P-DATA ``pdata`` (``context_id``, ``value``) now, on the
    calling thread, when the DUL would send it next; otherwise queue it with
    ``send_pdu``. True when it was written here."""
    lock = getattr(dul, "_dsmpacs_send_lock", None)
    if lock is not None:
        with lock:
            sock = _next_to_send(dul)
            if sock is not None:
                data = encode_p_data(context_id, value)
                try:
                    sent = sock.send(data, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError as exc:
                    # The connection is gone: the DUL thread's next read says so (Evt17)
                    # as for any closed connection, so Evt17 is not queued twice.
                    log.debug("C-STORE-RSP not sent: %s", exc)
                    return True
                if sent:
                    if sent < len(data):
                        _finish(dul, sock, memoryview(data)[sent:])
                    return True
    # Nothing written: the DUL thread sends it, as pynetdicom does.
    dul.send_pdu(pdata)
    return False


def _next_to_send(dul) -> socket.socket | None:
    """The plain socket when a P-DATA from the user is what the DUL would send next."""
    wrapped = dul.socket
    sock = getattr(wrapped, "socket", None)
    if (sock is None or isinstance(sock, ssl.SSLSocket) or not getattr(wrapped, "_is_connected", False)
            or dul.state_machine.current_state != "Sta6" or getattr(dul, "_dsmpacs_ended", False)
            or dul.to_provider_queue.qsize() or dul.event_queue.qsize()):
        return None
    return sock


def _finish(dul, sock: socket.socket, rest: memoryview) -> None:
    """Write the rest of a partly written PDU within the deadline, else shut the
    connection down: the DUL thread's read of it then ends at once and its state
    machine hears Evt17. Called with the send lock held; the DUL thread would be
    blocked in its own send meanwhile."""
    timeout = getattr(dul.assoc, "network_timeout", None) or PARTIAL_SEND_LIMIT
    deadline = time.monotonic() + timeout
    waiter = select.poll()
    waiter.register(sock, select.POLLOUT)
    try:
        while rest:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("closing the connection from %s: it read no response for %.0f s",
                            _peer(sock), timeout)
                break
            waiter.poll(remaining * 1000)
            try:
                rest = rest[sock.send(rest, socket.MSG_DONTWAIT):]
            except (BlockingIOError, InterruptedError):
                pass
        if not rest:
            return
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _peer(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
        return f"{host}:{port}"
    except (OSError, ValueError):
        return "?"


def install() -> None:
    """Give every DUL its send lock, held around each state-machine action (engine.install)."""
    global _installed
    if _installed:
        return
    original_init = _dul.DULServiceProvider.__init__
    original_do_action = _fsm.StateMachine.do_action

    def __init__(self, *args, **kwargs):
        # Before pynetdicom's __init__: nothing can act before the lock exists.
        self._dsmpacs_send_lock = threading.RLock()
        original_init(self, *args, **kwargs)

    def do_action(self, event):
        with send_lock(self.dul):
            original_do_action(self, event)

    _dul.DULServiceProvider.__init__ = __init__
    _fsm.StateMachine.do_action = do_action
    _installed = True
