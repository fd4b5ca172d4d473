"""The test harness itself: ServerProcess knows when its server is ready."""
from __future__ import annotations

import json

import pytest

from tests.peers import ServerProcess


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
