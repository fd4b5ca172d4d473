"""`dsmpacs serve` as two OS processes: ready lines, clean stop, one dies -> all stop."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pydicom
import requests

from dsmpacs.runfiles import pid_alive
from tests import factories as f
from tests.findscu import register
from tests.peers import dcmtk, free_port, wait_until
from tests.webclient import WebSession, add_user


def children(server) -> tuple[int, int]:
    dicom = wait_until(lambda: server.child_pid("dicom"), what="dicom run file")
    web = wait_until(lambda: server.child_pid("web"), what="web run file")
    return dicom, web


def test_two_processes_serve_dicom_and_web_and_stop_cleanly_on_sigterm(server_factory):
    server = server_factory()
    dicom, web = children(server)
    assert len({dicom, web, server.proc.pid}) == 3
    # Forked from serve, not started as new interpreters: the parent's command line.
    parent = (Path("/proc") / str(server.proc.pid) / "cmdline").read_bytes()
    assert {(Path("/proc") / str(pid) / "cmdline").read_bytes() for pid in (dicom, web)} == {parent}
    assert server.echoscu().returncode == 0
    health = requests.get(server.url("/-/health"), timeout=10)
    assert health.status_code == 200, health.text
    assert health.json()["checks"]["dicom"] == {"ok": True}      # anonymous: no port, pid or AE
    admin = WebSession(server)
    admin.login("ops", add_user(server, "ops", "admin"))
    detailed = admin.get("/-/health").json()
    assert detailed["checks"]["dicom"]["port"] == server.port
    assert detailed["checks"]["dicom"]["pid"] == dicom
    assert server.stop() == 0
    assert not pid_alive(dicom) and not pid_alive(web)
    assert not (server.data_dir / "run" / "dicom.json").exists()
    assert not (server.data_dir / "run" / "web.json").exists()


def test_watchdog_restarts_a_killed_dicom_process_keeps_what_it_acknowledged_and_tells(
        server_factory, tmp_path):
    """SIGKILL the DICOM process: the parent starts it again within seconds on the same port,
    the web process keeps serving, the crash is logged and shown on the admin pages, and the
    instance stored before the kill is still found and retrieved."""
    port = free_port()
    server = server_factory(dicom_port=port)
    dicom, web = children(server)
    sent = f.write(f.secondary_capture(), tmp_path / "sc.dcm")
    assert server.storescu(sent).returncode == 0
    admin = WebSession(server)
    admin.login("boss", add_user(server, "boss", "admin"))

    killed_at = time.monotonic()
    os.kill(dicom, signal.SIGKILL)
    again = wait_until(lambda: (pid := server.child_pid("dicom")) not in (None, dicom) and pid,
                       timeout=15, what="a new dicom process")
    wait_until(lambda: server.echoscu().returncode == 0, timeout=15, what="DICOM answering again")
    restarted_in = time.monotonic() - killed_at
    assert restarted_in < 10, restarted_in
    assert server.proc.poll() is None and pid_alive(web) and server.child_pid("web") == web
    assert again != dicom and pid_alive(again)

    assert server.logged("the dicom process exited with status SIGKILL; restarting it")
    told = (server.data_dir / "logs" / "notices.log").read_text()
    assert "service-crashed: The dicom service stopped unexpectedly (exit status SIGKILL)" in told
    page = admin.get(server.url("/admin/storage"))
    assert page.status_code == 200
    assert 'data-system-notice="service-crashed"' in page.text and "SIGKILL" in page.text

    # Nothing acknowledged is lost: the new DICOM process finds and sends the instance.
    uid = str(pydicom.dcmread(sent).SOPInstanceUID)
    register(server, "ws", "GETSCU")
    out = tmp_path / "got"
    out.mkdir()
    got = dcmtk("getscu", "-aec", server.ae_title, "-od", str(out), "-k", "QueryRetrieveLevel=IMAGE",
                "-k", f"SOPInstanceUID={uid}", "127.0.0.1", str(port))
    assert got.returncode == 0, got.stderr
    [copy] = list(out.iterdir())
    assert pydicom.dcmread(copy).SOPInstanceUID == uid
    assert server.stop() == 0


def test_watchdog_gives_up_after_too_many_crashes_and_stops_all(server_factory):
    """With watchdog_max_crashes = 1 the first crash is one too many: the parent stops the
    web process too and exits non-zero, and the admin pages would say so."""
    server = server_factory(watchdog_max_crashes=1)
    dicom, web = children(server)
    os.kill(web, signal.SIGKILL)
    code = wait_until(lambda: server.proc.poll() is not None and server.proc.returncode, what="parent exit")
    wait_until(lambda: not pid_alive(dicom), what="the other child to stop")
    assert code != 0
    assert server.logged("not restarting it")
    record = json.loads((server.data_dir / "run" / "services.json").read_text())
    assert record["web"]["gave_up"] is True and record["web"]["last_status"] == "SIGKILL"
    assert "service-gave-up" in (server.data_dir / "logs" / "notices.log").read_text()


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
