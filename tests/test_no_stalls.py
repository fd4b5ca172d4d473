"""No SCU or SCP path waits for a timeout once its answer has arrived.

Under CPU load, C-MOVEs that take a fraction of a second alone used to finish
exactly dimse_timeout after their last sub-operation: the response to a
sub-operation's C-STORE could wake the paused association thread instead of
the thread waiting for it (dicom/engine/reactor.py). Here 20 C-MOVEs and 20
C-GETs of a 10-instance study run back to back beside two busy processes, and
each must finish far below dimse_timeout. The race behind the stall is narrow,
so this run shows the stall is gone under load rather than provoking it every
time; tests/test_reactor.py pins the mechanism deterministically.
"""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests import factories as f
from tests.peers import dcmtk
from tests.retrieval import StoreSCP, register

pytestmark = pytest.mark.slow

ROUNDS = 20
STUDY_UID = "1.2.826.0.1.3680043.8.498.8801"
DIMSE_TIMEOUT = 60          # the default; a stall shows as about this long
BOUND = 10                  # seconds per retrieve: generous on a loaded 2-core machine


@pytest.fixture
def database_url(tmp_path):
    """The stall is in the DICOM engine, not the index: SQLite only, to keep the suite short."""
    return f"sqlite:///{tmp_path / 'index.sqlite3'}"


@pytest.fixture
def busy():
    """Two processes that keep both cores busy for the length of the test."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    yield
    for proc in spinners:
        proc.kill()
        proc.wait()


@pytest.fixture
def study(server, tmp_path):
    p = f.Patient("STALL^TEST", "PID-STALL")
    files = [f.write(f.ct_slice(size=64, patient=p, study_uid=STUDY_UID, instance_number=i),
                     tmp_path / "src" / f"ct{i}.dcm") for i in range(1, 11)]
    assert server.storescu(*files).returncode == 0
    return files


def _timed(run) -> float:
    start = time.monotonic()
    done = run()
    elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stdout + done.stderr
    return elapsed


def test_back_to_back_moves_and_gets_under_load_do_not_stall(server, study, tmp_path, busy):
    workstation = StoreSCP(tmp_path / "ws", "WORKSTATION").start()
    try:
        register(server, "mover", "MOVER", 104, may_retrieve=True, is_move_destination=False)
        register(server, "ws", "WORKSTATION", workstation.port)
        keys = ("-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY_UID}")
        moves = [_timed(lambda: dcmtk("movescu", "-S", "-aet", "MOVER", "-aec", server.ae_title,
                                      "-aem", "WORKSTATION", *keys, "127.0.0.1", server.port))
                 for _ in range(ROUNDS)]
        for i in range(ROUNDS):
            (tmp_path / f"get{i}").mkdir()
        gets = [_timed(lambda i=i: dcmtk("getscu", "-S", "-aet", "MOVER", "-aec", server.ae_title,
                                         "-od", str(tmp_path / f"get{i}"), *keys, "127.0.0.1",
                                         server.port))
                for i in range(ROUNDS)]
    finally:
        workstation.stop()
    for name, times in (("C-MOVE", moves), ("C-GET", gets)):
        print(f"{ROUNDS} {name}s under load: median {sorted(times)[ROUNDS // 2]:.2f} s, "
              f"max {max(times):.2f} s")        # shown with pytest -s
    slow = [round(t, 1) for t in moves + gets if t > BOUND]
    assert not slow, f"retrieves took {slow} s (dimse_timeout is {DIMSE_TIMEOUT} s): moves {moves}, gets {gets}"
    # Every C-GET brought the whole study back.
    assert all(len(list((tmp_path / f"get{i}").iterdir())) == len(study) for i in range(ROUNDS))
