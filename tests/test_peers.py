"""The test harness itself: ServerProcess knows when its server is ready; free_port never
hands out one port twice."""
from __future__ import annotations

import json
import os
import socket

import pytest

from tests.peers import ServerProcess, free_port


@pytest.mark.slow          # two server starts: a few seconds, more on a loaded machine
def test_start_ignores_run_files_left_by_a_killed_server(tmp_path):
    """A SIGKILLed server leaves its run files; the next start on the same data
    directory must wait for its own processes, not report the dead ports."""
    first = ServerProcess(tmp_path / "data", {"database_url": f"sqlite:///{tmp_path / 'index.sqlite3'}"},
                          only="dicom")
    first.start()
    first.kill()
    stale = json.loads((first.data_dir / "run" / "dicom.json").read_text())
    assert stale["port"] == first.port                      # left behind, as after a power cut

    second = ServerProcess(first.data_dir, first.sets, only="dicom")
    try:
        second.start()
        mine = json.loads((second.data_dir / "run" / "dicom.json").read_text())
        assert mine["pid"] != stale["pid"] and second.port == mine["port"]
        assert second.echoscu().returncode == 0
    finally:
        second.stop()


def test_free_port_never_repeats_and_keeps_to_its_worker():
    """A test that asks for its DICOM, web and DICOM-TLS ports one after the other must
    get three ports (CI once failed when the kernel gave one port twice), and a port one
    xdist worker hands out is never one the other worker may hand out."""
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")) % workers
    assert {(port // 2) % workers for port in ports} == {index}
    with socket.socket() as sock:                       # free: the last one can be bound
        sock.bind(("127.0.0.1", ports[-1]))
