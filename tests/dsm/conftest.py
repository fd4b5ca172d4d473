"""Fixtures for the DSM package tests: the .spk built once per session, and a fake NAS."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.dsm.harness import FakeDSM
from tests.peers import require

ROOT = Path(__file__).resolve().parents[2]


def build_spk(out: Path, build: str, **env: str) -> list[Path]:
    """Run spk_build.sh; the paths of the packages it printed."""
    done = subprocess.run([str(ROOT / "spk_build.sh")], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable, "SPK_BUILD": build,
                               "SPK_OUT": str(out), **env})
    if done.returncode != 0:
        raise AssertionError(f"spk_build.sh failed ({done.returncode}):\n{done.stderr}")
    return [Path(line) for line in done.stdout.split()]


def for_this_machine(built: list[Path]) -> Path:
    """The noarch package, or the x86_64 one when compiled wheels split the build by arch."""
    names = {p.name.split("-")[1]: p for p in built}
    assert set(names) in ({"noarch"}, {"x86_64", "armv8"}), built
    return names.get("noarch") or names["x86_64"]


@pytest.fixture(scope="session")
def spk_builds(tmp_path_factory) -> dict[str, object]:
    """The package built twice, as builds 1 and 2 of this version: the upgrade goes from
    "previous" to "current" (each the package this machine's arch installs; "all" lists
    every package of build 2). Built once per session because building is the slow part."""
    out = tmp_path_factory.mktemp("spk")
    previous = build_spk(out, "1")
    current = build_spk(out, "2")
    return {"previous": for_this_machine(previous), "current": for_this_machine(current),
            "all": current}


def _usable_by_others(python: str) -> bool:
    """The package user must be able to run the interpreter (pyenv under /root cannot)."""
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                           python, "-c", "import ensurepip, venv, sys; print(sys.version_info[:2])"],
                          capture_output=True, text=True)
    return done.returncode == 0


@pytest.fixture(scope="session")
def harness_python() -> str:
    """A Python 3.11 that plays the SynoCommunity python311 package (Debian's python3.11)."""
    require(os.geteuid() == 0, "the DSM harness plays Package Center: it needs root "
            "(useradd, setpriv, unshare --net)")
    for tool in ("setpriv", "unshare", "useradd", "userdel"):
        require(shutil.which(tool) is not None, f"{tool} is missing (util-linux, passwd)")
    candidates = [os.environ.get("DSM_HARNESS_PYTHON"), "/usr/bin/python3.11", "/usr/local/bin/python3.11"]
    for python in filter(None, candidates):
        if os.path.exists(python) and _usable_by_others(python):
            return python
    require(False, "no Python 3.11 with venv that an unprivileged user can run "
            "(apt-get install python3-venv, or set DSM_HARNESS_PYTHON)")


@pytest.fixture
def fake_dsm_factory(harness_python):
    """Make FakeDSM instances; afterwards stop what they started and remove the package user."""
    made: list[FakeDSM] = []

    def make(**kwargs) -> FakeDSM:
        root = Path(tempfile.mkdtemp(prefix="dsmpacs-dsm-", dir="/tmp"))
        dsm = FakeDSM(root, harness_python, **kwargs)
        made.append(dsm)
        return dsm

    yield make
    for dsm in made:
        left = [pid for pid, _uid, _cmd in dsm.processes_of_root_path()]
        for pid in left:   # a failed test may leave the package's services running
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while left and time.monotonic() < deadline:   # userdel refuses while they exist
            left = [pid for pid in left if os.path.exists(f"/proc/{pid}")]
            time.sleep(0.05)
        dsm.remove_user()
        shutil.rmtree(dsm.root, ignore_errors=True)
