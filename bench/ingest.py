"""Ingest benchmark: dcmtk storescu pushes three corpora to this archive, Orthanc and storescp.

    python -m bench.ingest [--repeat N] [--skip-rss]

Prints seconds, MB/s and instances/s per target, the ratio of Orthanc's time to
ours (above 1.0 means we are faster), and this archive's peak RSS while it
receives one 500 MB multi-frame instance.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import CORPUS, NODELAY_ENV, DsmPacs, OrthancPeer, StoreScp, fresh_dir, peak_rss_mb, table

CORPUS_VERSION = "1"
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

DESCRIPTIONS = {
    "dsa": "10 XA runs 512x512x40 (12 bit) + 200 kB private object",
    "ct": "300 CT-like slices 512x512",
    "small": "2,000 small secondary captures",
}


def build_corpus(name: str) -> Path:
    """Generate (once) and return the folder of a corpus."""
    from tests import factories as f

    folder = CORPUS / f"{name}-v{CORPUS_VERSION}"
    done = CORPUS / f"{name}-v{CORPUS_VERSION}.complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    patient = f.Patient("BENCH^DSA", "BENCH1")
    if name == "dsa":
        study = f.base_dataset(f.XA).StudyInstanceUID
        for i in range(10):
            f.write(f.xa_run(frames=40, patient=patient, study_uid=study, series_number=i + 1),
                    folder / f"xa{i:02d}.dcm")
        f.write(f.csa_non_image(patient=patient, study_uid=study), folder / "csa.dcm")
    elif name == "ct":
        study, series = f.base_dataset(f.CT).StudyInstanceUID, f.base_dataset(f.CT).SeriesInstanceUID
        for i in range(300):
            f.write(f.ct_slice(patient=patient, study_uid=study, series_uid=series, instance_number=i + 1),
                    folder / f"ct{i:03d}.dcm")
    elif name == "small":
        study = f.base_dataset(f.SC).StudyInstanceUID
        series = [f.base_dataset(f.SC).SeriesInstanceUID for _ in range(20)]
        for i in range(2000):
            f.write(f.secondary_capture(size=104, patient=patient, study_uid=study,
                                        series_uid=series[i // 100], instance_number=i + 1),
                    folder / f"sc{i:04d}.dcm")
    elif name == "big":
        f.write(f.xa_run(frames=1000, patient=patient), folder / "big.dcm")   # ~524 MB
    done.touch()
    return folder


def corpus_stats(folder: Path) -> tuple[int, float]:
    files = [p for p in folder.iterdir() if p.suffix == ".dcm"]
    return len(files), sum(p.stat().st_size for p in files) / 1e6


def push(target, folder: Path, profile: Path) -> float:
    """Seconds for storescu to send every file of ``folder`` to ``target``."""
    cmd = ["storescu", "-xf", str(profile), "Bench", "-aec", target.ae_title, "+sd",
           "127.0.0.1", str(target.port), str(folder)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=NODELAY_ENV)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"storescu to {target.name} failed:\n{done.stderr[-2000:]}")
    return elapsed


def measure(kind, corpus: str, folder: Path, profile: Path, repeat: int) -> float:
    times = []
    for run in range(repeat):
        target = kind(fresh_dir(f"{kind.__name__}-{corpus}-{run}")).start()
        try:
            times.append(push(target, folder, profile))
        finally:
            target.stop()
    return statistics.median(times)


def rss_while_receiving_big(profile: Path) -> tuple[float, float]:
    folder = build_corpus("big")
    target = DsmPacs(fresh_dir("DsmPacs-big")).start()
    try:
        before = peak_rss_mb(target.pid)
        push(target, folder, profile)
        return before, peak_rss_mb(target.pid)
    finally:
        target.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="runs per target (median is shown)")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--corpora", default="dsa,ct,small")
    args = parser.parse_args(argv)

    profile = fresh_dir("profile") / "storescu.cfg"
    profile.write_text(PROFILE)
    rows = []
    for corpus in args.corpora.split(","):
        folder = build_corpus(corpus)
        count, megabytes = corpus_stats(folder)
        print(f"[ingest] {corpus}: {count} instances, {megabytes:.0f} MB", file=sys.stderr, flush=True)
        results = {kind.name: measure(kind, corpus, folder, profile, args.repeat)
                   for kind in (DsmPacs, OrthancPeer, StoreScp)}
        ours, orthanc = results[DsmPacs.name], results[OrthancPeer.name]
        for name, seconds in results.items():
            rows.append([corpus, name, f"{seconds:.2f}", f"{megabytes / seconds:.0f}",
                         f"{count / seconds:.0f}",
                         f"{orthanc / ours:.2f}x" if name == DsmPacs.name else ""])
    print("\nIngest (dcmtk storescu, TCP_NODELAY=1, median of %d runs)" % args.repeat)
    for corpus in args.corpora.split(","):
        print(f"  {corpus}: {DESCRIPTIONS[corpus]}")
    print(table(["corpus", "target", "seconds", "MB/s", "inst/s", "vs Orthanc"], rows))
    if not args.skip_rss:
        before, peak = rss_while_receiving_big(profile)
        print(f"\nPeak RSS of the DICOM daemon receiving one 524 MB instance: {peak:.0f} MB "
              f"(at start {before:.0f} MB; target < 150 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
