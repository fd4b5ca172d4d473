"""`dsmpacs serve` as two OS processes: ready lines, clean stop, one dies -> all stop."""
from __future__ import annotations

import os
import signal

import requests

from dsmpacs.runfiles import pid_alive
from tests.peers import wait_until


def children(server) -> tuple[int, int]:
    dicom = wait_until(lambda: server.child_pid("dicom"), what="dicom run file")
    web = wait_until(lambda: server.child_pid("web"), what="web run file")
    return dicom, web


def test_two_processes_serve_dicom_and_web_and_stop_cleanly_on_sigterm(server_factory):
    server = server_factory()
    dicom, web = children(server)
    assert len({dicom, web, server.proc.pid}) == 3
    assert server.echoscu().returncode == 0
    health = requests.get(server.url("/-/health"), timeout=10)
    assert health.status_code == 200, health.text
    assert health.json()["checks"]["dicom"]["port"] == server.port
    assert server.stop() == 0
    assert not pid_alive(dicom) and not pid_alive(web)
    assert not (server.data_dir / "run" / "dicom.json").exists()
    assert not (server.data_dir / "run" / "web.json").exists()


def _one_child_dies(server_factory, victim: str):
    server = server_factory()
    pids = dict(zip(("dicom", "web"), children(server)))
    os.kill(pids[victim], signal.SIGKILL)
    code = wait_until(lambda: server.proc.poll() is not None and server.proc.returncode, what="parent exit")
    survivor = pids["web" if victim == "dicom" else "dicom"]
    wait_until(lambda: not pid_alive(survivor), what="the other child to stop")
    assert code != 0
    assert f"the {victim} process exited" in server.log()


def test_parent_stops_web_and_fails_when_the_dicom_process_dies(server_factory):
    _one_child_dies(server_factory, "dicom")


def test_parent_stops_dicom_and_fails_when_the_web_process_dies(server_factory):
    _one_child_dies(server_factory, "web")


def test_children_stop_when_the_parent_is_killed(server_factory):
    server = server_factory()
    dicom, web = children(server)
    server.proc.kill()                        # the parent only, as by the OOM killer
    server.proc.wait()
    wait_until(lambda: not pid_alive(dicom) and not pid_alive(web), what="children to stop")


def test_only_web(server_factory):
    server = server_factory(only="web")
    assert server.port is None and server.web_port
    health = requests.get(server.url("/-/health"), timeout=10).json()
    assert health["status"] == "fail" and health["checks"]["dicom"]["ok"] is False
    assert health["checks"]["index"]["ok"] and health["checks"]["storage"]["ok"]
    assert server.stop() == 0


def test_only_dicom(server_factory):
    server = server_factory(only="dicom")
    assert server.web_port is None and server.port
    assert server.echoscu().returncode == 0
    assert not (server.data_dir / "run" / "web.json").exists()
    assert server.stop() == 0


def test_busy_web_port_is_a_clear_error(server_factory, tmp_path):
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        try:
            server_factory(web_port=port)
        except AssertionError as exc:
            assert f"cannot listen for web on 127.0.0.1:{port}" in str(exc)
        else:
            raise AssertionError("the server started on a busy port")
