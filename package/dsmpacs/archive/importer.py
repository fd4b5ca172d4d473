"""Import from folders, zip files and DICOMDIR media, through the ingest path."""
from __future__ import annotations

import logging
import os
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


def dicomdir_files(dicomdir: Path) -> Iterator[Path]:
    """Files referenced by a DICOMDIR's records."""
    ds = dcmread(dicomdir, force=True)
    for record in ds.get("DirectoryRecordSequence", []):
        file_id = record.get("ReferencedFileID")
        if not file_id:
            continue
        parts = [file_id] if isinstance(file_id, str) else list(file_id)
        found = _resolve_case_insensitive(dicomdir.parent, [str(p) for p in parts])
        if found is not None:
            yield found
        else:
            log.warning("DICOMDIR %s references missing file %s", dicomdir, "/".join(parts))


def iter_sources(paths: list[Path]) -> Iterator[tuple[str, Path | zipfile.ZipFile, str | None]]:
    """(label, container, member) for every candidate file; member is set for zip entries."""
    for path in paths:
        if path.is_dir():
            dicomdir = next((p for p in path.iterdir() if _is_dicomdir(p)), None)
            if dicomdir is not None:
                for f in dicomdir_files(dicomdir):
                    yield str(f), f, None
                continue
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    f = Path(root) / name
                    if _is_dicomdir(f):
                        continue
                    if zipfile.is_zipfile(f) and f.suffix.lower() == ".zip":
                        yield from iter_sources([f])
                    else:
                        yield str(f), f, None
        elif _is_dicomdir(path):
            for f in dicomdir_files(path):
                yield str(f), f, None
        elif path.suffix.lower() == ".zip" and zipfile.is_zipfile(path):
            archive = zipfile.ZipFile(path)
            for info in archive.infolist():
                if not info.is_dir() and not Path(info.filename).name.upper() == "DICOMDIR":
                    yield f"{path}:{info.filename}", archive, info.filename
        elif path.is_file():
            yield str(path), path, None
        else:
            yield str(path), path, None


def count_sources(paths: list[Path]) -> int:
    return sum(1 for _ in iter_sources(paths))


def import_paths(ingest: Ingest, paths: list[Path], origin: Origin,
                 progress: Callable[[int], None] | None = None) -> ImportReport:
    report = ImportReport()
    scratch = Path(tempfile.mkdtemp(prefix="import-", dir=ingest.storage.tmp_dir))
    try:
        for label, container, member in iter_sources(paths):
            if isinstance(container, zipfile.ZipFile):
                # Header parsing needs a seekable file; extract the entry to scratch.
                target = scratch / "entry"
                with container.open(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                source = target
            else:
                source = container
            if not source.is_file():
                report.rejected.append((label, "not a file"))
            else:
                result = ingest.import_file(source, origin)
                report.add(label, result.outcome, result.message)
            if progress:
                progress(1)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return report
