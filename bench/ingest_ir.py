"""Instructions the DICOM daemon spends on each stored instance: a figure this VM's noise
does not move.

    .venv/bin/python -m bench.ingest_ir [BEFORE_CHECKOUT AFTER_CHECKOUT]
        [--corpus small|dsa] [--rounds 1] [--quick]

Not a section of ``python -m bench``: a tool for a change to the store path, beside
bench/ingest_ab.py. On the shared 2-core VM the CPU time of one push moves by a third
from one round to the next, so a change of a few percent needs many alternated rounds
there and can still mislead: the read of received PDUs into one buffer measured 0.89x
CPU over 10 rounds of ingest_ab on small instances, 0.96x over the next 10, and 0.98x
(0.96-1.00) here. This tool counts instructions instead.

Each daemon runs under valgrind's callgrind (instructions only), started fresh on an
empty data directory as bench/ingest.py starts ours, with callgrind's instrumentation
off. Once it listens the instrumentation is switched on and the counters zeroed
(``callgrind_control --instr=on``, ``-z``); it receives the first files of the corpus from
storescu over one association; its counters are dumped (``callgrind_control -d``: the
instructions every thread retired meanwhile) and it is killed, since a daemon under
valgrind does not always wake from its wait for SIGTERM. Two daemons per checkout,
one receiving FEW files and one MANY, cancel what one association costs whatever it
carries: (I(many) - I(few)) / (many - few) is the daemon's user-space instructions
per instance. What the kernel does (the socket, the page cache, the fsyncs) and every
wait are not counted: a change to our Python, or to the libraries it calls, shows; the
speed of the machine at the moment does not. What is left moves with the clock: the
daemon's idle wake-ups and its checkpoint thread run by time, and under valgrind a
push takes some 50 times longer, so one checkout's count for small instances moved by
up to 2.4% between rounds (for a DSA run, 0.1%), where its CPU time moves by a third.
valgrind also hides the CPU's SHA extensions from OpenSSL: SHA-256 then costs about 36
instructions a byte, 85% of a DSA run's count and 7% of a small instance's,
where on the machine it is a few percent of either. Read a change against what it
touches. A daemon under valgrind runs one thread at a time, so this says nothing about
wall time or threads overlapping; ingest_ab does. Two daemons run at once (one a core).

With no checkout, this checkout is counted; with two, both, and the after/before
ratio of each round is printed. Needs valgrind (``apt-get install valgrind``) and
dcmtk's storescu. A small-corpus comparison takes about three minutes a round.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import (
    ROOT,
    DsmPacs,
    RoundDirs,
    exit_cleanly_on_sigterm,
    on_pythonpath,
    section_parser,
    spread,
    stored_instances,
)
from bench.ingest import FULL, PROFILE, QUICK, build_corpus, push

# (few, many) files received by the two daemons of a checkout.
COUNTS = {"small": (100, 300), "dsa": (1, 4)}
QUICK_COUNTS = {"small": (3, 15), "dsa": (1, 2)}
# Seconds a daemon under valgrind may take to start listening, and a callgrind_control
# command to be answered.
PATIENCE = 600
_TOTALS = re.compile(r"^(?:totals|summary):\s*(\d+)", re.M)


def first_files(folder: Path, count: int, into: Path) -> Path:
    """A folder holding the first ``count`` files of ``folder`` (hard links, else copies)."""
    into.mkdir(parents=True)
    for path in sorted(p for p in folder.iterdir() if p.suffix == ".dcm")[:count]:
        try:
            os.link(path, into / path.name)
        except OSError:
            shutil.copyfile(path, into / path.name)
    return into


def instructions(checkout: Path | None, files: Path, count: int, profile: Path, workdir: Path) -> int:
    """Instructions every thread of a daemon of ``checkout`` (this one when None),
    started on an empty ``workdir``, retired between listening and having received
    every file of ``files``."""
    dumps = workdir.parent / f"{workdir.name}.callgrind"
    # Instrumentation off until the daemon listens: its start-up then runs several
    # times faster under valgrind, and is not counted anyway.
    target = DsmPacs(workdir, patience=PATIENCE, one_process=True, wrapper=(
        "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={dumps}.%p",
        f"--log-file={workdir.parent / workdir.name}.valgrind"))
    if checkout is None:
        target.start()
    else:
        with on_pythonpath(checkout):
            target.start()
    try:
        _control(target.pid, "--instr=on")
        _control(target.pid, "-z")
        push(target, files, profile)
        _control(target.pid, "-d")
    finally:
        if target.proc is not None:
            target.proc.kill()
            target.proc.wait()
    stored = stored_instances(workdir)
    if stored != count:
        raise SystemExit(f"[ingest_ir] stored {stored} of {count} instances; see {workdir / 'stderr'}")
    # The first dump holds what was counted between the zeroing and the dump.
    dumped = sorted(dumps.parent.glob(f"{dumps.name}.{target.pid}.*"))
    found = _TOTALS.search(dumped[0].read_text(errors="replace")) if dumped else None
    if found is None:
        raise SystemExit(f"[ingest_ir] callgrind dumped no count for {workdir}")
    return int(found.group(1))


def _control(pid: int, command: str) -> None:
    done = subprocess.run(["callgrind_control", command, str(pid)], capture_output=True, text=True,
                          timeout=PATIENCE)
    if done.returncode != 0:
        raise SystemExit(f"[ingest_ir] callgrind_control {command} failed: {done.stdout}{done.stderr}")


def per_instance(checkout: Path | None, folders: dict[int, Path], profile: Path, dirs: RoundDirs,
                 tag: str) -> float:
    """The checkout's instructions per instance: its FEW and MANY daemons at once."""
    (few, few_files), (many, many_files) = sorted(folders.items())
    with ThreadPoolExecutor(2) as pool:
        counts = list(pool.map(lambda job: instructions(checkout, job[1], job[0], profile,
                                                         dirs.fresh(f"{tag}-{job[0]}")),
                               [(few, few_files), (many, many_files)]))
    return (counts[1] - counts[0]) / (many - few)


def main(argv: list[str] | None = None) -> int:
    parser = section_parser(__doc__)
    parser.add_argument("checkouts", type=Path, nargs="*", help="BEFORE AFTER, or none for this one")
    parser.add_argument("--corpus", default="small", choices=tuple(COUNTS))
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    if len(args.checkouts) not in (0, 2):
        parser.error("give two checkouts (before, after) or none")
    for tool in ("valgrind", "callgrind_control", "storescu"):
        if shutil.which(tool) is None:
            raise SystemExit(f"[ingest_ir] {tool} is not installed")
    exit_cleanly_on_sigterm()
    few, many = (QUICK_COUNTS if args.quick else COUNTS)[args.corpus]
    corpus = build_corpus(args.corpus, QUICK if args.quick else FULL)
    names: dict[str, Path | None] = (
        {"before": args.checkouts[0].resolve(), "after": args.checkouts[1].resolve()}
        if args.checkouts else {"this checkout": None})
    results: dict[str, list[float]] = {name: [] for name in names}
    print(f"{args.corpus}: daemons under callgrind receiving {few} and {many} files; "
          + ", ".join(f"{name} {path or ROOT}" for name, path in names.items()))
    with RoundDirs("ingest-ir") as dirs:
        profile = dirs.root / "storescu.cfg"
        profile.write_text(PROFILE)
        folders = {n: first_files(corpus, n, dirs.root / f"files-{n}") for n in (few, many)}
        for round_ in range(args.rounds):
            order = list(names) if round_ % 2 == 0 else list(reversed(names))
            for name in order:
                results[name].append(per_instance(names[name], folders, profile, dirs,
                                                  f"{name.replace(' ', '-')}-{round_}"))
            line = ", ".join(f"{name} {results[name][-1] / 1e6:.3f}" for name in names)
            print(f"  round {round_}: million instructions an instance: {line}", flush=True)
    for name in names:
        print(f"{name}: {spread([v / 1e6 for v in results[name]], '{:.3f}')} million instructions an instance")
    if args.checkouts:
        ratios = [a / b for b, a in zip(results["before"], results["after"])]
        print(f"after/before, round by round: {spread(ratios, '{:.4f}')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
