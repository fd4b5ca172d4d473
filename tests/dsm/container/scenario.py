"""The fake NAS inside the container root (run by enter.sh with the root's python3.11).

Standard library only: the root has Debian's python3.11, which also plays the
SynoCommunity python311 package. Steps: install with the wizard and start; a power
loss and the start at boot that follows, with no wizard variables; an orderly
shutdown; program files lost, the start failing, and Package Center's Repair
bringing it back with the same settings and resources; stop; uninstall. Each step
prints one JSON line (the test reads them); a failed check ends the run with exit 1
and the reason.

    python3.11 /src/tests/dsm/container/scenario.py /spk/dsmpacs-x86_64-....spk
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import time
import traceback
import urllib.request
from pathlib import Path

sys.path.insert(0, "/src")
from tests.dsm.harness import FakeDSM  # noqa: E402

PYTHON = "/usr/bin/python3.11"
# Not the wizard's defaults: answering on them after a start at boot, which gets no
# wizard variable, shows the package runs from its saved settings. The container has
# its own network, where nothing else listens.
DICOM_PORT, WEB_PORT = 11119, 8093
SHARE = "PACS"
ANSWERS = {"wizard_dicom_port": str(DICOM_PORT), "wizard_web_port": str(WEB_PORT),
           "wizard_share_name": SHARE, "wizard_admin_password": "Angio-suite-2026",
           "wizard_admin_password_confirm": "Angio-suite-2026"}


STARTED = time.monotonic()


def report(step: str, **facts) -> None:
    print(json.dumps({"step": step, "seconds": round(time.monotonic() - STARTED, 1), **facts}),
          flush=True)


def check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def answers_http(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/health", timeout=10) as response:
        return response.status


def listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return True
    except OSError:
        return False


def assert_running(dsm: FakeDSM) -> list[int]:
    """status 0, every process of the package runs as its user, both ports answer."""
    code = dsm.status()
    check(code == 0, f"status is {code}, not 0")
    processes = dsm.processes_of_root_path()
    check(bool(processes), "no process of the package runs")
    check(all(uid == dsm.uid != 0 for _, uid, _ in processes), f"not all as the package user: {processes}")
    check(answers_http(WEB_PORT) == 200, "/-/health does not answer 200")
    check(listens(DICOM_PORT), f"nothing listens on the DICOM port {DICOM_PORT}")
    return sorted(pid for pid, _, _ in processes)


def assert_stopped(dsm: FakeDSM) -> None:
    code = dsm.status()
    check(code == 3, f"status is {code}, not 3 (stopped)")
    check(dsm.processes_of_root_path() == [], f"left running: {dsm.processes_of_root_path()}")


def main(spk: Path) -> None:
    dsm = FakeDSM(Path(tempfile.mkdtemp(prefix="dsmpacs-dsm-", dir="/tmp")), PYTHON)
    dsm.install(spk, ANSWERS)
    pids = assert_running(dsm)
    config = (dsm.package_dir() / "var" / "config.toml").read_bytes()
    resource = dsm.resource()
    registered = (dsm.services_d / "dsmpacs.sc").read_text()
    report("install", pids=pids)

    killed = dsm.power_loss()
    check(dsm.status() != 0, "status says running after every process was killed")
    dsm.boot()
    after = assert_running(dsm)
    check(not set(after) & set(killed), "a killed PID is reported as running")
    report("power-loss-boot", killed=killed, pids=after)

    # An orderly shutdown; then program files lost or damaged (the case DSM's Repair is
    # for): the start fails.
    dsm.shutdown()
    assert_stopped(dsm)
    shutil.rmtree(dsm.package_dir() / "target" / "env")
    failed = dsm.try_start()
    check(failed.returncode != 0, "start succeeded without the package's environment")
    check(dsm.status() != 0, "status 0 without the package's environment")
    dsm.repair(spk, start=True)
    report("repair", pids=assert_running(dsm), start_failure=failed.returncode)
    check((dsm.package_dir() / "var" / "config.toml").read_bytes() == config,
          "Repair changed config.toml")
    again = dsm.resource()
    for worker in ("data-share", "port-config"):
        check(again.get(worker) == resource.get(worker),
              f"Repair rendered {worker} differently: {resource.get(worker)} -> {again.get(worker)}")
    acting = {name: part["flag"] for name, part in again.get("mariadb10-db", {}).items()
              if isinstance(part, dict) and str(part.get("flag", "false")).lower() != "false"}
    check(not acting, f"Repair would make the MariaDB worker act: {acting}")
    check((dsm.package_dir() / "shares" / SHARE).is_symlink(), "Repair lost the shared folder link")
    check((dsm.services_d / "dsmpacs.sc").read_text() == registered,
          "Repair registered another port-config file")
    report("repair-kept-settings")

    dsm.stop()
    assert_stopped(dsm)
    allowed = dsm.allowed_dirs()
    dsm.uninstall({})
    check(not dsm.packages.joinpath("dsmpacs").exists(), "/var/packages/dsmpacs is still there")
    check(dsm.processes_of_root_path() == [], "processes left after uninstall")
    outside = dsm.files_owned_outside(allowed)
    check(outside == [], f"the package user owns files outside its folders: {outside}")
    report("uninstall")


def as_init(run) -> int:
    """Run `run` in a child while this process, PID 1 of the container's PID namespace,
    reaps every orphan as an init does (the package's services are started in the
    background and outlive the script that starts them). The child's exit status."""
    child = os.fork()
    if child == 0:
        try:
            run()
            code = 0
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    while True:
        pid, status = os.wait()
        if pid == child:
            return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(as_init(lambda: main(Path(sys.argv[1]))))
