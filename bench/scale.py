"""Index scale benchmark: the ingest's index writes on a large index against an empty one.

    .venv/bin/python -m bench.scale [--instances N] [--add K] [--rounds R] [--quick]
                                    [--skip sqlite|mariadb]

For each database (SQLite, MariaDB) and each round, K small instances (default 2,000,
in series of about 20, patients partly already in the index) are indexed one by one
with ``Index.add_instance``, one transaction each as the C-STORE path does, first on
an empty index and then on one holding N instances (default 1,000,000; bench/bigindex.py
fills it once and caches it), the order alternating per round. Only the index work is
timed: the file writes and the protocol are bench/ingest.py's. SQLite runs with the
DICOM daemon's checkpoint thread (archive/checkpoint.py); ``--commit-checkpoints``
shows SQLite's default instead, a checkpoint inside the commit past 1,000 log pages. The ratio is the rate
at N over the empty rate, round by round, median (min-max): 1.00x is flat.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bench import bigindex
from bench.common import (
    WORK,
    device_written,
    exit_cleanly_on_sigterm,
    our_version,
    print_versions,
    rotated,
    section_parser,
    table,
)
from dsmpacs.archive import checkpoint
from dsmpacs.archive.attributes import Extracted, Level
from dsmpacs.archive.index import StoredFile


def _kb_cell(r: "Result") -> str:
    if None in r.kb_empty + r.kb_full:
        return "n/a (no device counter)"
    return f"{statistics.median(r.kb_empty):.0f} / {statistics.median(r.kb_full):.0f}"


def _load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def new_rows(count: int) -> list:
    """``count`` instances of new patients' studies received today: the same work on
    the empty and the large index (no row of the large one is reused)."""
    today = f"{datetime.now():%Y/%m/%d}"
    tag = uuid.uuid4().hex[:6]
    out = []
    for extracted, stored in bigindex.rows(count):
        patient = extracted.values[Level.PATIENT]
        values = {**extracted.values, Level.PATIENT: {**patient, "patient_id": f"N{tag}{patient['patient_id']}"}}
        out.append((Extracted(values, extracted.specific_character_set, []),
                    StoredFile(f"{today}/{uuid.uuid4().hex}.dcm", stored.size, stored.sha256,
                               stored.dataset_offset, stored.transfer_syntax_uid)))
    return out


def ingest_rate(archive, items: list, disk: Path | None) -> tuple[float, float, float | None]:
    """Instances per second, each in its own transaction; this process's CPU
    milliseconds per instance (less disturbed by other work on the machine); and the KB
    per instance that the disk holding ``disk`` wrote meanwhile (common.device_written:
    the log, the checkpoints or the server's page flushes), None where unknown. The
    syncs around the timed loop are not timed: the first leaves nothing written earlier
    to be counted, the second counts what the run left dirty."""
    os.sync()
    written = device_written(disk) if disk is not None else None
    started, cpu = time.perf_counter(), time.process_time()
    for extracted, stored in items:
        archive.index.add_instance(extracted, stored, origin="dicom", calling_ae="BENCHSCU")
    rate = len(items) / (time.perf_counter() - started)
    cpu_ms = (time.process_time() - cpu) * 1000 / len(items)
    os.sync()
    after = device_written(disk) if written is not None else None
    return rate, cpu_ms, None if after is None else (after - written) / 1024 / len(items)


@dataclass
class Result:
    database: str
    empty: list[float]
    full: list[float]
    cpu_empty: list[float] = field(default_factory=list)
    cpu_full: list[float] = field(default_factory=list)
    kb_empty: list[float] = field(default_factory=list)
    kb_full: list[float] = field(default_factory=list)


def run_sqlite(total: int, add: int, rounds: int, workdir: Path, background: bool = True) -> Result:
    bigindex.sqlite_cached(total)
    result = Result("SQLite", [], [])
    for round_no in range(rounds):
        for which in rotated(["empty", "full"], round_no):
            folder = workdir / f"sqlite-{which}-{round_no}"
            db = folder / "index.sqlite3"
            if which == "full":
                bigindex.sqlite_copy(total, db)
            archive = bigindex.open_archive(f"sqlite:///{db}", folder)
            stop = threading.Event()
            if background:      # as the DICOM daemon runs it (app.serve_dicom)
                checkpoint.start(archive.db, stop)
            else:               # SQLite's default: checkpoint in the commit past 1,000 pages
                archive.db._pragmas = [p for p in archive.db._pragmas if p[0] != "wal_autocheckpoint"]
                archive.db.close_all()
            try:
                rate, cpu, kb = ingest_rate(archive, new_rows(add), folder)
            finally:
                stop.set()
                archive.close()
            getattr(result, which).append(rate)
            getattr(result, f"cpu_{which}").append(cpu)
            getattr(result, f"kb_{which}").append(kb)
            print(f"[scale] SQLite round {round_no} {which}: {rate:,.0f}/s ({_load()})", file=sys.stderr, flush=True)
            for path in folder.glob("index.sqlite3*"):
                path.unlink(missing_ok=True)    # -shm goes when the checkpoint thread's connection closes
    return result


def run_mariadb(total: int, add: int, rounds: int) -> Result | None:
    from tests.peers import mariadb_connection

    url = bigindex.mariadb_cached(total)
    if url is None:
        return None
    name = bigindex.mariadb_name(total)
    conn = mariadb_connection()
    result = Result("MariaDB", [], [])
    with conn.cursor() as cur:
        cur.execute("SELECT @@datadir")
        found = Path(cur.fetchone()[0])
    datadir = found if found.is_dir() else None     # the server's disk, when it runs here
    try:
        for round_no in range(rounds):
            for which in rotated(["empty", "full"], round_no):
                if which == "empty":
                    db = f"dsmpacs_bench_empty_{uuid.uuid4().hex[:8]}"
                    with conn.cursor() as cur:
                        cur.execute(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
                    target = url.rsplit("/", 1)[0] + "/" + db
                else:
                    target = url
                    with conn.cursor() as cur:
                        cur.execute(f"SELECT MAX(id) FROM `{name}`.study")
                        last_study = cur.fetchone()[0]
                        cur.execute(f"SELECT MAX(id) FROM `{name}`.patient")
                        last_patient = cur.fetchone()[0]
                archive = bigindex.open_archive(target, WORK / "scale-scratch")
                try:
                    rate, cpu, kb = ingest_rate(archive, new_rows(add), datadir)
                finally:
                    archive.close()
                    with conn.cursor() as cur:
                        if which == "empty":
                            cur.execute(f"DROP DATABASE `{db}`")
                        else:      # back to the cached N (foreign keys cascade)
                            cur.execute(f"DELETE FROM `{name}`.study WHERE id > %s", (last_study,))
                            cur.execute(f"DELETE FROM `{name}`.patient WHERE id > %s", (last_patient,))
                getattr(result, which).append(rate)
                getattr(result, f"cpu_{which}").append(cpu)
                getattr(result, f"kb_{which}").append(kb)
                print(f"[scale] MariaDB round {round_no} {which}: {rate:,.0f}/s ({_load()})",
                      file=sys.stderr, flush=True)
    finally:
        conn.close()
    return result


@dataclass(frozen=True)
class Sizes:
    instances: int
    add: int
    rounds: int


FULL = Sizes(instances=1_000_000, add=2000, rounds=6)
QUICK = Sizes(instances=20_000, add=300, rounds=2)


def build_parser():
    parser = section_parser(__doc__)
    parser.add_argument("--instances", type=int, default=None, help="the large index (default 1,000,000; "
                        "--quick 20,000)")
    parser.add_argument("--add", type=int, default=None, help="instances indexed per measurement (default 2,000; "
                        "--quick 300)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds (default 6, --quick 2): one round's rate follows the disk's fsync "
                             "latency of the moment")
    parser.add_argument("--skip", action="append", default=[], choices=["sqlite", "mariadb"])
    parser.add_argument("--commit-checkpoints", action="store_true",
                        help="SQLite: checkpoint inside commits (SQLite's default, before "
                             "archive/checkpoint.py) instead of the daemon's background thread")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    exit_cleanly_on_sigterm()
    sizes = QUICK if args.quick else FULL
    total, add, rounds = args.instances or sizes.instances, args.add or sizes.add, args.rounds or sizes.rounds
    started = time.perf_counter()
    WORK.mkdir(parents=True, exist_ok=True)
    load_before = _load()
    results = []
    with tempfile.TemporaryDirectory(prefix="scale-", dir=WORK) as tmp:
        if "sqlite" not in args.skip:
            results.append(run_sqlite(total, add, rounds, Path(tmp), not args.commit_checkpoints))
        if "mariadb" not in args.skip:
            found = run_mariadb(total, add, rounds)
            if found:
                results.append(found)
    print(f"\nIndex writes of {add:,} small instances, one transaction each, on an empty index and on "
          f"{total:,} instances{' (--quick)' if args.quick else ''}")
    rows = []
    for r in results:
        ratios = [f / e for f, e in zip(r.full, r.empty)]
        rows.append([r.database, f"{statistics.median(r.empty):,.0f} ({min(r.empty):,.0f}–{max(r.empty):,.0f})",
                     f"{statistics.median(r.full):,.0f} ({min(r.full):,.0f}–{max(r.full):,.0f})",
                     f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}–{max(ratios):.2f})",
                     "meets" if statistics.median(ratios) >= 0.9 else "MISSES",
                     f"{statistics.median(r.cpu_empty):.2f} / {statistics.median(r.cpu_full):.2f}",
                     _kb_cell(r)])
    print(table(["database", "empty: instances/s", f"{total:,}: instances/s", f"{total:,} / empty",
                 "0.9x target", "CPU ms/instance (empty / large)", "disk KB/instance (empty / large)"], rows))
    print(f"  rates: median (min–max) over {rounds} rounds, the order alternating; ratio round by round. "
          f"{load_before} at the start, {_load()} at the end.\n  CPU ms (this process) and disk KB per "
          "instance, medians: what the index costs apart from waiting for fsync, which on a shared machine\n"
          "  varies more than the index's size makes it. Disk KB: what the block device holding the index "
          "(SQLite's file, MariaDB's datadir) wrote\n  during the run (/proc/diskstats, after an os.sync() "
          "before and after), the log and the checkpoints or page flushes, and any other writer's.")
    print_versions("scale", [our_version()])
    print(f"\nbench/scale.py took {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
