"""MPR benchmark: the time this archive takes to build a 3D volume from a stored series.

    .venv/bin/python -m bench.mpr [--slices 300] [--size 512] [--rounds 5] [--quick]

A CT-like series of ``--slices`` single-frame slices of ``--size`` x ``--size``
pixels (12 bits in 16, Explicit VR Little Endian, uncompressed) is sent by dcmtk
storescu to a real `dsmpacs serve`. Then, over HTTP as the MPR page does it, with
a signed-in session: the first volume.json (the server reads every slice and
builds the volume; the answer says how long the build took), the three planes
through the centre, an oblique plane, the first and the next frame of the
rotating MIP, and volume.json again (from the cache). Last, ``--rounds`` builds
of the same stored files in this process (imaging/volume.py build_volume, the
function the server runs), printed as median (min-max): after the first round
the files come from the page cache, as they do on a NAS that has just received
the series.

No peer is measured beside it: Debian's Orthanc web viewer (orthanc-webviewer)
shows slices in 2D and has no MPR, and OHIF builds its MPR volume in the browser,
which is another task (every slice sent to the client), so the figure stands alone.
"""
from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    WORK,
    dcmtk_version,
    exit_cleanly_on_sigterm,
    our_version,
    print_versions,
    section_parser,
    spread,
    table,
)


@dataclass(frozen=True)
class Sizes:
    slices: int
    size: int
    rounds: int


FULL = Sizes(slices=300, size=512, rounds=5)
QUICK = Sizes(slices=60, size=256, rounds=3)


def build_corpus(folder: Path, slices: int, size: int) -> tuple[str, str]:
    """Axial slices 0.5 mm apart, 0.4 mm pixels; returns (study, series) UIDs."""
    from pydicom.uid import generate_uid

    from tests import factories as f

    study, series = generate_uid(), generate_uid()
    for k in range(slices):
        ds = f.ct_slice(size, study_uid=study, series_uid=series, instance_number=k + 1,
                        patient=f.Patient("MPR^BENCH", "MPR-BENCH"), series_description="MPR bench")
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, round(k * 0.5, 3)]
        ds.PixelSpacing = [0.4, 0.4]
        ds.SliceThickness = 0.5
        f.write(ds, folder / f"ct{k:04d}.dcm")
    return study, series


def build_parser():
    parser = section_parser(__doc__)
    parser.add_argument("--slices", type=int, default=None,
                        help=f"slices in the series (default {FULL.slices}, --quick {QUICK.slices})")
    parser.add_argument("--size", type=int, default=None,
                        help=f"rows and columns of a slice (default {FULL.size}, --quick {QUICK.size})")
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"in-process builds (default {FULL.rounds}, --quick {QUICK.rounds})")
    return parser


def _timed(session, url: str, **params) -> tuple[float, object]:
    started = time.perf_counter()
    answer = session.get(url, params=params)
    elapsed = time.perf_counter() - started
    if answer.status_code != 200:
        raise RuntimeError(f"GET {url}: HTTP {answer.status_code} {answer.text[:300]}")
    return elapsed, answer


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    exit_cleanly_on_sigterm()
    sizes = QUICK if args.quick else FULL
    slices = max(8, args.slices or sizes.slices)
    size = max(16, args.size or sizes.size)
    rounds = max(1, args.rounds or sizes.rounds)
    if not shutil.which("storescu"):
        print("[mpr] storescu not installed, skipped", file=sys.stderr)
        return 0
    from dsmpacs.archive.browse import study_files
    from dsmpacs.imaging.volume import build_volume
    from tests.peers import ServerProcess
    from tests.webclient import WebSession, add_user, server_archive

    WORK.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="mpr-", dir=WORK))
    server = ServerProcess(tmp / "server", {"log_level": "WARNING"})
    rows = []
    try:
        corpus = tmp / "corpus"
        corpus.mkdir()
        study, series = build_corpus(corpus, slices, size)
        server.start()
        started = time.perf_counter()
        done = server.storescu(corpus, extra=("+sd",))
        if done.returncode != 0:
            raise RuntimeError(f"storescu failed:\n{done.stderr[-2000:]}")
        print(f"[mpr] stored {slices} slices in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        web = WebSession(server)
        web.login("bench", add_user(server, "bench", "radiologist"))
        web.headers["Accept"] = "application/json"
        base = f"/viewer/mpr/{study}/{series}"
        cold, answer = _timed(web, f"{base}/volume.json")
        described = answer.json()
        rows.append(["volume.json, first (reads and builds)", f"{cold * 1000:.0f} ms",
                     f"build {described['build_seconds'] * 1000:.0f} ms on the server"])
        nz, ny, nx = described["shape"]
        for plane, pos in (("axial", nz // 2), ("coronal", ny // 2), ("sagittal", nx // 2)):
            seconds, answer = _timed(web, f"{base}/{plane}.png", pos=pos)
            rows.append([f"{plane} plane PNG", f"{seconds * 1000:.0f} ms", f"{len(answer.content):,} bytes"])
        seconds, answer = _timed(web, f"{base}/axial.png", pos=nz // 2, slab=20)
        rows.append(["axial MIP, 20 mm slab", f"{seconds * 1000:.0f} ms", f"{len(answer.content):,} bytes"])
        seconds, answer = _timed(web, f"{base}/oblique.png", a=30, b=20)
        rows.append(["oblique plane PNG", f"{seconds * 1000:.0f} ms", f"{len(answer.content):,} bytes"])
        for angle, label in ((0, "rotating MIP, first frame (pools the volume)"), (10, "rotating MIP, next frame")):
            seconds, answer = _timed(web, f"{base}/rotate/{angle}.png")
            rows.append([label, f"{seconds * 1000:.0f} ms", f"{len(answer.content):,} bytes"])
        warm, _answer = _timed(web, f"{base}/volume.json")
        rows.append(["volume.json again (cached)", f"{warm * 1000:.1f} ms", ""])

        with server_archive(server) as archive:
            paths = [archive.storage.path(f.path) for f in study_files(archive.index, study, series)]
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            volume = build_volume(paths)
            times.append(time.perf_counter() - started)
        megabytes = volume.nbytes / 2 ** 20
        rows.append([f"build_volume in-process, {rounds} rounds", spread([t * 1000 for t in times], "{:.0f}", " ms"),
                     f"{megabytes:.0f} MiB of {volume.data.dtype}, "
                     f"{megabytes / statistics.median(times):.0f} MiB/s"])
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nMPR{' (--quick)' if args.quick else ''}: a CT series of {slices} slices of {size}x{size}, "
          "12 bits in 16, uncompressed, stored by storescu; HTTP on one signed-in session")
    print(table(["step", "time", "note"], rows))
    print("  time: one request each (the first ones do the work; their answers are cached after);\n"
          "  in-process rounds: median (min–max).")
    print_versions("mpr", [our_version(), dcmtk_version("storescu")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
