"""The fake NAS in a container built without any image: a Debian 12 root from
debootstrap (tests/dsm/container/build-roots.sh, run by .ci/run), entered with unshare
(enter.sh: own mount, PID and network namespaces, the root as an overlay's lower layer).

Inside, Debian's python3.11 plays the python311 package and runs the harness through
install, a power loss and the start at boot (no wizard variables), an orderly shutdown,
a start that fails because program files are lost, Repair, stop and uninstall
(tests/dsm/container/scenario.py). Every step must be reported, in order; the
scenario's own checks end it with the reason.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.dsm.conftest import ROOT
from tests.dsm.container import CACHE, HERE, cached_root
from tests.peers import require

STEPS = ["install", "power-loss-boot", "repair", "repair-kept-settings", "uninstall"]


@pytest.mark.slow
def test_the_lifecycle_with_repair_and_boot_in_a_debootstrap_container(spk_builds):
    require(os.geteuid() == 0, "entering the container root needs root (unshare, mount)")
    root = cached_root("amd64")
    spk = spk_builds["current"]
    # The overlay's writable layer: beside the cached roots, not in /tmp or /var/tmp, where
    # the host harness looks for files of the package user's uid (the container's package
    # user gets the same system uid as the host's).
    (CACHE / "runs").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="container-", dir=CACHE / "runs"))
    try:
        done = subprocess.run([str(HERE / "enter.sh"), str(root), str(work), str(ROOT), str(spk.parent), "--",
                               "/usr/bin/python3.11", "/src/tests/dsm/container/scenario.py", f"/spk/{spk.name}"],
                              capture_output=True, text=True, timeout=900)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    reported = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert [r["step"] for r in reported] == STEPS, done.stdout
    by_step = {r["step"]: r for r in reported}
    # a start at boot after a power loss runs new processes, none of the killed ones
    assert by_step["power-loss-boot"]["killed"] == by_step["install"]["pids"]
    assert not set(by_step["power-loss-boot"]["pids"]) & set(by_step["install"]["pids"])
    assert by_step["repair"]["start_failure"] != 0
    # the cached root is the overlay's lower layer: the run left nothing in it
    assert "dsmpacs:" not in (root / "etc" / "passwd").read_text()
    assert not list((root / "tmp").glob("dsmpacs-dsm-*"))
