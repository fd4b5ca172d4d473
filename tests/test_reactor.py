"""The guard on pynetdicom's reactor "paused" flag (dsmpacs.dicom.engine.reactor).

pynetdicom serves an incoming N-EVENT-REPORT on a thread of its own that clears
the flag when it finishes; when that lands after the association's reactor paused
for release(), release() waits forever. The CI run that found it hung in
test_commitment for ten minutes; the race is too narrow to provoke on demand, so
this checks the guard itself on a real pynetdicom Association.
"""
from __future__ import annotations

import threading

from pynetdicom import AE
from pynetdicom.association import Association

from dsmpacs.dicom.engine import reactor


def _write_from_side_thread(assoc: Association, value: bool) -> None:
    side = threading.Thread(target=setattr, args=(assoc, "_is_paused", value))
    side.start()
    side.join()


def test_a_side_thread_cannot_unpause_a_running_association():
    reactor.install()
    assoc = Association(AE(), "requestor")
    assert assoc._is_paused is False
    assoc.is_alive = lambda: True            # as while its reactor thread runs
    assoc._reactor_checkpoint.clear()        # release() asks for a pause...
    blocked = threading.Thread(target=assoc._reactor_checkpoint.wait)
    blocked.start()                          # ...and the reactor is blocked at its checkpoint
    assoc._is_paused = True
    try:
        _write_from_side_thread(assoc, False)    # the N-EVENT-REPORT thread finishing
        assert assoc._is_paused is True
        _write_from_side_thread(assoc, True)     # setting it is always allowed (kill() does)
        assert assoc._is_paused is True
    finally:
        assoc._reactor_checkpoint.set()
        blocked.join(5)


def test_before_and_after_its_thread_runs_anyone_may_clear_it():
    reactor.install()
    assoc = Association(AE(), "requestor")   # not started: is_alive() is False
    assoc._is_paused = True
    _write_from_side_thread(assoc, False)
    assert assoc._is_paused is False


def test_a_response_wakes_the_requester_even_when_the_idle_reactor_waits_first():
    """The 60 s C-MOVE stall: the association thread, idle, waits on its DIMSE
    queue's condition (engine/reactor.py's clock); the requester then waits for
    its response on the same condition. A put must wake the requester, not only
    the oldest waiter (the idle thread, which leaves the message queued)."""
    import time

    reactor.install()
    msg_queue = Association(AE(), "requestor").dimse.msg_queue
    idle_waiting = threading.Event()

    def idle_reactor():
        with msg_queue.not_empty:
            idle_waiting.set()
            msg_queue.not_empty.wait(5)      # as the clock's sleep does, only longer

    idle = threading.Thread(target=idle_reactor)
    idle.start()
    assert idle_waiting.wait(5)
    got: list[object] = []
    requester = threading.Thread(target=lambda: got.append(msg_queue.get(timeout=5)))
    requester.start()
    while not msg_queue.not_empty._waiters or len(msg_queue.not_empty._waiters) < 2:
        time.sleep(0.001)                    # both wait now, the idle thread first
    start = time.monotonic()
    msg_queue.put((1, "C-STORE-RSP"))
    requester.join(5)
    elapsed = time.monotonic() - start
    idle.join(5)
    assert got == [(1, "C-STORE-RSP")]
    assert elapsed < 1.0, f"the requester woke only after {elapsed:.1f} s"


def test_another_thread_sees_the_reactor_paused_only_while_it_is_blocked():
    """The reactor marks itself paused on every turn just before it passes its open
    checkpoint; a send_* call that looked then would send while the reactor runs on,
    and the reactor would take the response. Paused means blocked at the checkpoint."""
    import time

    reactor.install()
    assoc = Association(AE(), "requestor")
    assoc.__dict__["_started"] = threading.Event()   # as once its thread was started
    assoc.is_alive = lambda: True
    assoc._is_paused = True                 # the reactor's mark, checkpoint still open
    assert assoc._is_paused is False        # ...is not a pause for anyone else

    assoc._reactor_checkpoint.clear()       # a send_* call asks for a pause
    blocked = threading.Thread(target=assoc._reactor_checkpoint.wait)
    blocked.start()                         # the reactor reaches the checkpoint
    deadline = time.monotonic() + 5
    while not assoc._is_paused and time.monotonic() < deadline:
        time.sleep(0.001)
    assert assoc._is_paused is True
    assoc._reactor_checkpoint.set()
    blocked.join(5)
    assert not blocked.is_alive()


def test_ready_takes_the_dul_waits_answer_once_then_asks_select_again(monkeypatch):
    """The association thread's wait found the socket readable (engine/inline.py):
    the next look (AssociationSocket.ready) needs no second select(); the look
    after does."""
    import socket
    from types import SimpleNamespace

    from pynetdicom import transport as _transport

    reactor.install()
    ours, peer = socket.socketpair()
    try:
        dul = SimpleNamespace(_dsmpacs_readable=True)
        wrapped = SimpleNamespace(assoc=SimpleNamespace(dul=dul), socket=ours, _is_connected=True)
        calls = []
        real_select = reactor.select.select

        def counting_select(*args):
            calls.append(args)
            return real_select(*args)

        monkeypatch.setattr(_transport.select, "select", counting_select)
        assert _transport.AssociationSocket.ready.fget(wrapped) is True
        assert calls == [] and not hasattr(dul, "_dsmpacs_readable")
        assert _transport.AssociationSocket.ready.fget(wrapped) is False    # nothing sent yet
        peer.sendall(b"x")
        assert _transport.AssociationSocket.ready.fget(wrapped) is True
        assert len(calls) == 2
    finally:
        ours.close()
        peer.close()
