"""An idle association thread reads its peer's next request itself.

pynetdicom gives every association two threads: the DUL thread reads PDUs,
runs the state machine and feeds the DIMSE layer, and the association thread
serves each complete message. For a modality sending one small C-STORE after
another, every instance then crosses from one thread to the other: the DUL
thread wakes on the socket, reads and spools the dataset, queues the message
and wakes the association thread, which takes the GIL from it. With four
modalities sending at once that is eight busy threads on two cores, and the
process's time goes to the scheduler (docs/architecture.md, "A C-STORE").

Here the DUL's work is done by whichever of the two threads holds the DUL's
turn (``turn``, a lock):

* the DUL thread runs pynetdicom's reactor loop (``run_reactor``, one
  iteration is ``step``), but an iteration only when the turn is free; while
  the association thread holds it, the DUL thread's idle wait watches only its
  wake-up pipe (engine/reactor.py), so it is not woken by the socket as well;
* the association thread, when it would otherwise wait idle for a message
  (``serve_idle``, from its reactor's 1 ms sleep), takes the turn and runs the
  same iterations itself: it waits on the socket, reads the PDU, and the state
  machine hands the P-DATA to the DIMSE layer on this thread, until a message
  is complete or the wait is over. Then it lets the turn go and serves the
  message, and the answer goes out from the same thread (engine/respond.py).

Only one thread at a time reads the socket or runs the state machine, so
events keep their order and the state machine sees what pynetdicom's single
DUL thread would have shown it. The association thread does this only where
nothing else needs the DUL meanwhile: an acceptor's association, established
(Sta6), over plain TCP (a TLS socket keeps pynetdicom's single reader: an
``SSLSocket`` buffers decrypted bytes that a poll() does not see), with the DUL
thread running. While the association thread serves a request the turn is
free, so the DUL thread reads as before: a C-CANCEL during a C-FIND, the
C-STORE responses of a C-GET's sub-operations, an A-ABORT. It may take up to
``reactor.DUL_IDLE_WAIT`` (10 ms) to notice that the turn came back, except
when it is woken for something to send.
"""
from __future__ import annotations

import logging
import queue
import select
import ssl
import threading
import time

from pynetdicom import dul as _dul
from pynetdicom.pdu import A_ABORT_RQ

log = logging.getLogger(__name__)
_installed = False


def turn(dul) -> threading.Lock | None:
    """The DUL's turn (made with the DUL; None on one made before ``install``)."""
    return getattr(dul, "_dsmpacs_turn", None)


def held_by_other(dul) -> bool:
    """The association thread holds the turn (the DUL thread never sleeps holding it)."""
    lock = turn(dul)
    return lock is not None and lock.locked()


def step(dul) -> bool | None:
    """One iteration of the DUL's reactor: send one queued primitive or read one PDU,
    then act on one event. True when an event was acted on, False when none was
    waiting, None when the DUL stopped itself after an error (pynetdicom's own
    handling: A-ABORT to the peer, both threads told to end)."""
    if dul.artim_timer.expired:
        dul.event_queue.put("Evt18")
    try:
        if dul._process_recv_primitive():
            pass
        elif dul._is_transport_event():
            dul._idle_timer.restart()
    except Exception as exc:
        log.error("exception in the DUL reactor, aborting the association")
        log.exception(exc)
        abort = A_ABORT_RQ()
        abort.source, abort.reason_diagnostic = 0x02, 0x00
        try:
            dul.socket.send(abort.encode())
        finally:
            dul.assoc.is_aborted = True
            dul.assoc.is_established = False
            dul.assoc._kill = True
            dul._kill_thread = True
        return None
    try:
        event = dul.event_queue.get(block=False)
    except queue.Empty:
        return False
    dul.state_machine.do_action(event)
    return True


def run_reactor(self) -> None:
    """DULServiceProvider.run_reactor: pynetdicom's loop, an iteration only with the turn."""
    self._idle_timer.start()
    idle = False
    lock = self._dsmpacs_turn
    while True:
        if not self.assoc._dul_ready.is_set():
            self.assoc._dul_ready.set()
            idle = True
        if idle:
            _dul.time.sleep(self._run_loop_delay)
        if self._kill_thread:
            return
        if not lock.acquire(blocking=False):
            idle = True             # the association thread is doing this work
            continue
        try:
            acted = step(self)
        finally:
            lock.release()
        if acted is None:
            return
        idle = not acted


def _socket_if_eligible(assoc):
    """The plain socket when the association thread may do the DUL's work now."""
    dul = assoc.dul
    wrapped = dul.socket
    sock = getattr(wrapped, "socket", None)
    if (not assoc.is_acceptor or sock is None or isinstance(sock, ssl.SSLSocket)
            or not getattr(wrapped, "_is_connected", False) or dul._kill_thread
            or getattr(dul, "_dsmpacs_ended", False) or not dul.is_alive()
            or dul.state_machine.current_state != "Sta6"):
        return None
    return sock


def serve_idle(assoc, seconds: float) -> bool:
    """Do the DUL's work on the association thread for at most ``seconds``, until
    a complete message is queued for it. False when it may not (the caller then
    waits as before); True when it did, whatever it found."""
    dul = assoc.dul
    lock = turn(dul)
    messages = assoc.dimse.msg_queue
    if lock is None or _socket_if_eligible(assoc) is None or not lock.acquire(blocking=False):
        return False
    try:
        deadline = time.monotonic() + seconds
        waiter = None
        while not messages._qsize():
            sock = _socket_if_eligible(assoc)
            if sock is None:
                break
            if not (dul.to_provider_queue.qsize() or dul.event_queue.qsize()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if waiter is None:
                    waiter = select.poll()      # not select(): descriptors above 1024 are normal
                    waiter.register(sock, select.POLLIN)
                if not waiter.poll(remaining * 1000):
                    break
                # AssociationSocket.ready takes this answer instead of asking again:
                # with the turn held, nobody else reads the socket before it does.
                dul._dsmpacs_readable = True
            try:
                acted = step(dul)
            except Exception:
                # do_action failed and already told the DUL to stop (kill_dul); the
                # association's reactor sees the DUL end, as when its thread died.
                log.exception("the DUL's state machine failed on the association thread")
                break
            if acted is None:
                break
    finally:
        dul.__dict__.pop("_dsmpacs_readable", None)
        lock.release()
    return True


def install() -> None:
    """Give every DUL its turn and run its reactor with it (engine.install; before
    reactor.install and spool.install, which wrap ``run_reactor``)."""
    global _installed
    if _installed:
        return
    original_init = _dul.DULServiceProvider.__init__

    def __init__(self, *args, **kwargs):
        self._dsmpacs_turn = threading.Lock()
        original_init(self, *args, **kwargs)

    _dul.DULServiceProvider.__init__ = __init__
    _dul.DULServiceProvider.run_reactor = run_reactor
    _installed = True
