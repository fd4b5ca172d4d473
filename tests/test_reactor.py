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
    assoc._is_paused = True                  # the reactor paused for release()
    _write_from_side_thread(assoc, False)    # the N-EVENT-REPORT thread finishing
    assert assoc._is_paused is True
    _write_from_side_thread(assoc, True)     # setting it is always allowed (kill() does)
    assert assoc._is_paused is True


def test_before_and_after_its_thread_runs_anyone_may_clear_it():
    reactor.install()
    assoc = Association(AE(), "requestor")   # not started: is_alive() is False
    assoc._is_paused = True
    _write_from_side_thread(assoc, False)
    assert assoc._is_paused is False
