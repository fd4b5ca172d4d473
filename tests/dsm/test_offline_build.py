"""`make spk` without a package index (from `make wheelhouse`), and build numbers that
never go backwards (from the commit's time, so a shallow clone builds the same number)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.dsm.conftest import ROOT, for_this_machine
from tests.dsm.harness import version_key
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


def version_of(checkout: Path) -> str:
    done = subprocess.run([str(checkout / "spk_build.sh"), "--version"], capture_output=True,
                          text=True, timeout=120,
                          env={**{k: v for k, v in os.environ.items()
                                  if k not in ("SPK_BUILD", "SOURCE_DATE_EPOCH")},
                               "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def build_number(epoch: int) -> int:
    """spktool.py build-number, in process (the build's own function)."""
    sys.path.insert(0, str(ROOT / "dsm" / "tools"))
    try:
        import spktool
    finally:
        sys.path.remove(str(ROOT / "dsm" / "tools"))
    return int(spktool.build_number(epoch))


def test_a_shallow_clone_builds_the_same_version_and_later_commits_higher(tmp_path):
    """The build number comes from the commit's time: a shallow clone (CI's usual) builds
    what the full checkout builds, not a "downgrade" such as 0.1.0-0001 after 0.1.0-0025."""
    shallow = tmp_path / "shallow"
    subprocess.run(["git", "clone", "--quiet", "--depth", "1", f"file://{ROOT}", str(shallow)],
                   check=True, timeout=120)
    assert subprocess.run(["git", "-C", str(shallow), "rev-parse", "--is-shallow-repository"],
                          capture_output=True, text=True).stdout.strip() == "true"
    version = version_of(shallow)
    assert version == version_of(ROOT)
    head, parent = (int(subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%ct", rev],
                                       capture_output=True, text=True, check=True).stdout)
                    for rev in ("HEAD", "HEAD~1"))
    assert int(version.rsplit("-", 1)[1]) == build_number(head)
    if head // 60 > parent // 60:     # commits in the same minute share a number
        assert build_number(head) > build_number(parent)


def test_build_numbers_follow_time_and_fit_32_bits():
    number = build_number
    moments = [946684800, 1767225599, 1767225600, 1798761600 - 60, 1798761600, 4102444740]
    numbers = [number(t) for t in moments]       # 2000-01-01 ... 2099-12-31 23:59 UTC
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert numbers[0] == 10000 and numbers[-1] == 993652359 < 2**31
    # The old commit-count builds (0.1.0-0341) order before every new one.
    assert version_key("0.1.0-0341") < version_key(f"0.1.0-{numbers[2]}")
