"""Wake pynetdicom's reactor threads on events instead of polling every millisecond.

pynetdicom 3.0 runs two threads per association that poll: the DUL reactor
sleeps ``_run_loop_delay`` (1 ms) whenever a loop found nothing to do, and the
association reactor sleeps 1 ms before every look at its message queue. Each
DIMSE exchange crosses those sleeps several times, which bounded small
instances to about 3 ms each before any of our work (measured with a no-op
C-STORE handler and dcmtk storescu: 6.6 s for 2,000 instances).

This module keeps pynetdicom's loops and only changes how their idle waits
end:

* the DUL thread waits in ``select()`` on its socket and on a self-pipe that
  ``send_pdu`` writes to, so it wakes as soon as the peer sends data or the
  association has a PDU to send; it still wakes at least every 10 ms for its
  timers (ARTIM, idle timeout) and for being stopped; the pipe is read only
  when signalled. While the association thread does the DUL's work
  (engine/inline.py) it watches only the pipe;
* when the association thread's own wait (engine/inline.py) found the socket
  readable, the next ``AssociationSocket.ready`` takes that answer instead of
  asking select() again: it holds the DUL's turn, so nobody else reads the
  socket in between. The DUL thread's wait gives no such answer: the association
  thread may take the turn and read the socket between that wait and the DUL
  thread's next turn, and a stale "readable" would block the DUL thread in a
  read, holding the turn, with the response it should send still queued;
* the association thread waits on its DIMSE message queue's condition for at
  most the same 1 ms, so a complete message is served at once, and release,
  abort and timeouts are noticed exactly as before; on an established plain
  acceptor association it spends that wait reading its socket instead
  (engine/inline.py);
* that queue wakes every waiter when a message arrives, not one: an SCU
  request (C-STORE of a C-MOVE sub-operation, C-GET, storage commitment)
  waits for its response in ``msg_queue.get`` on the same condition while the
  paused association thread waits in its idle sleep. With Queue's single
  ``notify`` the response could wake the idle thread, which leaves it queued,
  and the requester slept on until ``dimse_timeout``: the 60 s C-MOVE stall
  seen under CPU load;
* the reactor's "paused" flag can no longer be cleared by the side thread that
  serves an N-EVENT-REPORT, which deadlocked release() (see _set_paused);
* another thread sees the reactor as paused only while it is blocked at its
  checkpoint (``Checkpoint``), so a response cannot be taken by the reactor
  from the thread that sent the request.

The waits only apply on those two threads of pynetdicom's own classes; every
other caller of ``time.sleep`` in those modules gets the real one.
"""
from __future__ import annotations

import os
import queue
import select
import ssl
import threading
import time as _time

from pynetdicom import association as _association
from pynetdicom import dimse as _dimse
from pynetdicom import dul as _dul
from pynetdicom import transport as _transport

from dsmpacs.dicom.engine import inline

DUL_IDLE_WAIT = 0.01           # upper bound on how long an idle DUL thread sleeps
ASSOC_REACTOR_SLEEP = 0.001    # the fixed sleep at the top of Association._run_reactor
_installed = False


class _Waker:
    """A self-pipe: writing a byte makes the DUL thread's select() return."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        # A write after close could hit a reused descriptor number, so wake and
        # close are serialised and a closed waker never writes.
        self._lock = threading.Lock()
        self._closed = False

    def wake(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                os.write(self.write_fd, b"\0")
            except (BlockingIOError, OSError):
                pass    # already signalled

    def drain(self) -> None:
        if self._closed:
            return
        try:
            while os.read(self.read_fd, 512):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for fd in (self.read_fd, self.write_fd):
                try:
                    os.close(fd)
                except OSError:
                    pass


class _DulClock:
    """Stands in for the ``time`` module inside pynetdicom.dul."""

    def __getattr__(self, name):
        return getattr(_time, name)

    def sleep(self, seconds: float) -> None:
        dul = threading.current_thread()
        waker = getattr(dul, "_dsmpacs_waker", None)
        sock = getattr(getattr(dul, "socket", None), "socket", None)
        if waker is None or sock is None or not isinstance(dul, _dul.DULServiceProvider):
            _time.sleep(seconds)
            return
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return      # decrypted bytes already buffered: select() would not see them
        # While the association thread does the DUL's work (engine/inline.py), the
        # socket is its to watch: waking here too would cost a switch per PDU.
        watched = [waker.read_fd] if inline.held_by_other(dul) else [sock, waker.read_fd]
        try:
            readable, _, _ = select.select(watched, [], [], DUL_IDLE_WAIT)
        except (OSError, ValueError):
            _time.sleep(seconds)    # socket closed under us: let the loop notice
            return
        if waker.read_fd in readable:
            waker.drain()


def _ready(self) -> bool:
    """AssociationSocket.ready, without a second select() right after the association
    thread's wait found the socket readable (engine/inline.py; plain sockets only)."""
    dul = getattr(self.assoc, "dul", None)
    if (dul is not None and dul.__dict__.pop("_dsmpacs_readable", False) and self._is_connected
            and self.socket is not None and not isinstance(self.socket, ssl.SSLSocket)):
        return True
    return _original_ready(self)


_original_ready = _transport.AssociationSocket.ready.fget


class _AssociationClock:
    """Stands in for the ``time`` module inside pynetdicom.association."""

    def __getattr__(self, name):
        return getattr(_time, name)

    def sleep(self, seconds: float) -> None:
        assoc = threading.current_thread()
        queue = getattr(getattr(assoc, "dimse", None), "msg_queue", None)
        if (seconds != ASSOC_REACTOR_SLEEP or queue is None
                or not isinstance(assoc, _association.Association)):
            _time.sleep(seconds)
            return
        if inline.serve_idle(assoc, seconds):
            return      # read the socket itself until a message came or the wait ended
        with queue.not_empty:
            # qsize() would take the mutex we already hold; _qsize() is the lock-free read.
            if not queue._qsize():
                queue.not_empty.wait(seconds)


class BroadcastQueue(queue.Queue):
    """A Queue whose put wakes every thread waiting to get (see the module doc)."""

    def _put(self, item) -> None:
        super()._put(item)
        # Called with the queue's mutex held, which not_empty shares; put()'s own
        # notify() that follows is then redundant but harmless.
        self.not_empty.notify_all()


class Checkpoint(threading.Event):
    """The association reactor's checkpoint, knowing whether the reactor is blocked on it.

    A send_* call clears the checkpoint and waits until ``_is_paused`` is true before
    it sends its request. But the reactor sets ``_is_paused = True`` on every turn,
    just before it passes the (still open) checkpoint and sets it back to False: a
    caller that looks in that instant sends its request while the reactor runs on,
    and the reactor's next ``get_msg`` takes the response ("Received unexpected
    C-STORE service message"; the caller then waits out dimse_timeout or sees the
    association close). So the reactor only counts as paused while it is really
    blocked here (``holding``), and it stays blocked until the checkpoint is open
    when it looks, not merely after it was opened once.
    """

    holding = False

    def wait(self, timeout: float | None = None) -> bool:
        with self._cond:
            if self._flag:
                return True
            self.holding = True
            try:
                return self._cond.wait_for(lambda: self._flag, timeout)
            finally:
                self.holding = False


def _running(assoc) -> bool:
    return "_started" in assoc.__dict__ and assoc.is_alive()   # (Thread.__init__ runs late)


def _get_paused(assoc) -> bool:
    paused = assoc.__dict__.get("_dsmpacs_paused", False)
    if (not paused or threading.current_thread() is assoc or not _running(assoc)
            or assoc.__dict__.get("_kill", False)):
        return paused
    # Another thread asks whether it may use the association: only if the reactor is
    # blocked at its checkpoint, or is serving a request on its own thread (a C-GET
    # handler sending its sub-operations, see _serve_request's own pause).
    checkpoint = assoc.__dict__.get("_reactor_checkpoint")
    return bool(getattr(checkpoint, "holding", True)) or assoc.__dict__.get("_dsmpacs_serving", False)


def _set_paused(assoc, value: bool) -> None:
    # pynetdicom serves an incoming N-EVENT-REPORT on a short-lived thread of its own,
    # whose _serve_request ends with ``_is_paused = False``. If the association's
    # reactor paused meanwhile (for release() or a send_*), that write hides the pause
    # and the caller spins forever waiting for it: a modality releasing right after
    # its storage commitment report hung this way (pynetdicom issue 820). Only the
    # association's own thread may clear the flag; anyone may set it (kill() does).
    if not value and _running(assoc) and threading.current_thread() is not assoc:
        return
    assoc.__dict__["_dsmpacs_paused"] = value


def install() -> None:
    """Patch pynetdicom once per process (idempotent; called by engine.install)."""
    global _installed
    if _installed:
        return
    original_init = _dul.DULServiceProvider.__init__
    original_send_pdu = _dul.DULServiceProvider.send_pdu
    original_kill = _dul.DULServiceProvider.kill_dul
    original_run = _dul.DULServiceProvider.run_reactor
    original_dimse_init = _dimse.DIMSEServiceProvider.__init__
    original_assoc_init = _association.Association.__init__
    original_serve = _association.Association._serve_request

    def assoc_init(self, *args, **kwargs):
        original_assoc_init(self, *args, **kwargs)
        self._reactor_checkpoint = Checkpoint()
        self._reactor_checkpoint.set()

    def serve_request(self, msg, context_id):
        own = threading.current_thread() is self
        if own:
            self.__dict__["_dsmpacs_serving"] = True
        try:
            original_serve(self, msg, context_id)
        finally:
            if own:
                self.__dict__["_dsmpacs_serving"] = False

    def dimse_init(self, *args, **kwargs):
        original_dimse_init(self, *args, **kwargs)
        self.msg_queue = BroadcastQueue()

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self._dsmpacs_waker = _Waker()

    def send_pdu(self, primitive):
        original_send_pdu(self, primitive)
        self._dsmpacs_waker.wake()

    def kill_dul(self):
        original_kill(self)
        self._dsmpacs_waker.wake()

    def run_reactor(self):
        try:
            original_run(self)
        finally:
            self._dsmpacs_waker.close()

    _dul.DULServiceProvider.__init__ = __init__
    _dul.DULServiceProvider.send_pdu = send_pdu
    _dul.DULServiceProvider.kill_dul = kill_dul
    _dul.DULServiceProvider.run_reactor = run_reactor
    _dimse.DIMSEServiceProvider.__init__ = dimse_init
    _association.Association.__init__ = assoc_init
    _association.Association._serve_request = serve_request
    _transport.AssociationSocket.ready = property(_ready)
    _dul.time = _DulClock()
    _association.time = _AssociationClock()
    _association.Association._is_paused = property(_get_paused, _set_paused)
    _installed = True
