"""The armv8 package's native pixel decoders, run on an emulated aarch64 under qemu-user.

The armv8 .spk carries aarch64 wheels that no x86_64 test can load. Here its decoder
wheels (pyjpegls: JPEG-LS through CharLS; python-gdcm; pylibjpeg-openjpeg: JPEG 2000;
pylibjpeg-rle; Pillow; numpy) are installed for aarch64 and imported by Debian 12's
arm64 python3.11 under qemu-aarch64-static (tests/dsm/container/build-roots.sh
extracts that interpreter and its libraries; nothing needs binfmt_misc). A JPEG-LS
file made by dcmtk's dcmcjpls, an RLE file made by dcmcrle and a JPEG 2000 file made
by pylibjpeg-openjpeg on this machine are decoded there with every native decoder
that handles them, and the pixels must equal the x86_64 decode and the original.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import JPEG2000Lossless

from tests import factories as f
from tests.dsm.container import cached_root
from tests.peers import dcmtk, require

DECODER_WHEELS = ("numpy", "pydicom", "pylibjpeg", "pylibjpeg_openjpeg", "pylibjpeg_rle", "pyjpegls",
                  "python_gdcm", "pillow")
# (file, pydicom decoding plugin): every plugin with native code for that syntax.
CASES = [("jpegls", "pyjpegls"), ("jpegls", "gdcm"), ("rle", "pylibjpeg"),
         ("j2k", "pylibjpeg"), ("j2k", "gdcm"), ("j2k", "pillow")]

DECODE = """
import hashlib, json, platform, sys
import gdcm, jpeg_ls, openjpeg, rle, PIL.Image
from pydicom.pixels import pixel_array
out = {"machine": platform.machine(),
       "modules": {m.__name__: m.__file__ for m in (gdcm, jpeg_ls, openjpeg, rle, PIL.Image)}}
for name, path, plugin in json.loads(sys.argv[1]):
    arr = pixel_array(path, decoding_plugin=plugin)
    out[name + "/" + plugin] = [str(arr.dtype), list(arr.shape), hashlib.sha256(arr.tobytes()).hexdigest()]
print(json.dumps(out))
"""


def armv8_spk(built: list[Path]) -> Path:
    [spk] = [p for p in built if p.name.split("-")[1] == "armv8"]
    return spk


def install_for_aarch64(spk: Path, tmp_path: Path) -> Path:
    """The decoder wheels of the package, installed into a folder for aarch64 CPython 3.11."""
    wheels = tmp_path / "wheels"
    with tarfile.open(spk, "r:") as outer, tarfile.open(fileobj=outer.extractfile("package.tgz"),
                                                        mode="r:gz") as payload:
        members = [m for m in payload.getmembers() if m.name.startswith("wheels/")
                   and m.name.endswith(".whl") and Path(m.name).name.split("-")[0] in DECODER_WHEELS]
        payload.extractall(tmp_path, members=members, filter="data")
    assert {p.name.split("-")[0] for p in wheels.iterdir()} == set(DECODER_WHEELS)
    site = tmp_path / "site-aarch64"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "--no-index", "--no-deps", "--no-compile", "--only-binary=:all:", "--target", str(site),
                           "--platform", "manylinux2014_aarch64", "--python-version", "3.11",
                           "--implementation", "cp", "--abi", "cp311", *map(str, sorted(wheels.iterdir()))],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PIP_CONFIG_FILE": "/dev/null"})
    assert done.returncode == 0, done.stderr
    return site


def fixtures(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    """A 12-bit multi-frame XA, and the same pixels as JPEG-LS, RLE and JPEG 2000 files."""
    original = f.write(f.xa_run(frames=2, size=64), tmp_path / "xa.dcm")
    made = {"jpegls": tmp_path / "xa-jls.dcm", "rle": tmp_path / "xa-rle.dcm", "j2k": tmp_path / "xa-j2k.dcm"}
    dcmtk("dcmcjpls", original, made["jpegls"], check=True)
    dcmtk("dcmcrle", original, made["rle"], check=True)
    ds = dcmread(original)
    ds.compress(JPEG2000Lossless)
    ds.save_as(made["j2k"], enforce_file_format=True)
    return original, made


def elf_machine(path: str) -> int:
    with open(path, "rb") as so:
        header = so.read(20)
    assert header[:4] == b"\x7fELF", path
    return int.from_bytes(header[18:20], "little")


@pytest.mark.slow
def test_armv8_decoders_give_the_x86_pixels_under_qemu(spk_builds, tmp_path):
    arm_root = cached_root("arm64")
    qemu = shutil.which("qemu-aarch64-static")
    require(qemu is not None, "qemu-aarch64-static is missing (apt-get install qemu-user-static)")
    site = install_for_aarch64(armv8_spk(spk_builds["all"]), tmp_path)
    original, made = fixtures(tmp_path)
    jobs = json.dumps([[name, str(made[name]), plugin] for name, plugin in CASES])

    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1",
           "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([qemu, "-L", str(arm_root), str(arm_root / "usr" / "bin" / "python3.11"),
                           "-s", "-c", DECODE, jobs],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    arm = json.loads(done.stdout)
    assert arm.pop("machine") == "aarch64"
    for module, path in arm.pop("modules").items():   # loaded from the package's wheels
        assert path.startswith(str(site)), (module, path)
    for so in site.rglob("*.so*"):
        assert elf_machine(str(so)) == 183, so            # EM_AARCH64: nothing x86 slipped in

    host = subprocess.run([sys.executable, "-c", DECODE, jobs], capture_output=True, text=True, timeout=120)
    assert host.returncode == 0, host.stderr
    x86 = json.loads(host.stdout)
    del x86["machine"], x86["modules"]
    assert arm == x86
    assert set(arm) == {f"{name}/{plugin}" for name, plugin in CASES}
    ref = dcmread(original).pixel_array
    expected = [str(ref.dtype), list(ref.shape), hashlib.sha256(ref.tobytes()).hexdigest()]
    assert all(value == expected for value in arm.values()), (arm, expected)   # lossless: the original
