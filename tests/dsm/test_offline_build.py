"""`make spk` without a package index (from `make wheelhouse`), and build numbers that
never go backwards (a shallow clone is refused instead of building a "downgrade")."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.dsm.conftest import ROOT, for_this_machine
from tests.dsm.test_arch_builds import wheel_names
from tests.peers import require


def spk_build(*args: str, net: bool = True, **env: str) -> subprocess.CompletedProcess:
    """spk_build.sh; with net=False inside a new network namespace (no interface but a
    downed loopback: no index, no proxy, no DNS)."""
    require(os.geteuid() == 0 and shutil.which("unshare"), "unshare --net needs root")
    cmd = [str(ROOT / "spk_build.sh"), *args]
    if not net:
        cmd = ["unshare", "--net", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable, **env})


def test_make_spk_works_offline_from_the_wheelhouse(tmp_path, spk_builds):
    house = tmp_path / "wheelhouse"
    filled = spk_build("--wheelhouse", SPK_WHEELHOUSE=str(house))
    assert filled.returncode == 0, filled.stderr
    offline = spk_build(net=False, SPK_WHEELHOUSE=str(house), SPK_OUT=str(tmp_path / "out"),
                        SPK_BUILD="2")
    assert offline.returncode == 0, offline.stderr
    assert "offline" in offline.stderr
    built = for_this_machine([Path(p) for p in offline.stdout.split()])
    # The same wheels as the online build of the same commit: the wheelhouse is complete.
    assert wheel_names(built) == wheel_names(spk_builds["current"])


def test_offline_without_the_needed_wheels_says_what_to_do(tmp_path):
    empty = tmp_path / "wheelhouse"
    empty.mkdir()
    failed = spk_build(net=False, SPK_WHEELHOUSE=str(empty), SPK_OUT=str(tmp_path / "out"),
                       SPK_BUILD="2")
    assert failed.returncode != 0
    assert "make wheelhouse" in failed.stderr
    assert not list(tmp_path.glob("out/*.spk"))


def test_a_shallow_clone_is_refused_without_an_explicit_build_number(tmp_path):
    clone = tmp_path / "shallow"
    subprocess.run(["git", "clone", "--quiet", "--depth", "1", f"file://{ROOT}", str(clone)],
                   check=True, timeout=120)
    done = subprocess.run([str(clone / "spk_build.sh")], capture_output=True, text=True, timeout=120,
                          env={**{k: v for k, v in os.environ.items() if k != "SPK_BUILD"},
                               "PYTHON": sys.executable, "SPK_OUT": str(tmp_path / "out")})
    assert done.returncode != 0
    assert "shallow" in done.stderr and "SPK_BUILD" in done.stderr
    assert not (tmp_path / "out").exists()
