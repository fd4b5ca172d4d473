"""What auditing costs a search: C-FIND and QIDO-RS round trips against a real
`dsmpacs serve`, timed in a loop, for one source tree or two (before and after).

    .venv/bin/python -m bench.audit_cost [--tree /work/main] [--tree .] [--queries 200]

Each tree's server runs on a fresh SQLite data directory with a few studies; the
same queries are sent over one association (pynetdicom) and one keep-alive HTTP
session (requests, HTTP Basic, so the password check is cached after the first).
Reported: the median and 90th percentile per query, in milliseconds.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import factories as f  # noqa: E402

PASSWORD = "correct horse battery"


def _env(tree: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree / "package"), PYTHONUNBUFFERED="1")
    env.pop("DSMPACS_DATA_DIR", None)
    return env


def _cli(tree: Path, data: Path, *args: str, stdin: str = "") -> None:
    subprocess.run([sys.executable, "-m", "dsmpacs", "--data-dir", str(data), *args], input=stdin,
                   env=_env(tree), cwd=tree, check=True, capture_output=True, text=True)


def _start(tree: Path, data: Path) -> tuple[subprocess.Popen, int, int]:
    proc = subprocess.Popen([sys.executable, "-m", "dsmpacs", "--data-dir", str(data), "--set", "min_free_mb=0",
                             "--set", "log_level=WARNING", "serve", "--host", "127.0.0.1", "--port", "0",
                             "--web-host", "127.0.0.1", "--web-port", "0"],
                            env=_env(tree), cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True)
    dicom = web = None
    while dicom is None or web is None:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"server of {tree} did not start")
        if line.startswith("DICOM listening on"):
            dicom = int(line.split()[3].rsplit(":", 1)[1])
        elif line.startswith("Web listening on"):
            web = int(line.split()[3].rstrip("/").rsplit(":", 1)[1])
    return proc, dicom, web


def _timed(n: int, call) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        out.append((time.perf_counter() - start) * 1000)
    return out


def measure(tree: Path, queries: int) -> dict[str, list[float]]:
    data = Path(tempfile.mkdtemp(prefix="audit-bench-"))
    files = data / "in"
    files.mkdir()
    for i in range(20):
        f.write(f.secondary_capture(patient=f.Patient(name=f"ZHANG^{i}", patient_id=f"P{i}")), files / f"{i}.dcm")
    _cli(tree, data, "import", str(files))
    _cli(tree, data, "user", "add", "rad1", "--role", "radiologist", "--password-stdin", stdin=PASSWORD + "\n")
    _cli(tree, data, "ae", "add", "bench", "BENCH", "127.0.0.1", "104")
    proc, dicom, web = _start(tree, data)
    try:
        ae = AE(ae_title="BENCH")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = ae.associate("127.0.0.1", dicom, ae_title="DSMPACS")
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.PatientName = "ZHANG*"
        ds.StudyInstanceUID = ""

        def find():
            for status, _ in assoc.send_c_find(ds, StudyRootQueryRetrieveInformationModelFind):
                assert status is not None and status.Status in (0, 0xFF00, 0xFF01), status

        find()
        cfind = _timed(queries, find)
        assoc.release()
        session = requests.Session()
        session.auth = ("rad1", PASSWORD)
        url = f"http://127.0.0.1:{web}/dicom-web/studies?PatientName=ZHANG*"
        session.get(url, timeout=30).raise_for_status()
        qido = _timed(queries, lambda: session.get(url, timeout=30).raise_for_status())
        return {"C-FIND": cfind, "QIDO-RS": qido}
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", type=Path, help="source tree (default: this one)")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    for tree in args.tree or [ROOT]:
        for name, times in measure(tree.resolve(), args.queries).items():
            times.sort()
            print(f"{tree}: {name}: median {statistics.median(times):.2f} ms, "
                  f"p90 {times[int(len(times) * 0.9)]:.2f} ms over {len(times)} queries", flush=True)


if __name__ == "__main__":
    main()
