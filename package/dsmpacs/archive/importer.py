"""Import from folders, zip files and DICOMDIR media, through the ingest path."""
from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from pydicom import dcmread

from dsmpacs.archive.ingest import Ingest, Origin
from dsmpacs.archive.results import StoreOutcome

log = logging.getLogger(__name__)


@dataclass
class ImportReport:
    stored: int = 0
    duplicates: int = 0
    warnings: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)   # (source, reason)

    def add(self, source: str, outcome: StoreOutcome, message: str) -> None:
        if outcome is StoreOutcome.DUPLICATE:
            self.duplicates += 1
        elif outcome.archived:
            self.stored += 1
            if outcome is StoreOutcome.STORED_WITH_WARNINGS:
                self.warnings += 1
        else:
            self.rejected.append((source, f"{outcome.value}: {message}"))


def _is_dicomdir(path: Path) -> bool:
    return path.name.upper() == "DICOMDIR"


@dataclass(frozen=True)
class ZipLimits:
    """What one ZIP file may expand to. The entries are extracted one at a time, so
    disk use is one entry; these bound the work (a zip bomb's overlapping entries
    declare terabytes from kilobytes)."""
    max_bytes: int = 64 * 2**30
    max_entries: int = 100_000


@dataclass(frozen=True)
class Source:
    """One candidate file: a path, a ZIP entry (``member`` set), or a refusal."""
    label: str
    container: Path | zipfile.ZipFile | None
    member: str | None = None
    refused: str = ""


def _inside(root: Path, path: Path) -> bool:
    """``path``, symlinks resolved, lies under ``root``."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):     # a symlink loop
        return False


def _escapes(parts: list[str]) -> bool:
    """A relative path given by a medium leaves its root: a ``..`` or an absolute or
    drive-qualified component (DICOMDIR File IDs and ZIP names come from the sender)."""
    if not parts:
        return True
    if parts[0].startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", parts[0]):
        return True
    return any(p in ("..", "") or "/" in p or "\\" in p for p in parts)


def _resolve_case_insensitive(base: Path, parts: list[str]) -> Path | None:
    """CD and DVD media often store names in another case than DICOMDIR records them."""
    current = base
    for part in parts:
        exact = current / part
        if exact.exists():
            current = exact
            continue
        matches = [p for p in current.iterdir() if p.name.upper() == part.upper()] \
            if current.is_dir() else []
        if not matches:
            return None
        current = matches[0]
    return current


def _refuse(label: str, reason: str) -> Source:
    return Source(label, None, refused=reason)


def dicomdir_files(dicomdir: Path) -> Iterator[Source]:
    """Files referenced by a DICOMDIR's records, each inside the medium's root."""
    ds = dcmread(dicomdir, force=True)
    root = dicomdir.parent
    for record in ds.get("DirectoryRecordSequence", []):
        file_id = record.get("ReferencedFileID")
        if not file_id:
            continue
        parts = [str(file_id)] if isinstance(file_id, str) else [str(p) for p in file_id]
        label = f"{dicomdir}: {chr(92).join(parts)}"
        if _escapes(parts):
            yield _refuse(label, "the DICOMDIR reference leaves the medium's root")
            continue
        found = _resolve_case_insensitive(root, parts)
        if found is None:
            log.warning("DICOMDIR %s references missing file %s", dicomdir, "/".join(parts))
        elif not _inside(root, found):
            yield _refuse(label, "the DICOMDIR reference resolves (symlink) outside the medium's root")
        else:
            yield Source(str(found), found)


def _zip_entries(path: Path, limits: ZipLimits) -> Iterator[Source]:
    archive = zipfile.ZipFile(path)
    infos = [i for i in archive.infolist()
             if not i.is_dir() and not Path(i.filename).name.upper() == "DICOMDIR"]
    declared = sum(i.file_size for i in infos)
    if len(infos) > limits.max_entries or declared > limits.max_bytes:
        archive.close()
        yield _refuse(str(path), f"the ZIP holds {len(infos)} entries of {declared // 2**20} MiB, "
                                 f"more than {limits.max_entries} entries or "
                                 f"{limits.max_bytes // 2**20} MiB (zip_max_entries, zip_max_mb)")
        return
    for info in infos:
        label = f"{path}:{info.filename}"
        if _escapes(info.filename.replace("\\", "/").split("/")):
            yield _refuse(label, "the ZIP entry name leaves the archive's root")
        else:
            yield Source(label, archive, info.filename)


def _folder(path: Path, limits: ZipLimits) -> Iterator[Source]:
    dicomdir = next((p for p in path.iterdir() if _is_dicomdir(p)), None)
    if dicomdir is not None:
        yield from dicomdir_files(dicomdir)
        return
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            f = Path(root) / name
            if _is_dicomdir(f):
                continue
            if f.is_symlink() and not _inside(path, f):
                yield _refuse(str(f), "a symlink that resolves outside the imported folder")
            elif zipfile.is_zipfile(f) and f.suffix.lower() == ".zip":
                yield from _zip_entries(f, limits)
            else:
                yield Source(str(f), f)


def iter_sources(paths: list[Path], limits: ZipLimits = ZipLimits()) -> Iterator[Source]:
    """Every candidate file, and every refused one with its reason."""
    for path in paths:
        if path.is_dir():
            yield from _folder(path, limits)
        elif _is_dicomdir(path):
            yield from dicomdir_files(path)
        elif path.suffix.lower() == ".zip" and zipfile.is_zipfile(path):
            yield from _zip_entries(path, limits)
        else:
            yield Source(str(path), path)


def count_sources(paths: list[Path], limits: ZipLimits = ZipLimits()) -> int:
    return sum(1 for _ in iter_sources(paths, limits))


def import_paths(ingest: Ingest, paths: list[Path], origin: Origin,
                 progress: Callable[[int], None] | None = None,
                 limits: ZipLimits = ZipLimits()) -> ImportReport:
    report = ImportReport()
    scratch = Path(tempfile.mkdtemp(prefix="import-", dir=ingest.storage.tmp_dir))
    try:
        for item in iter_sources(paths, limits):
            if item.refused:
                log.warning("import: refused %s: %s", item.label, item.refused)
                report.rejected.append((item.label, item.refused))
            elif isinstance(item.container, zipfile.ZipFile):
                # Header parsing needs a seekable file; extract the entry to scratch,
                # under a fixed name whatever the entry calls itself.
                target = scratch / "entry"
                with item.container.open(item.member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                report.add(item.label, *_import(ingest, target, origin))
            elif not item.container.is_file():
                report.rejected.append((item.label, "not a file"))
            else:
                report.add(item.label, *_import(ingest, item.container, origin))
            if progress:
                progress(1)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return report


def _import(ingest: Ingest, source: Path, origin: Origin) -> tuple[StoreOutcome, str]:
    result = ingest.import_file(source, origin)
    return result.outcome, result.message
