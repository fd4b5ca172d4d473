"""The archive's store path in one process, without the DICOM stack.

    .venv/bin/python -m bench.ingest_inproc [BEFORE_CHECKOUT AFTER_CHECKOUT] [--rounds 8]
        [--corpus small|ct] [--quick]

Not a section of ``python -m bench``: a tool for a change to the ingest, beside
bench/ingest_ab.py. Each round, a child process spools every file of the corpus as
the DICOM receiver does (``Storage.spool``, one write of the whole file, ``staged``
without its fsync) and hands it to ``Ingest.store`` with a DICOM origin, on SQLite in
a fresh data directory, as a C-STORE would; no socket, no pynetdicom. Per instance it
reports the wall time, the storing thread's user and system CPU (``RUSAGE_THREAD``)
and the whole process's CPU (the fsync pool included).

With no checkout, this checkout runs every round. With two, the two take turns (round
0: before, after; round 1: after, before; ...), each child importing the archive from
its checkout's package/ (and this bench from here), and the figures are paired round
by round. It removes the noise of the protocol and of the sender, not that of the
machine: on the shared 2-core VM two rounds on a quiet moment differed by 3%, and
eight on a busy one ranged over a third, as pushes through the daemon do. Alternate
rounds, and say which tool measured a change.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench.common import ROOT, RoundDirs, exit_cleanly_on_sigterm, section_parser, spread
from bench.ingest import FULL, QUICK, build_corpus

FIGURES = ("wall_ms", "user_ms", "system_ms", "process_ms")


def store_all(data_dir: Path, files: list[Path]) -> dict[str, float]:
    """Spool and store ``files`` into a new archive at ``data_dir``; per-instance ms."""
    from dsmpacs.archive import Archive
    from dsmpacs.archive.ingest import Origin
    from dsmpacs.archive.results import StoreOutcome
    from dsmpacs.settings import Settings

    settings = Settings.load(data_dir=data_dir, env={}, overrides={
        "database_url": f"sqlite:///{data_dir / 'index.sqlite3'}", "min_free_mb": 0,
        "log_level": "WARNING"})
    archive = Archive(settings)
    archive.open(upgrade=True)
    # As dicom/store.py builds it: the AE's institution binding asked once per association.
    origin = Origin("dicom", calling_ae="BENCHSCU", peer="127.0.0.1", binding=None, binding_known=True)
    contents = [path.read_bytes() for path in files]
    try:
        thread, process = resource.getrusage(resource.RUSAGE_THREAD), time.process_time()
        started = time.perf_counter()
        for content in contents:
            with archive.storage.spool() as spool:
                spool.write(content)
                staged = spool.staged(sync=False)
            result = archive.ingest.store(staged, origin)
            if result.outcome is not StoreOutcome.STORED:
                raise SystemExit(f"[ingest_inproc] {result.outcome.name}: {result.message}")
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_THREAD)
        process = time.process_time() - process
    finally:
        archive.close()
    count = len(contents)
    return {"wall_ms": wall * 1000 / count,
            "user_ms": (after.ru_utime - thread.ru_utime) * 1000 / count,
            "system_ms": (after.ru_stime - thread.ru_stime) * 1000 / count,
            "process_ms": process * 1000 / count}


def run_child(checkout: Path | None, data_dir: Path, folder: Path) -> dict[str, float]:
    """One round in its own process; with ``checkout``, its archive under this bench."""
    env = dict(os.environ)
    if checkout is not None:
        env["PYTHONPATH"] = f"{checkout / 'package'}:{ROOT}"
    done = subprocess.run([sys.executable, "-m", "bench.ingest_inproc", "--child", str(data_dir),
                           str(folder)], env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"[ingest_inproc] the round failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def line(figures: dict[str, float]) -> str:
    return (f"wall {figures['wall_ms']:.3f}, thread user {figures['user_ms']:.3f} + system "
            f"{figures['system_ms']:.3f}, process {figures['process_ms']:.3f} ms an instance")


def main(argv: list[str] | None = None) -> int:
    parser = section_parser(__doc__)
    parser.add_argument("checkouts", type=Path, nargs="*", help="BEFORE and AFTER, or none")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--corpus", default="small", choices=("small", "ct"))
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        data_dir, folder = args.child
        print(json.dumps(store_all(data_dir, sorted(folder.glob("*.dcm")))))
        return 0
    if len(args.checkouts) not in (0, 2):
        parser.error("give two checkouts (before, after) or none")
    exit_cleanly_on_sigterm()
    folder = build_corpus(args.corpus, QUICK if args.quick else FULL)
    names = ("before", "after") if args.checkouts else ("this",)
    checkouts = dict(zip(names, [c.resolve() for c in args.checkouts] or [None]))
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    print(f"{args.corpus}: {sum(1 for _ in folder.glob('*.dcm'))} instances; "
          + ", ".join(f"{name} {checkout or ROOT}" for name, checkout in checkouts.items()))
    with RoundDirs("ingest-inproc") as dirs:
        for round_ in range(args.rounds):
            for name in (names if round_ % 2 == 0 else names[::-1]):
                figures = run_child(checkouts[name], dirs.fresh(f"{name}-{round_}"), folder)
                results[name].append(figures)
                print(f"  round {round_} {name}: {line(figures)}; load {os.getloadavg()[0]:.1f}",
                      flush=True)
    for name in names:
        print(f"{name}: " + "; ".join(f"{key} {spread([r[key] for r in results[name]], '{:.3f}')}"
                                      for key in FIGURES))
    if args.checkouts:
        pairs = list(zip(results["before"], results["after"]))
        print("after/before, round by round: " + "; ".join(
            f"{key} {spread([a[key] / b[key] for b, a in pairs])}" for key in FIGURES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
