"""Ingest benchmark: dcmtk storescu pushes corpora to this archive, Orthanc and storescp.

    python -m bench.ingest [--rounds N] [--quick] [--skip-rss] [--corpora dsa,ct,small,parallel]

``parallel`` is the small corpus again, split between four storescu processes
that send at once (several modalities of a small hospital), timed from the first
start to the last exit.

Each round sends the same corpus to each target in turn, every target started
fresh and empty for the round; the order rotates from round to round (round 0:
ours, Orthanc, storescp; round 1: Orthanc, storescp, ours; ...) so that drift
and load from elsewhere on the machine hit every target alike. Prints seconds,
MB/s and instances/s per target (median and min-max over the rounds), each
peer's time over ours computed round by round (above 1.0x we are faster), the
machine's load average before and after each corpus (the machine may be shared:
quote the ratios, not the seconds), the versions read from the peers, and this
archive's peak RSS while it receives one large multi-frame instance.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    CORPUS,
    NODELAY_ENV,
    DsmPacs,
    OrthancPeer,
    RoundDirs,
    StoreScp,
    dcmtk_version,
    exit_cleanly_on_sigterm,
    fresh_dir,
    orthanc_version,
    our_version,
    peak_rss_mb,
    print_versions,
    process_cpu,
    ratio_cell,
    rotated,
    section_parser,
    spread,
    table,
)

CORPUS_VERSION = "2"
PROFILE = """[[TransferSyntaxes]]
[Uncompressed]
TransferSyntax1 = LocalEndianExplicit
TransferSyntax2 = OppositeEndianExplicit
TransferSyntax3 = LittleEndianImplicit

[[PresentationContexts]]
[Bench]
PresentationContext1 = XRayAngiographicImageStorage\\Uncompressed
PresentationContext2 = 1.3.12.2.1107.5.9.1\\Uncompressed
PresentationContext3 = CTImageStorage\\Uncompressed
PresentationContext4 = SecondaryCaptureImageStorage\\Uncompressed

[[Profiles]]
[Bench]
PresentationContexts = Bench
"""
TARGETS = (DsmPacs, OrthancPeer, StoreScp)
PARALLEL_SENDERS = 4


@dataclass(frozen=True)
class Sizes:
    """How many objects each corpus holds; ``--quick`` shrinks them all."""
    xa_runs: int = 10
    ct_slices: int = 300
    small: int = 2000
    big_frames: int = 1000          # the single instance of the peak-RSS check, ~524 MB
    rounds: int = 3


FULL = Sizes()
QUICK = Sizes(xa_runs=2, ct_slices=40, small=200, big_frames=100, rounds=3)


def describe(name: str, sizes: Sizes) -> str:
    return {"dsa": f"{sizes.xa_runs} XA runs 512x512x40 (12 bit) + 200 kB private object",
            "ct": f"{sizes.ct_slices} CT-like slices 512x512",
            "small": f"{sizes.small:,} small secondary captures",
            "parallel": f"{PARALLEL_SENDERS} senders at once, {sizes.small // PARALLEL_SENDERS:,} small "
                        "secondary captures each (the small corpus split)"}[name]


def build_corpus(name: str, sizes: Sizes) -> Path:
    """Generate (once per size) and return the folder of a corpus."""
    from tests import factories as f

    if name == "parallel":
        return build_corpus("small", sizes)

    count = {"dsa": sizes.xa_runs, "ct": sizes.ct_slices, "small": sizes.small, "big": sizes.big_frames}[name]
    folder = CORPUS / f"{name}-{count}-v{CORPUS_VERSION}"
    done = CORPUS / f"{name}-{count}-v{CORPUS_VERSION}.complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    patient = f.Patient("BENCH^DSA", "BENCH1")
    if name == "dsa":
        study = f.base_dataset(f.XA).StudyInstanceUID
        for i in range(count):
            f.write(f.xa_run(frames=40, patient=patient, study_uid=study, series_number=i + 1),
                    folder / f"xa{i:02d}.dcm")
        f.write(f.csa_non_image(patient=patient, study_uid=study), folder / "csa.dcm")
    elif name == "ct":
        study, series = f.base_dataset(f.CT).StudyInstanceUID, f.base_dataset(f.CT).SeriesInstanceUID
        for i in range(count):
            f.write(f.ct_slice(patient=patient, study_uid=study, series_uid=series, instance_number=i + 1),
                    folder / f"ct{i:03d}.dcm")
    elif name == "small":
        study = f.base_dataset(f.SC).StudyInstanceUID
        series = [f.base_dataset(f.SC).SeriesInstanceUID for _ in range(max(1, count // 100))]
        for i in range(count):
            f.write(f.secondary_capture(size=104, patient=patient, study_uid=study,
                                        series_uid=series[min(i // 100, len(series) - 1)],
                                        instance_number=i + 1),
                    folder / f"sc{i:04d}.dcm")
    elif name == "big":
        f.write(f.xa_run(frames=count, patient=patient), folder / "big.dcm")
    else:
        raise ValueError(f"unknown corpus {name!r}")
    done.touch()
    return folder


def chosen_corpus(args) -> tuple[Path, int, int]:
    """The corpus the ingest tools' ``--corpus`` names, at ``--quick`` size when asked:
    its folder, its number of instances, and how many storescu processes send it."""
    folder = build_corpus(args.corpus, QUICK if args.quick else FULL)
    count = sum(1 for p in folder.iterdir() if p.suffix == ".dcm")
    return folder, count, PARALLEL_SENDERS if args.corpus == "parallel" else 1


def corpus_stats(folder: Path) -> tuple[int, float]:
    files = [p for p in folder.iterdir() if p.suffix == ".dcm"]
    return len(files), sum(p.stat().st_size for p in files) / 1e6


def push(target, folder: Path, profile: Path, senders: int = 1) -> float:
    """Seconds for storescu to send every file of ``folder`` to ``target``; with
    ``senders`` > 1, that many storescu processes at once, each with its share of
    the files, from the first start to the last exit."""
    base = ["storescu", "-xf", str(profile), "Bench", "-aec", target.ae_title, "127.0.0.1", str(target.port)]
    if senders == 1:
        commands = [base[:-2] + ["+sd"] + base[-2:] + [str(folder)]]
    else:
        files = sorted(str(p) for p in folder.iterdir() if p.suffix == ".dcm")
        commands = [base + files[i::senders] for i in range(senders)]
    start = time.perf_counter()
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=NODELAY_ENV) for cmd in commands]
    errors = [proc.communicate(timeout=3600)[1] for proc in procs]
    elapsed = time.perf_counter() - start
    for proc, err in zip(procs, errors):
        if proc.returncode != 0:
            raise RuntimeError(f"storescu to {target.name} failed:\n{err[-2000:]}")
    return elapsed


def run_rounds(corpus: str, folder: Path, profile: Path, rounds: int, versions: dict[str, str],
               dirs: RoundDirs) -> tuple[dict, dict]:
    """Seconds per round, and the receiving process's CPU seconds during the push, by
    target name; every target starts empty in every round, in a directory of its own that
    ``dirs`` removes after the last corpus (RoundDirs: why)."""
    times: dict[str, list[float]] = {kind.name: [] for kind in TARGETS}
    cpu: dict[str, list[float]] = {kind.name: [] for kind in TARGETS}
    for round_no in range(rounds):
        order = rotated(TARGETS, round_no)
        print(f"[ingest] {corpus} round {round_no + 1}/{rounds}: "
              + " -> ".join(kind.name for kind in order), file=sys.stderr, flush=True)
        for kind in order:
            workdir = dirs.fresh(f"{kind.__name__}-{corpus}-{round_no}")
            target = kind(workdir).start()
            try:
                if kind is OrthancPeer and OrthancPeer.name not in versions:
                    versions[OrthancPeer.name] = orthanc_version(target.orthanc.url)
                senders = PARALLEL_SENDERS if corpus == "parallel" else 1
                before = process_cpu(target.pid)
                times[kind.name].append(push(target, folder, profile, senders))
                cpu[kind.name].append(process_cpu(target.pid) - before)
            finally:
                target.stop()
    return times, cpu


def rss_while_receiving_big(profile: Path, sizes: Sizes) -> tuple[float, float, float]:
    folder = build_corpus("big", sizes)
    _, megabytes = corpus_stats(folder)
    workdir = fresh_dir("DsmPacs-big")
    target = DsmPacs(workdir).start()
    try:
        before = peak_rss_mb(target.pid)
        push(target, folder, profile)
        peak = peak_rss_mb(target.pid)
    finally:
        target.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    return megabytes, before, peak


def build_parser() -> argparse.ArgumentParser:
    parser = section_parser(__doc__)
    parser.add_argument("--rounds", "--repeat", type=int, default=None,
                        help=f"rounds; each sends the corpus to every target (default {FULL.rounds}, "
                             f"--quick {QUICK.rounds})")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--corpora", default="dsa,ct,small,parallel")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    exit_cleanly_on_sigterm()
    sizes = QUICK if args.quick else FULL
    rounds = max(1, min(args.rounds or sizes.rounds, 100))
    corpora = [c for c in args.corpora.split(",") if c]

    profile = fresh_dir("profile") / "storescu.cfg"
    profile.write_text(PROFILE)
    versions = {DsmPacs.name: our_version(), "storescu": dcmtk_version("storescu"),
                StoreScp.name: dcmtk_version("storescp")}
    rows, loads = [], []
    with RoundDirs("ingest-rounds") as dirs:
        for corpus in corpora:
            folder = build_corpus(corpus, sizes)
            count, megabytes = corpus_stats(folder)
            print(f"[ingest] {corpus}: {count} instances, {megabytes:.0f} MB", file=sys.stderr, flush=True)
            before = os.getloadavg()[0]
            times, cpu = run_rounds(corpus, folder, profile, rounds, versions, dirs)
            loads.append(f"{corpus} {before:.1f} -> {os.getloadavg()[0]:.1f}")
            ours = times[DsmPacs.name]
            for kind in TARGETS:
                seconds = times[kind.name]
                rows.append([corpus, kind.name, spread(seconds),
                             spread([megabytes / s for s in seconds], "{:.0f}"),
                             spread([count / s for s in seconds], "{:.0f}"),
                             spread([c * 1000 / count for c in cpu[kind.name]]),
                             "" if kind is DsmPacs else ratio_cell(seconds, ours)])
    print(f"\nIngest (dcmtk storescu, TCP_NODELAY=1), {rounds} rounds{' (--quick)' if args.quick else ''}: "
          "each round sends the corpus to every target, each fresh and empty; the order rotates per round")
    for corpus in corpora:
        print(f"  {corpus}: {describe(corpus, sizes)}")
    print(table(["corpus", "target", "seconds", "MB/s", "inst/s", "CPU ms/inst", "peer / ours"], rows))
    print("  every cell: median (min–max) over the rounds. peer / ours: the peer's seconds over ours in the "
          "same round,\n  pair by pair; above 1.00x we are faster. storescp writes files and keeps no index: "
          "it is the ceiling.\n  CPU ms/inst: the receiving process's user and system CPU during the push "
          "(/proc), with its children's\n  (our receiving processes), per instance; it moves less than "
          "the wall time with other work on the machine.")
    print(f"  load average (1 min) before -> after each corpus, on {os.cpu_count()} CPUs: " + "; ".join(loads))
    print_versions("ingest", [versions[DsmPacs.name], versions.get(OrthancPeer.name, "Orthanc: not run"),
                              versions[StoreScp.name], versions["storescu"]])
    if not args.skip_rss:
        megabytes, before, peak = rss_while_receiving_big(profile, sizes)
        print(f"\nPeak RSS of the DICOM daemon receiving one {megabytes:.0f} MB instance: {peak:.0f} MB "
              f"(at start {before:.0f} MB; target < 150 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
