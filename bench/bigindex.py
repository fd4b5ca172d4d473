"""Indexes of many instances for the benchmarks, filled through the ingest's own index code.

``fill`` writes the rows of N instances (bench/find.py's corpus: about 20 instances
per series, a few series per study, one to three studies per patient, Chinese names
in pinyin, hanzi and mixed forms, some Western ones) with ``Index.add_batch``: the
same statements ``Index.add_instance`` runs for every stored instance, many per
transaction, so that a million rows take minutes instead of the hours C-STORE would.
Paths have the storage's own form (``YYYY/MM/DD/<uuid>.dcm``) and their days run
from about three years ago to yesterday in the order the rows are added, as in an
archive that has received them over time; UIDs are random (pydicom's generate_uid).

Filled indexes are cached in ``bench/.work/index-cache`` (SQLite: a file; MariaDB: a
database named after the size and schema version, kept on the server), so a run at
1,000,000 instances pays the fill once. The MariaDB index is a row-for-row copy of the
SQLite one (``copy_rows``): the statements' round trips per instance would make the
fill take hours there. ``python -m bench.bigindex --drop`` removes
them all.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from pydicom.uid import generate_uid

from bench.common import WORK
from dsmpacs.archive import Archive
from dsmpacs.archive.attributes import Extracted, Level, extract
from dsmpacs.archive.database import LATEST_VERSION
from dsmpacs.archive.index import Index, StoredFile
from dsmpacs.settings import Settings

CACHE = WORK / "index-cache"
BATCH = 2000
SEED = 20261206
ORIGIN = "bench"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _specs(total: int):
    from bench.find import generate
    return generate(total, seed=SEED)


def rows(total: int, *, days: int = 1100, today: datetime | None = None):
    """(Extracted, StoredFile) of ``total`` instances, series after series."""
    from bench.find import instance_dataset

    today = today or datetime.now()
    made = 0
    for spec in _specs(total):
        first = extract(instance_dataset(spec, 1))
        day = today - timedelta(days=max(1, days - days * made // max(total, 1)))
        folder = f"{day:%Y/%m/%d}"
        for number in range(1, spec.instances + 1):
            values = dict(first.values)
            values[Level.IMAGE] = dict(first.values[Level.IMAGE], sop_instance_uid=generate_uid(),
                                       instance_number=number)
            yield (Extracted(values, first.specific_character_set, []),
                   StoredFile(f"{folder}/{uuid.uuid4().hex}.dcm", 1400, "0" * 64, 1200, EXPLICIT_LE))
            made += 1


def fill(index: Index, total: int, progress: bool = True) -> float:
    """Add ``total`` instances; returns the seconds it took."""
    started = time.perf_counter()
    batch, done = [], 0
    for item in rows(total):
        batch.append(item)
        if len(batch) >= BATCH:
            index.add_batch(batch, origin=ORIGIN)
            done += len(batch)
            batch = []
            if progress and done % 50_000 == 0:
                rate = done / (time.perf_counter() - started)
                print(f"[bigindex] {done:,}/{total:,} rows, {rate:,.0f}/s", file=sys.stderr, flush=True)
    if batch:
        index.add_batch(batch, origin=ORIGIN)
    return time.perf_counter() - started


def open_archive(database_url: str, data_dir: Path) -> Archive:
    settings = Settings.load(data_dir=data_dir, env={}, overrides={
        "database_url": database_url, "min_free_mb": 0, "log_level": "WARNING"})
    archive = Archive(settings)
    archive.open(upgrade=True)
    return archive


def sqlite_cached(total: int) -> Path:
    """A checkpointed SQLite index of ``total`` instances (built once, then reused)."""
    target = CACHE / f"sqlite-{total}-v{LATEST_VERSION}.sqlite3"
    if target.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    building = target.with_suffix(f".building-{os.getpid()}")
    archive = open_archive(f"sqlite:///{building}", CACHE / "scratch")
    try:
        seconds = fill(archive.index, total)
        with archive.index.read():
            archive.db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        archive.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{building}{suffix}").unlink(missing_ok=True)
    building.rename(target)
    print(f"[bigindex] SQLite index of {total:,} instances built in {seconds:.0f} s: {target}",
          file=sys.stderr, flush=True)
    return target


def sqlite_copy(total: int, dest: Path) -> Path:
    """A private copy of the cached index (benchmarks write to it)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sqlite_cached(total), dest)
    # On disk before anything is timed: otherwise the first fsync of the database file
    # (a checkpoint) writes out the whole copy and the large index looks slow for it.
    fd = os.open(dest, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return dest


def mariadb_name(total: int) -> str:
    return f"dsmpacs_bench_idx{total}_v{LATEST_VERSION}"


def mariadb_cached(total: int) -> str | None:
    """The URL of a MariaDB database holding ``total`` instances (filled once and kept on
    the server), or None when MariaDB is unreachable."""
    from tests.peers import MARIADB, mariadb_connection

    try:
        conn = mariadb_connection()
    except Exception as exc:
        print(f"[bigindex] MariaDB unreachable: {exc}", file=sys.stderr)
        return None
    name = mariadb_name(total)
    url = f"mysql://{MARIADB['user']}@{MARIADB['host']}:{MARIADB['port']}/{name}"
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = %s "
                        "AND table_name = 'bench_filled'", (name,))
            if cur.fetchone()[0]:
                return url
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        archive = open_archive(url, CACHE / "scratch")
        try:
            seconds = copy_rows(sqlite_cached(total), archive)
        finally:
            archive.close()
        with conn.cursor() as cur:      # the mark that the fill completed
            cur.execute(f"CREATE TABLE `{name}`.bench_filled (instances INT)")
        print(f"[bigindex] MariaDB index of {total:,} instances built in {seconds:.0f} s: {name}",
              file=sys.stderr, flush=True)
        return url
    finally:
        conn.close()


def copy_rows(source: Path, archive: Archive) -> float:
    """Copy the patient, study, series and instance rows of a filled SQLite index, as
    they are, into the archive's (empty) MariaDB index: the rows the ingest's own
    statements wrote, without their round trips per instance (a million of them take
    hours on a busy machine)."""
    import sqlite3

    from dsmpacs.archive.models import Instance, Patient, Series, Study

    started = time.perf_counter()
    conn = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        with archive.index.write():
            for model in (Patient, Study, Series, Instance):
                fields = list(model._meta.sorted_fields)
                columns = ", ".join(f'"{f.column_name}"' for f in fields)
                cursor = conn.execute(f'SELECT {columns} FROM "{model._meta.table_name}" ORDER BY id')
                while rows := cursor.fetchmany(2000):
                    model.insert_many(rows, fields=fields).execute()
    finally:
        conn.close()
    return time.perf_counter() - started


def drop_all() -> None:
    shutil.rmtree(CACHE, ignore_errors=True)
    from tests.peers import mariadb_connection
    try:
        conn = mariadb_connection()
    except Exception:
        return
    with conn.cursor() as cur:
        cur.execute("SHOW DATABASES LIKE 'dsmpacs\\_bench\\_idx%'")
        for (name,) in cur.fetchall():
            cur.execute(f"DROP DATABASE `{name}`")
    conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bigindex", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--skip", action="append", default=[], choices=["sqlite", "mariadb"])
    parser.add_argument("--drop", action="store_true", help="remove every cached index")
    args = parser.parse_args(argv)
    if args.drop:
        drop_all()
        return 0
    if "sqlite" not in args.skip:
        print(sqlite_cached(args.instances))
    if "mariadb" not in args.skip:
        print(mariadb_cached(args.instances))
    return 0


if __name__ == "__main__":
    sys.exit(main())
