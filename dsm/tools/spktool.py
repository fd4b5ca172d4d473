"""The parts of spk_build.sh that are easier to get right in Python.

    spktool.py version PYPROJECT            the project version, checked for DSM
    spktool.py assets SPK_DIR PAYLOAD_DIR   wizards, icons, ui/config, the .sc file
    spktool.py wheels FAMILY PYVER DIR CONSTRAINTS
                                            check the downloaded wheels, write requirements.txt,
                                            print "pure" or "compiled"
    spktool.py license WHEEL_DIR            LICENSE: the product, then each bundled wheel's licence
    spktool.py envsize WHEEL_DIR            KiB the environment built from these wheels takes
    spktool.py changelog CHANGELOG VERSION  the version's items, as INFO's changelog
    spktool.py build-number EPOCH           the DSM build number of a commit time (UTC)
    spktool.py info KEY=VALUE...            INFO, from the fixed fields and the given ones

Run with dsmpacs importable (spk_build.sh sets PYTHONPATH=package): the wizard
rules, the ui/config and the .sc file come from the application's own modules.
"""
from __future__ import annotations

import email.parser
import html
import json
import re
import sys
import tomllib
import zipfile
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import icons  # noqa: E402
import wizards  # noqa: E402

from dsmpacs.dsm import integration, wizard  # noqa: E402
from dsmpacs.settings import Settings  # noqa: E402

OS_MIN_VER = "7.0-40000"
# manylinux2014 = glibc 2.17: loads on DSM 7.1 (glibc 2.26) and 7.2 (2.36).
MAX_GLIBC = (2, 17)
FAMILY_MACHINE = {"x86_64": "x86_64", "armv8": "aarch64"}

INFO_FIXED = {
    "package": integration.PACKAGE,
    "displayname": "DSM PACS",
    "displayname_chs": "DSM PACS 医学影像归档",
    "description": ("DICOM archive (PACS) and web viewer for angiography suites and small hospitals: "
                    "receives images from modalities over DICOM, keeps them bit-exact in a shared "
                    "folder, and lets workstations query and retrieve them."),
    # 网页阅片 ("reading images on the web"): 网页浏览器 would say "web browser".
    "description_chs": ("面向血管造影室和小型医院的 DICOM 影像归档（PACS）与网页阅片：通过 DICOM 接收设备影像，"
                        "在共享文件夹中原样保存，并供工作站查询和调取。"),
    "displayname_cht": "DSM PACS 醫學影像歸檔",
    "description_cht": ("適用於血管攝影室與小型醫院的 DICOM 影像歸檔（PACS）與網頁閱片：透過 DICOM 接收儀器影像，"
                        "在共用資料夾中原樣保存，並供工作站查詢與調閱。"),
    "maintainer": "DSM PACS project",
    "os_min_ver": OS_MIN_VER,
    "dsmuidir": "ui",
    "dsmappname": integration.APP_ID,
}


def fail(message: str) -> None:
    print(f"spk_build: {message}", file=sys.stderr)
    sys.exit(1)


def project_version(pyproject: Path) -> str:
    version = tomllib.loads(pyproject.read_text())["project"]["version"]
    # DSM orders versions by their numbers: digits separated by dots only here;
    # spk_build.sh appends "-<build>".
    if not re.fullmatch(r"\d+(\.\d+){0,3}", version):
        fail(f"project version {version!r} cannot be a DSM version (digits and dots only)")
    return version


def assets(spk_dir: Path, payload: Path) -> None:
    wizards.write_all(spk_dir / "WIZARD_UIFILES")
    image = icons.master()
    icons.write(spk_dir / "PACKAGE_ICON.PNG", 64, image)
    icons.write(spk_dir / "PACKAGE_ICON_256.PNG", 256, image)
    for size in integration.ICON_SIZES:
        icons.write(payload / "ui" / integration.ICON_TEMPLATE.format(size), size, image)
    # The .sc file DSM's port-config worker copies before postinst is a link to the one
    # preinst writes from the wizard's answers (dsmpacs/dsm/integration.py).
    sc = payload / integration.SERVICE_FILE
    sc.parent.mkdir(parents=True, exist_ok=True)
    sc.symlink_to(integration.SERVICE_FILE_LINK)
    # The desktop icon with the wizard's default web port; postinst writes the chosen one.
    ui = payload / integration.UI_CONFIG
    ui.parent.mkdir(parents=True, exist_ok=True)
    settings = Settings(web_port=int(wizard.DEFAULTS[wizard.WEB_PORT]))
    ui.write_text(json.dumps(integration.ui_config(settings), indent=2) + "\n", encoding="utf-8")


# --- wheels ---------------------------------------------------------------------
def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_wheel_name(filename: str) -> tuple[str, str, list[str], list[str], list[str]]:
    """name, version, python tags, abi tags, platform tags (PEP 427)."""
    parts = filename[:-len(".whl")].split("-")
    if len(parts) not in (5, 6):
        fail(f"{filename} is not a wheel file name")
    name, version = parts[0], parts[1]
    python, abi, platform = (p.split(".") for p in parts[-3:])
    return name, version, python, abi, platform


def platform_ok(tag: str, machine: str) -> bool:
    if tag == "any":
        return True
    legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
    match = re.fullmatch(r"(manylinux1|manylinux2010|manylinux2014)_(\w+)", tag)
    if match:
        return match.group(2) == machine and legacy[match.group(1)] <= MAX_GLIBC
    match = re.fullmatch(r"manylinux_(\d+)_(\d+)_(\w+)", tag)
    if match:
        return match.group(3) == machine and (int(match.group(1)), int(match.group(2))) <= MAX_GLIBC
    return False


def python_ok(pythons: list[str], abis: list[str], pyver: str) -> bool:
    cp = "cp" + pyver.replace(".", "")
    if "none" in abis and any(p in ("py3", f"py{pyver.replace('.', '')}", cp) for p in pythons):
        return True
    if cp in abis and cp in pythons:
        return True
    if "abi3" in abis:
        return any(p.startswith("cp3") and int(p[3:]) <= int(cp[3:]) for p in pythons)
    return False


def pins(constraints: Path) -> dict[str, str]:
    out = {}
    for line in constraints.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[canonical(name)] = version.strip()
    return out


def wheels(family: str, pyver: str, directory: Path, constraints: Path) -> None:
    machine = FAMILY_MACHINE[family]
    pinned = pins(constraints)
    found = sorted(directory.glob("*.whl"))
    if not found:
        fail(f"no wheels in {directory}")
    requirements, problems, compiled = [], [], False
    for path in found:
        name, version, pythons, abis, platforms = parse_wheel_name(path.name)
        if not python_ok(pythons, abis, pyver):
            problems.append(f"{path.name} does not run on Python {pyver}")
        if not any(platform_ok(tag, machine) for tag in platforms):
            problems.append(f"{path.name} is not a manylinux2014 (glibc <= 2.17) {machine} wheel; "
                            f"DSM 7.1 has glibc 2.26")
        compiled |= platforms != ["any"]
        if canonical(name) != integration.PACKAGE and pinned.get(canonical(name)) != version:
            problems.append(f"{name} {version} is not pinned in {constraints.name} "
                            f"(add {name}=={version})")
        requirements.append(f"{name}=={version}")
    if problems:
        fail("wheel check failed:\n  " + "\n  ".join(problems))
    (directory / "requirements.txt").write_text("\n".join(requirements) + "\n")
    print("compiled" if compiled else "pure")


# --- licence ----------------------------------------------------------------------
PRODUCT_LICENSE = """DSM PACS
Copyright (c) the DSM PACS authors. All rights reserved.

DSM PACS is proprietary software: use it under the agreement by which you
received it. It is provided without warranty of any kind. It is an archive and
viewer, not a diagnostic device: verify images on the modality or a certified
workstation before clinical decisions.

This package bundles the following open-source components, each under its
own licence (the licence texts are in each component's files in the package):
"""


def wheel_license(path: Path) -> str:
    with zipfile.ZipFile(path) as archive:
        meta_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(archive.read(meta_name).decode("utf-8", "replace"))
    if meta.get("License-Expression"):
        return meta["License-Expression"]
    classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or []
                   if c.startswith("License ::")]
    if classifiers:
        return ", ".join(classifiers)
    text = (meta.get("License") or "").strip().splitlines()
    if text:
        return text[0][:80]
    files = meta.get_all("License-File") or []
    return f"see {', '.join(files)} in its wheel" if files else "see the component's files"


def license_text(directory: Path) -> str:
    lines = []
    for path in sorted(directory.glob("*.whl")):
        name, version, *_ = parse_wheel_name(path.name)
        if canonical(name) != integration.PACKAGE:
            lines.append(f"  {name} {version}: {wheel_license(path)}")
    return PRODUCT_LICENSE + "\n".join(lines) + "\n"


# --- extractsize -------------------------------------------------------------------
# postinst builds target/env from the bundled wheels, so the installed package is
# several times package.tgz's content; Package Center checks free space against
# INFO's extractsize alone. Estimated from the wheels (a cross-arch build cannot
# install them): every file rounded up to a 4 KiB block, a .pyc per .py at 1.5 times
# its size (small modules compile to relatively large files), and the venv's own pip
# and setuptools. tests/dsm/test_lifecycle.py compares it with the real install.
VENV_BASE_KIB = 25 * 1024
PYC_FACTOR = 1.5


def env_size_kib(directory: Path) -> int:
    def blocks(size: int) -> int:
        return (size + 4095) // 4096 * 4

    total = VENV_BASE_KIB
    for path in directory.glob("*.whl"):
        with zipfile.ZipFile(path) as wheel:
            for entry in wheel.infolist():
                if entry.is_dir():
                    continue
                total += blocks(entry.file_size)
                if entry.filename.endswith(".py"):
                    total += int(blocks(entry.file_size) * PYC_FACTOR)
    return total


# --- build number -----------------------------------------------------------------
def build_number(epoch: int) -> str:
    """YYDDDHHMM of a UTC time: year in the century, day of the year, hour, minute.

    Later commits give larger numbers (DSM compares the build as a number); a shallow
    clone and a full one give the same; and it stays below 2**31 until 2099, in case
    DSM keeps the build in a 32-bit integer.
    """
    when = datetime.fromtimestamp(epoch, timezone.utc)
    if not 2000 <= when.year <= 2099:
        fail(f"commit time {when.isoformat()} is outside 2000-2099")
    return f"{when.year - 2000:02d}{when.timetuple().tm_yday:03d}{when.hour:02d}{when.minute:02d}"


# --- changelog ----------------------------------------------------------------------
def changelog(path: Path, version: str) -> str:
    """The "- " items of CHANGELOG's "## VERSION" section, numbered on one line (INFO
    values are one line), with HTML's special characters escaped: Package Center shows
    the text as HTML."""
    items: list[str] = []
    section = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif section == version and line.startswith("- "):
            items.append(line[2:].strip())
        elif section == version and line.startswith("  ") and items:
            items[-1] += " " + line.strip()
    if not items:
        fail(f"{path.name} has no items under '## {version}': say what this version changes")
    escaped = [html.escape(item, quote=True) for item in items]
    return " ".join(f"{n}. {item}" for n, item in enumerate(escaped, 1))


# --- INFO -------------------------------------------------------------------------
def info(pairs: list[str]) -> str:
    fields = dict(INFO_FIXED)
    for pair in pairs:
        key, _, value = pair.partition("=")
        fields[key] = value
    fields.setdefault("create_time", datetime.now(timezone.utc).strftime("%Y%m%d-%H:%M:%S"))
    for key, value in fields.items():
        if '"' in value or "\n" in value:
            fail(f"INFO {key} may not contain a double quote or a newline")
    return "".join(f'{key}="{value}"\n' for key, value in fields.items())


def main(argv: list[str]) -> None:
    if not argv:
        fail(__doc__)
    command, args = argv[0], argv[1:]
    if command == "version":
        print(project_version(Path(args[0])))
    elif command == "assets":
        assets(Path(args[0]), Path(args[1]))
    elif command == "wheels":
        wheels(args[0], args[1], Path(args[2]), Path(args[3]))
    elif command == "license":
        sys.stdout.write(license_text(Path(args[0])))
    elif command == "envsize":
        print(env_size_kib(Path(args[0])))
    elif command == "changelog":
        print(changelog(Path(args[0]), args[1]))
    elif command == "build-number":
        print(build_number(int(args[0])))
    elif command == "info":
        sys.stdout.write(info(args))
    else:
        fail(f"unknown command {command!r}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv[1:])
