"""Shared pieces of the benchmarks: peers as processes, timing, tables.

Every figure is measured against the peers in the same run, on the same
machine, and reported as a ratio, because absolute times drift from machine to
machine. dcmtk and Orthanc run with TCP_NODELAY=1: both leave Nagle's algorithm
on without it, and every small DIMSE exchange then waits out the peer's delayed
ACK (storescu sent 2,000 small instances to storescp in 177 s without it, 1.4 s
with it), so the figures would measure the timer, not the software.

A ratio is always the peer's time over ours, computed pair by pair (round i of
the peer against round i of ours) and printed as the median with the min-max
spread of those pairs: above 1.0x we are faster. Targets take turns within each
round, in an order that rotates from round to round, so that load from elsewhere
on the machine falls on all of them alike.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / ".work"
CORPUS = ROOT / "bench" / ".corpus"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The one port picker of the test suite: never the same port twice in one process.
from tests.peers import free_port  # noqa: E402

NODELAY_ENV = dict(os.environ, TCP_NODELAY="1")


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


def fresh_dir(name: str) -> Path:
    path = WORK / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


class RoundDirs:
    """Fresh, empty working directories for a benchmark's rounds, all removed together
    when the benchmark is done with them, never between two rounds::

        with RoundDirs("ingest") as dirs:
            workdir = dirs.fresh("DsmPacs-small-0")

    Removing a round's files just before the next round starts slowed that round's
    file creation, for every target: ext4 without a journal (this VM's root
    filesystem) does not reuse an inode freed within the last minute (six minutes while its
    inode table block is dirty), and steps past each such inode, one at a time, on
    every new file. After the 2,000 files of the previous round were removed, each
    spool file's open() took 0.39 ms of CPU in our daemon against 0.05 ms with none
    removed, and storescp took 2.2 s for the 2,000 small instances against 0.7 s.
    When the benchmark fails the directories stay, to read the targets' logs."""

    def __init__(self, name: str):
        self.root = fresh_dir(name)

    def fresh(self, name: str) -> Path:
        path = self.root / name
        path.mkdir()
        return path

    def __enter__(self) -> "RoundDirs":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            shutil.rmtree(self.root, ignore_errors=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class DsmPacs:
    """This archive's DICOM daemon as its own process, on SQLite, as `make run` starts it."""
    name = "DSM PACS"

    def __init__(self, workdir: Path, extra: tuple[str, ...] = (),
                 entry: tuple[str, ...] = ("-m", "dsmpacs"), wrapper: tuple[str, ...] = (),
                 patience: float = 60, one_process: bool = False):
        self.workdir = workdir
        self.port = free_port()
        self.ae_title = "DSMPACS"
        self.extra = extra
        # What runs the daemon's command line: bench/ingest_budget.py puts itself first,
        # bench/ingest_ir.py puts valgrind before the interpreter.
        self.entry = entry
        self.wrapper = wrapper
        # Seconds the daemon may take to start listening.
        self.patience = patience
        # No receiving processes (dicom_processes=1, where the checkout has them): the
        # tools that look inside the daemon's process (ingest_budget, ingest_ir) see
        # only that one.
        self.one_process = one_process
        self.proc: subprocess.Popen | None = None

    def start(self) -> "DsmPacs":
        # storescu sends unregistered, as to Orthanc and storescp (one policy look-up per
        # association either way, so registering it would time the same).
        cmd = [*self.wrapper, sys.executable, *self.entry, "--data-dir", str(self.workdir),
               "--set", "log_level=WARNING", "--set", "unknown_ae_may_store=true", *self.extra,
               "serve", "--host", "127.0.0.1",
               "--port", str(self.port)]
        if "--only" in _serve_options():
            cmd += ["--only", "dicom"]
        if self.one_process and "dicom_processes" in _settings_names():
            cmd[cmd.index("serve"):cmd.index("serve")] = ["--set", "dicom_processes=1"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.workdir / "stderr", "wb"),
                                     cwd=ROOT)
        wait_port(self.port, self.proc, self.patience)
        # The port is open once it is bound, but the daemon accepts only once it is up
        # (its receiving processes first, dicom/server.py): it says so with its run
        # file. Timing starts then, as for the peers, which serve once their port is open.
        run_file = self.workdir / "run" / "dicom.json"
        deadline = time.monotonic() + self.patience
        while not run_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"our DICOM daemon did not write {run_file}")
            time.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc:
            stop(self.proc)


def stored_instances(workdir: Path) -> int:
    """How many instance files our daemon's data directory ``workdir`` holds."""
    return sum(1 for _ in (workdir / "storage").glob("[0-9]*/*/*/*.dcm"))


def _settings_names() -> str:
    """What ``dsmpacs settings`` prints for the checkout on PYTHONPATH."""
    return _ask(os.environ.get("PYTHONPATH", ""), "settings")


def _serve_options() -> str:
    return _ask(os.environ.get("PYTHONPATH", ""), "serve", "--help")


@functools.cache
def _ask(pythonpath: str, *args: str) -> str:
    """What ``dsmpacs ARGS`` prints, once per checkout (the A/B tools put two on
    PYTHONPATH in turn, and they may differ)."""
    return subprocess.run([sys.executable, "-m", "dsmpacs", *args], capture_output=True,
                          text=True, cwd=ROOT).stdout


class StoreScp:
    """dcmtk storescp: the ceiling for receive speed (writes files, keeps no index)."""
    name = "dcmtk storescp"

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.ae_title = "STORESCP"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "StoreScp":
        # -pm accepts the private SOP class; +B writes the data set as received, like we do.
        self.proc = subprocess.Popen(["storescp", "-pm", "+B", "+uf", "-aet", self.ae_title,
                                      "-od", str(self.workdir), str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=NODELAY_ENV)
        wait_port(self.port, self.proc)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc:
            stop(self.proc)


class OrthancPeer:
    name = "Orthanc"

    def __init__(self, workdir: Path):
        from tests.orthanc import Orthanc

        self.orthanc = Orthanc(workdir)
        self.ae_title = self.orthanc.ae_title

    @property
    def port(self) -> int:
        return self.orthanc.dicom_port

    @property
    def pid(self) -> int:
        assert self.orthanc.proc is not None
        return self.orthanc.proc.pid

    def start(self) -> "OrthancPeer":
        self.orthanc.start()
        return self

    def stop(self) -> None:
        self.orthanc.stop()


def peak_rss_mb(pid: int) -> float:
    """VmHWM, the peak resident set size so far, of the process or of the largest of its
    children: our DICOM daemon hands connections to its receiving processes, and the
    one that received the instance is the one whose memory it took."""
    peaks = []
    for process in [pid, *children_of(pid)]:
        try:
            status = Path(f"/proc/{process}/status").read_text()
        except OSError:
            continue
        peaks += [int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:")]
    return max(peaks, default=float("nan"))


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


# --- rounds and ratios --------------------------------------------------------------

def rotated(items, round_no: int) -> list:
    """``items`` started at position ``round_no``: round 0 runs A B C, round 1 B C A..."""
    items = list(items)
    shift = round_no % len(items) if items else 0
    return items[shift:] + items[:shift]


def ratios(peer: list[float], ours: list[float]) -> list[float]:
    """Per-round ratios peer/ours; round i is paired with round i only."""
    if len(peer) != len(ours):
        raise ValueError(f"unpaired rounds: {len(peer)} peer, {len(ours)} ours")
    return [p / o for p, o in zip(peer, ours)]


def spread(values: list[float], fmt: str = "{:.2f}", unit: str = "") -> str:
    """``median (min–max)`` of ``values``, e.g. ``1.23x (1.10–1.40)``."""
    if not values:
        return "n/a"
    return (f"{fmt.format(statistics.median(values))}{unit} "
            f"({fmt.format(min(values))}–{fmt.format(max(values))})")


def ratio_cell(peer: list[float], ours: list[float]) -> str:
    return spread(ratios(peer, ours), unit="x")


def section_parser(doc: str | None) -> argparse.ArgumentParser:
    """A section's command line: its docstring as help, and ``--quick``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and few rounds: a smoke run, not a measurement to quote")
    return parser


def exit_cleanly_on_sigterm() -> None:
    """Make SIGTERM (``timeout``, a cancelled CI job) unwind like Ctrl-C, so that every
    ``finally`` stops its servers: the archive runs in a session of its own and
    would otherwise outlive the benchmark."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


# --- versions, read from the peers themselves ------------------------------------------

def our_version() -> str:
    """This archive and the DICOM libraries it runs on, from the installed metadata."""
    import dsmpacs

    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"
    return (f"DSM PACS {getattr(dsmpacs, '__version__', None) or version('dsmpacs')} "
            f"(pynetdicom {version('pynetdicom')}, pydicom {version('pydicom')})")


def dcmtk_version(tool: str) -> str:
    """``storescp --version`` prints ``$dcmtk: storescp v3.6.7 2022-04-22 $``."""
    try:
        done = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{tool}: unknown ({exc})"
    found = re.search(r"\bv(\d[\w.\-]*)", done.stdout + done.stderr)
    return f"dcmtk {tool} {found.group(1)}" if found else f"{tool}: unknown version"


def orthanc_version(base_url: str, auth: tuple[str, str] | None = None) -> str:
    """Orthanc's own ``/system`` Version and its DICOMweb plugin's, from a running Orthanc."""
    headers = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()

    def get(path: str):
        with urllib.request.urlopen(urllib.request.Request(base_url + path, headers=headers),
                                    timeout=30) as rsp:
            return json.loads(rsp.read())
    version = f"Orthanc {get('/system').get('Version', '?')}"
    if "dicom-web" in get("/plugins"):
        return f"{version} + DICOMweb plugin {get('/plugins/dicom-web').get('Version', '?')}"
    return f"{version} (DICOMweb plugin not loaded)"


def mariadb_version(conn) -> str:
    with conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        return f"MariaDB {cur.fetchone()[0]}"


def print_versions(section: str, versions: list[str]) -> None:
    print(f"  versions ({section}, read at run time): " + "; ".join(versions))


def device_written(path: Path) -> int | None:
    """Bytes the block device holding ``path`` has written since boot (/proc/diskstats,
    sectors of 512 bytes), or None where that cannot be read.

    Not /proc/self/io's write_bytes: that counts a page-cache folio whole when any of it
    is dirtied, and on a kernel with large folios (6.18 here) a checkpoint that wrote
    3,385 pages of 4 KB into a million-instance index (13 MB on the device) counted
    163 MB. The device's counter is what the disk was asked to write, by anyone on the
    machine: read it on an otherwise quiet machine, after an os.sync()."""
    try:
        dev = os.stat(path).st_dev
        name = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}").resolve().name
        with open("/proc/diskstats") as fh:
            for line in fh:
                fields = line.split()
                if fields[2] == name:
                    return int(fields[9]) * 512
    except (OSError, IndexError, ValueError):
        return None
    return None


def process_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds so far (/proc) of one process, all its threads, and of
    its children, living (our DICOM daemon's receiving processes) or ended and waited for."""
    user = system = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:           # a child that ended meanwhile: its parent counts it
        return 0.0, 0.0
    user += (int(fields[11]) + int(fields[13])) / tick
    system += (int(fields[12]) + int(fields[14])) / tick
    for child in children_of(pid):
        child_user, child_system = process_times(child)
        user, system = user + child_user, system + child_system
    return user, system


def children_of(pid: int) -> list[int]:
    """The living children of process ``pid`` (/proc, every thread's); none once it ended."""
    try:
        return [int(child) for children in Path(f"/proc/{pid}/task").glob("*/children")
                for child in children.read_text().split()]
    except OSError:
        return []


def process_cpu(pid: int) -> float:
    """User and system CPU seconds so far of one process and its children (process_times)."""
    return sum(process_times(pid))


@contextlib.contextmanager
def on_pythonpath(checkout: Path):
    """Servers started inside import this archive from ``checkout`` (its package/ first):
    the A/B tools run two versions side by side. The old PYTHONPATH comes back after."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = f"{checkout / 'package'}:{checkout}"      # read by Popen
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
