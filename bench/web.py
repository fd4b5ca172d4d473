"""DICOMweb benchmark: this archive's web server beside Orthanc 1.10 with its DICOMweb plugin.

    .venv/bin/python -m bench.web [--runs 30] [--studies 300] [--quick]

Both archives receive the same corpus over C-STORE (dcmtk storescu, TCP_NODELAY=1):
``--studies`` one-instance studies whose patient names are drawn like bench/find.py's
(pinyin, hanzi and mixed Chinese forms, some Western names), plus one XA run of
512x512x40 frames at 12 bits. Then one keep-alive requests.Session per server, both
with HTTP Basic, times a study search, one instance, one frame and one rendered frame
(``--runs`` requests after a warm-up; the two servers take turns, the first one
alternating from run to run, so that load from elsewhere on the machine hits both
alike). The ratio is Orthanc's time over ours, request i against request i,
printed as median (min-max): above 1.0x we are faster. The versions are read from
the running servers.

The session sends ``Accept-Encoding: identity``: requests (like browsers) asks for
gzip by default, and Orthanc then compresses every answer, which costs it most of
the time on loopback; one extra row shows that case. The rendered frame is compared
both with the DICOMweb plugin's /rendered and with Orthanc's own REST /rendered.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import requests

from bench.common import (
    NODELAY_ENV,
    WORK,
    dcmtk_version,
    exit_cleanly_on_sigterm,
    orthanc_version,
    our_version,
    print_versions,
    ratio_cell,
    rotated,
    section_parser,
    spread,
    table,
)

USER, PASSWORD = "bench", "bench-web-password-1"
QUERY = "/dicom-web/studies?PatientName=ZHANG*&limit=50"
INSTANCE_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
FRAME = 20                      # 1-based, as in the URL


def build_corpus(folder: Path, studies: int) -> dict[str, str]:
    """Write the corpus; returns the XA run's UIDs."""
    from bench.find import _patient_name
    from tests import factories as f

    rng = random.Random(20261123)
    for i in range(studies):
        name, charset = _patient_name(rng)
        patient = f.Patient(name, f"WEB{i:05d}", charset=charset or None)
        f.write(f.secondary_capture(size=64, patient=patient, accession=f"W{i:06d}",
                                    study_description="Web bench"), folder / f"sc{i:05d}.dcm")
    xa = f.xa_run(frames=40, size=512, patient=f.Patient("Zhang^Wei=张^伟", "WEBXA", charset="ISO_IR 192"),
                  accession="WXA", study_description="Cerebral angiography")
    f.write(xa, folder / "xa.dcm")
    return {"study": str(xa.StudyInstanceUID), "series": str(xa.SeriesInstanceUID),
            "instance": str(xa.SOPInstanceUID)}


def store(ae_title: str, port: int, folder: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(["storescu", "-aec", ae_title, "+sd", "127.0.0.1", str(port), str(folder)],
                          capture_output=True, text=True, env=NODELAY_ENV)
    if done.returncode != 0:
        raise RuntimeError(f"storescu to {ae_title} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


class Ours:
    name = "DSM PACS"

    def __init__(self, workdir: Path):
        from tests.peers import ServerProcess

        self.server = ServerProcess(workdir, {"log_level": "WARNING"})

    def start(self) -> "Ours":
        self.server.start()
        # A radiologist through the CLI, as an administrator would add one.
        done = subprocess.run([sys.executable, "-m", "dsmpacs", "--data-dir", str(self.server.data_dir),
                               "user", "add", USER, "--role", "radiologist", "--password-stdin"],
                              input=PASSWORD + "\n", capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"dsmpacs user add failed: {done.stderr}")
        self.url, self.ae_title, self.port = self.server.web_url, self.server.ae_title, self.server.port
        self.pid = self.server.proc.pid
        return self

    def stop(self) -> None:
        self.server.stop()


class TheirOrthanc:
    name = "Orthanc"

    def __init__(self, workdir: Path):
        from tests.orthanc import Orthanc

        self.orthanc = Orthanc(workdir, dicomweb=True, extra={
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD}})
        # The helper polls /system with urllib; let it answer Orthanc's Basic challenge.
        manager = urllib.request.HTTPPasswordMgrWithPriorAuth()
        manager.add_password(None, self.orthanc.url, USER, PASSWORD, is_authenticated=True)
        urllib.request.install_opener(urllib.request.build_opener(
            urllib.request.HTTPBasicAuthHandler(manager)))

    def start(self) -> "TheirOrthanc":
        self.orthanc.start()
        self.url, self.ae_title, self.port = self.orthanc.url, self.orthanc.ae_title, self.orthanc.dicom_port
        self.pid = self.orthanc.proc.pid
        return self

    def stop(self) -> None:
        self.orthanc.stop()
        urllib.request.install_opener(None)


@dataclass
class Case:
    label: str
    paths: dict[str, str | Callable[[int], str]]   # by target name; a callable: by run (warm-ups < 0)
    accept: str
    headers: dict[str, str] = field(default_factory=dict)
    runs: int | None = None        # None: --runs


def fetch(session: requests.Session, url: str, headers: dict[str, str]) -> requests.Response:
    response = session.get(url, headers=headers, timeout=120)
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} -> {response.status_code}: {response.text[:300]}")
    return response


def orthanc_paths(session: requests.Session, base: str, uids: dict[str, str]) -> tuple[str | None, str]:
    """Orthanc's rendered frame: (its DICOMweb plugin's path or, without one, None; its
    native REST API's path)."""
    path = f"{instance_path(uids)}/frames/{FRAME}/rendered"
    if session.get(base + path, headers={"Accept": "image/jpeg"}, timeout=60).status_code != 200:
        path = None
    found = session.post(base + "/tools/lookup", data=uids["instance"], timeout=60).json()
    orthanc_id = next(item["ID"] for item in found if item["Type"] == "Instance")
    return path, f"/instances/{orthanc_id}/frames/{FRAME - 1}/rendered"


def instance_path(uids: dict[str, str]) -> str:
    return f"/dicom-web/studies/{uids['study']}/series/{uids['series']}/instances/{uids['instance']}"


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process and its children (our server runs its
    web and DICOM parts as children of a supervisor)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:       # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / tick    # utime, stime
    return total


def measure(targets: list, case: Case, runs: int) -> tuple[dict, dict, dict]:
    """Seconds per request, the body size and the server's CPU milliseconds per request,
    by target name; the servers take turns, the first alternating per run, so that
    request i of one pairs with request i of the other. CPU time is less disturbed
    than wall time by other work on a shared machine."""
    times: dict = {t.name: [] for t in targets}
    sizes: dict = {}
    headers = {"Accept": case.accept, **case.headers}
    def path(target, run: int) -> str:
        found = case.paths[target.name]
        return found(run) if callable(found) else found

    for target in targets:
        for warm_up in range(-3, 0):
            fetch(target.session, target.url + path(target, warm_up), headers)
    cpu_before = {t.name: cpu_seconds(t.pid) for t in targets}
    for run in range(runs):
        for target in rotated(targets, run):
            started = time.perf_counter()
            response = fetch(target.session, target.url + path(target, run), headers)
            sizes[target.name] = len(response.content)
            times[target.name].append(time.perf_counter() - started)
    cpu = {t.name: (cpu_seconds(t.pid) - cpu_before[t.name]) * 1000 / runs for t in targets}
    return times, sizes, cpu


@dataclass(frozen=True)
class Sizes:
    runs: int
    studies: int


FULL = Sizes(runs=30, studies=300)
QUICK = Sizes(runs=6, studies=50)


def build_parser() -> argparse.ArgumentParser:
    parser = section_parser(__doc__)
    parser.add_argument("--runs", type=int, default=None,
                        help=f"timed requests per case and server (default {FULL.runs}, --quick {QUICK.runs})")
    parser.add_argument("--studies", type=int, default=None,
                        help=f"one-instance studies besides the XA run (default {FULL.studies}, "
                             f"--quick {QUICK.studies})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    exit_cleanly_on_sigterm()
    sizes = QUICK if args.quick else FULL
    args.runs = max(1, min(args.runs or sizes.runs, 1000))
    args.studies = max(0, args.studies if args.studies is not None else sizes.studies)
    from tests.orthanc import orthanc_available

    if not shutil.which("storescu") or not orthanc_available():
        print("[web] storescu or Orthanc not installed, skipped", file=sys.stderr)
        return 0

    WORK.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="web-", dir=WORK))
    targets: list = []
    rows = []
    try:
        corpus = tmp / "corpus"
        corpus.mkdir()
        uids = build_corpus(corpus, args.studies)
        for kind in (Ours, TheirOrthanc):
            target = kind(tmp / kind.__name__.lower())
            targets.append(target)
            target.start()
            seconds = store(target.ae_title, target.port, corpus)
            print(f"[web] {target.name}: stored {args.studies + 1} instances in {seconds:.1f} s",
                  file=sys.stderr, flush=True)
            target.session = requests.Session()
            target.session.auth = (USER, PASSWORD)
            # requests asks for gzip by default and Orthanc then compresses every answer;
            # the main rows compare the servers' own work (see the gzip row for the other).
            target.session.headers["Accept-Encoding"] = "identity"
        ours, orthanc = targets
        instance = instance_path(uids)
        versions = [our_version(), orthanc_version(orthanc.url, (USER, PASSWORD)), dcmtk_version("storescu")]
        plugin_rendered, native_rendered = orthanc_paths(orthanc.session, orthanc.url, uids)
        both = lambda path: {ours.name: path, orthanc.name: path}  # noqa: E731
        ours_rendered = f"{instance}/frames/{FRAME}/rendered"
        few = max(3, args.runs // 6)
        cases = [
            Case("QIDO-RS studies PatientName=ZHANG* limit=50", both(QUERY), "application/dicom+json"),
            Case("WADO-RS XA instance (21 MB), transfer-syntax=*", both(instance), INSTANCE_ACCEPT),
            Case(f"WADO-RS XA frame {FRAME}, transfer-syntax=*", both(f"{instance}/frames/{FRAME}"), FRAME_ACCEPT),
            Case(f"rendered frame {FRAME} JPEG; Orthanc: DICOMweb plugin",
                 {ours.name: ours_rendered, orthanc.name: plugin_rendered}, "image/jpeg"),
            Case(f"rendered frame {FRAME} JPEG; Orthanc: REST /frames/{FRAME - 1}/rendered",
                 {ours.name: ours_rendered, orthanc.name: native_rendered}, "image/jpeg"),
            # Ours keeps drawn pictures (imaging/frame_cache.py), Orthanc does not: here every
            # request of ours asks a window not asked before, as a window/level drag does, so
            # each one is decoded-frame lookup, table, window and JPEG encoding again.
            Case(f"rendered frame {FRAME} JPEG, a new window each request (ours: never a kept picture)",
                 {ours.name: lambda run: f"{ours_rendered}?window=2048,{4000 + run}",
                  orthanc.name: native_rendered}, "image/jpeg"),
            Case("WADO-RS XA instance, Accept-Encoding: gzip (%d runs)" % few, both(instance), INSTANCE_ACCEPT,
                 {"Accept-Encoding": "gzip, deflate"}, few),
        ]
        if plugin_rendered is None:
            del cases[3]
        counts = {t.name: len(fetch(t.session, t.url + QUERY, {"Accept": "application/dicom+json"}).json())
                  for t in targets}
        for case in cases:
            times, sizes, cpu = measure(targets, case, case.runs or args.runs)
            medians = {name: statistics.median(values) for name, values in times.items()}
            cells = [spread([x * 1000 for x in times[t.name]], "{:.1f}", " ms")
                     + (f", {sizes[t.name] / medians[t.name] / 1e6:.0f} MB/s" if "instance" in case.label else "")
                     for t in targets]
            rows.append([case.label, *cells, ratio_cell(times[orthanc.name], times[ours.name]),
                         " / ".join(f"{cpu[t.name]:.1f}" for t in targets),
                         " / ".join(f"{sizes[t.name]:,}" for t in targets)])
            print(f"[web] {case.label}: done", file=sys.stderr, flush=True)
    finally:
        for target in reversed(targets):
            target.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nDICOMweb{' (--quick)' if args.quick else ''}, {args.runs} requests per server on one keep-alive "
          f"requests.Session, HTTP Basic on both,\nAccept-Encoding: identity unless stated; {args.studies} one-instance studies "
          "+ one XA run 512x512x40 12-bit, loaded by storescu")
    print(table(["request", ours.name, "Orthanc", "Orthanc / ours", "server CPU ms/request (ours / Orthanc)",
                 "bytes (ours / Orthanc)"], rows))
    print(f"  ZHANG* matches: {counts[ours.name]} studies here, {counts[orthanc.name]} in Orthanc (limit 50)")
    print("  time cells: median (min–max); MB/s: decoded body bytes over the median time.\n"
          "  Orthanc / ours: Orthanc's time over ours, request i against request i (the first server alternates"
          "\n  per run), median (min–max): above 1.00x we are faster.")
    print_versions("web", versions)
    print("  The pixel data is noise, which gzip cannot shrink (real angiograms shrink somewhat).")
    print("  A new window each request: ours draws every picture anew; Orthanc's REST rendering (its default\n"
          "  window) keeps no pictures, so each of its requests is drawn anew in both rendered rows.")
    print("  server CPU: user+system time of the server's processes over the timed requests, per request "
          "(ours: supervisor, web and DICOM processes).")
    print(f"  load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end (a shared machine: "
          "wall times vary with it, CPU times much less)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
