"""Compiled wheels make one .spk per DSM arch family, with manylinux2014 wheels only.

The application needs compiled wheels (numpy, the pixel decoders, MarkupSafe);
Pillow is added through SPK_EXTRA_REQUIREMENTS for the viewer. The builds must
give x86_64 and armv8 packages whose wheels load on DSM 7.1's glibc 2.26,
installed offline on the fake NAS and imported by the package user.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.dsm.conftest import ROOT, build_spk
from tests.dsm.harness import read_info

# The newest releases that still publish manylinux2014 wheels for x86_64 and aarch64.
DSM_PINS = {"numpy": "2.2.6", "pillow": "12.2.0"}


def constraints_with(tmp_path: Path, pins: dict[str, str]) -> Path:
    lines = [line for line in (ROOT / "constraints.txt").read_text().splitlines()
             if line.split("==")[0].strip().lower() not in pins]
    path = tmp_path / "constraints-dsm.txt"
    path.write_text("\n".join(lines + [f"{name}=={version}" for name, version in pins.items()]) + "\n")
    return path


def wheel_names(spk: Path) -> list[str]:
    with tarfile.open(spk, "r:") as outer:
        payload = outer.extractfile("package.tgz")
        with tarfile.open(fileobj=payload, mode="r:gz") as inner:
            return sorted(Path(n).name for n in inner.getnames()
                          if n.startswith("wheels/") and n.endswith(".whl"))


@pytest.fixture(scope="module")
def arch_builds(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("arch")
    built = build_spk(tmp / "out", "7", SPK_CONSTRAINTS=str(constraints_with(tmp, DSM_PINS)),
                      SPK_EXTRA_REQUIREMENTS="numpy pillow")
    by_arch = {}
    for spk in built:
        with tarfile.open(spk, "r:") as tar:
            by_arch[read_info(tar.extractfile("INFO").read().decode())["arch"]] = spk
    return by_arch


@pytest.mark.slow
def test_one_package_per_arch_family_with_manylinux2014_wheels(arch_builds):
    assert set(arch_builds) == {"x86_64", "armv8"}
    for arch, machine in (("x86_64", "x86_64"), ("armv8", "aarch64")):
        assert arch_builds[arch].name == f"dsmpacs-{arch}-0.1.0-0007.spk"
        names = wheel_names(arch_builds[arch])
        compiled = [n for n in names if not n.endswith("-none-any.whl")]
        assert {"numpy", "pillow", "python_gdcm", "markupsafe"} <= {n.split("-")[0] for n in compiled}
        for name in compiled:
            tags = name[:-len(".whl")].split("-")[-1].split(".")
            # glibc <= 2.17 (DSM 7.1 has 2.26): manylinux2014/_2_17 or older, such as
            # websockets' manylinux1 (= _2_5) wheel.
            assert any(re.fullmatch(rf"manylinux(1|2010|2014|_2_(5|12|17))_{machine}", t) for t in tags), name
            assert "-cp311-" in name, name


@pytest.mark.slow
def test_compiled_wheels_install_offline_and_load(arch_builds, fake_dsm_factory):
    dsm = fake_dsm_factory()
    dsm.install(arch_builds["x86_64"], {"wizard_admin_password": "Angio-suite-2026",
                                        "wizard_admin_password_confirm": "Angio-suite-2026"},
                start=False)
    python = dsm.package_dir() / "target" / "env" / "bin" / "python"
    done = dsm.as_package_user(str(python), "-c", "import numpy, PIL.Image, dsmpacs; "
                               "print(numpy.__version__, PIL.__version__)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [DSM_PINS["numpy"], DSM_PINS["pillow"]]


def run_build(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "spk_build.sh")], capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "PYTHON": sys.executable,
                               "SPK_BUILD": "9", "SPK_OUT": str(tmp_path), **env})


def test_a_pin_without_manylinux2014_wheels_stops_the_build(tmp_path):
    """numpy 2.3+ publishes manylinux_2_28 wheels only, which DSM 7.1 cannot load."""
    constraints = constraints_with(tmp_path, {"numpy": "2.4.6"})
    done = run_build(tmp_path, SPK_CONSTRAINTS=str(constraints), SPK_EXTRA_REQUIREMENTS="numpy")
    assert done.returncode != 0
    assert "manylinux2014" in done.stderr and "numpy" in done.stderr
    assert not list(tmp_path.glob("*.spk"))


def test_an_unpinned_requirement_stops_the_build(tmp_path):
    done = run_build(tmp_path, SPK_EXTRA_REQUIREMENTS="six")
    assert done.returncode != 0
    assert re.search(r"six \S+ is not pinned in constraints.txt", done.stderr), done.stderr
    assert not list(tmp_path.glob("*.spk"))
