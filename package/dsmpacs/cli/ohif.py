"""`dsmpacs ohif fetch`: download the pinned OHIF Viewer build, check it, unpack it.

The build is the ``dist/`` of the @ohif/app npm package: OHIF's own production
build, nothing compiled here. The version and the tarball's sha512 (npm's
"integrity", from the registry's metadata) are pinned below; .ci/run pins the
same two values (a test keeps them equal). A tarball whose hash differs is
refused before anything of it is unpacked.
"""
from __future__ import annotations

import base64
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import click

from dsmpacs.cli import main

OHIF_PACKAGE = "@ohif/app"
OHIF_VERSION = "3.13.2"
OHIF_INTEGRITY = ("sha512-"
                  "WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA==")
OHIF_TARBALL = f"https://registry.npmjs.org/{OHIF_PACKAGE}/-/app-{OHIF_VERSION}.tgz"
STAMP = ".dsmpacs-ohif"          # in the unpacked build: which tarball it came from
DIST = "package/dist/"


class FetchError(Exception):
    pass


def integrity_of(path: Path) -> str:
    digest = hashlib.sha512()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return "sha512-" + base64.b64encode(digest.digest()).decode("ascii")


def installed(directory: Path) -> bool:
    stamp = directory / STAMP
    return stamp.is_file() and stamp.read_text().split() == [OHIF_VERSION, OHIF_INTEGRITY]


def unpack(tarball: Path, directory: Path) -> None:
    """Check the tarball against the pin, then unpack its dist/ as ``directory``
    (built beside it and renamed in place: a half-unpacked build is never served)."""
    found = integrity_of(tarball)
    if found != OHIF_INTEGRITY:
        raise FetchError(f"{tarball}: integrity {found} is not the pinned {OHIF_INTEGRITY}")
    if directory.exists() and any(directory.iterdir()) and not (directory / STAMP).is_file():
        # It is replaced as a whole: never a directory that holds something else.
        raise FetchError(f"{directory} is not empty and holds no OHIF build fetched by this command")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ohif-", dir=directory.parent))
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            members = []
            for member in tar.getmembers():
                if member.name.startswith(DIST) and len(member.name) > len(DIST):
                    member.name = member.name[len(DIST):]
                    members.append(member)
            if not any(m.name == "index.html" for m in members):
                raise FetchError(f"{tarball} holds no {DIST}index.html")
            # filter="data": no links out of the directory, no device files, sane modes.
            tar.extractall(staging, members=members, filter="data")
        (staging / STAMP).write_text(f"{OHIF_VERSION} {OHIF_INTEGRITY}\n")
        os.chmod(staging, 0o755)
        old = directory.with_name(directory.name + ".old")
        if directory.exists():
            shutil.rmtree(old, ignore_errors=True)
            directory.rename(old)
        staging.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def download(url: str, target: Path) -> None:
    with urllib.request.urlopen(url, timeout=60) as answer, open(target, "wb") as out:
        shutil.copyfileobj(answer, out, 1 << 20)


@main.group("ohif")
def ohif() -> None:
    """The OHIF Viewer served at /ohif/ (setting ohif_dir, docs/viewer.md)."""


@ohif.command("fetch")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where the build goes (then: ohif_dir = this directory).")
@click.option("--tarball", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Use this copy of the tarball instead of downloading it (offline NAS).")
def fetch(directory: Path, tarball: Path | None) -> None:
    """Download the pinned @ohif/app from the npm registry, check its sha512, unpack its dist/."""
    if installed(directory) and tarball is None:
        click.echo(f"{directory}: {OHIF_PACKAGE} {OHIF_VERSION} already there")
        return
    try:
        if tarball is not None:
            unpack(tarball, directory)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                target = Path(tmp) / f"app-{OHIF_VERSION}.tgz"
                click.echo(f"downloading {OHIF_TARBALL}")
                download(OHIF_TARBALL, target)
                unpack(target, directory)
    except (FetchError, OSError, tarfile.TarError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{directory}: {OHIF_PACKAGE} {OHIF_VERSION}; set ohif_dir = \"{directory.resolve()}\"")
