"""Helpers for real peers: the archive as a process, dcmtk tools, MariaDB."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
ROOT = Path(__file__).resolve().parent.parent


def require(condition: bool, reason: str) -> None:
    """Skip when a peer is missing. In CI (CI=true) the skip becomes a failure:
    tests/conftest.py's report hooks own that rule for every skip, this one included."""
    if not condition:
        pytest.skip(reason)


def wait_until(condition, timeout: float = 30, what: str = "condition"):
    """Poll ``condition`` until it returns something truthy (returned), or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, that this test process has not
    handed out before, and that the other pytest-xdist workers will not hand out.

    The kernel may give back a port it has just given (4 repeats in 300 binds to port 0 on
    the development VM), so a test that asks for a DICOM, a web and a DICOM-TLS port one
    after the other could get the same port twice; CI failed once on exactly that. Each
    worker takes only the ports of its own residue, so two workers never share one either.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    # A worker that replaces a crashed one is numbered on (gw2 with two workers).
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")) % workers
    for _ in range(10_000):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        # Linux gives bind() odd ports first (connect() even ones): the residue is of port // 2.
        if port not in _HANDED_OUT and (port // 2) % workers == index:
            _HANDED_OUT.add(port)
            return port
    raise AssertionError(f"no free port left for worker {index} of {workers}")


def mariadb_connection(**kw):
    import pymysql

    return pymysql.connect(host=MARIADB["host"], port=MARIADB["port"], user=MARIADB["user"],
                           password=MARIADB["password"], autocommit=True, connect_timeout=3, **kw)


def store_unchanged(port: int, path: Path, sop_class: str, transfer_syntax: str, *,
                    called: str = "DSMPACS", calling: str = "RAWSCU") -> tuple[int, str]:
    """C-STORE a file's dataset bytes exactly as they are, however broken (pynetdicom's
    chunked send; dcmtk refuses to load such files). (status, ErrorComment)."""
    from pynetdicom import AE, _config

    ae = AE(ae_title=calling)
    ae.add_requested_context(sop_class, transfer_syntax)
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title=called)
        assert assoc.is_established
        try:
            rsp = assoc.send_c_store(path)
        finally:
            assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old
    return int(rsp.Status), str(rsp.get("ErrorComment", ""))


def stores_over_one_association(tmp_path: Path, ae_title: str, handlers: list, count: int):
    """Send ``count`` small secondary captures over one association to an in-process
    pynetdicom listener of the engine, bound to ``handlers``; returns the statuses
    and the SOP Instance UIDs sent, in order."""
    from pynetdicom import AE
    from pynetdicom.sop_class import SecondaryCaptureImageStorage

    from tests import factories as f

    ae = AE(ae_title=ae_title)
    ae.add_supported_context(SecondaryCaptureImageStorage)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
    statuses, sent = [], []
    try:
        scu = AE(ae_title="SENDER")
        scu.add_requested_context(SecondaryCaptureImageStorage)
        assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title=ae_title)
        assert assoc.is_established
        try:
            for i in range(count):
                ds = f.secondary_capture(size=16, instance_number=i + 1)
                sent.append(ds.SOPInstanceUID)
                statuses.append(assoc.send_c_store(f.write(ds, tmp_path / f"sc{i}.dcm")).Status)
        finally:
            assoc.release()
    finally:
        server.shutdown()
    return statuses, sent


def tool(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"{name} not installed (apt-get install dcmtk)")
    return path


def dcmtk(name: str, *args: str, timeout: float = 300, check: bool = False,
          cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """Run a dcmtk tool with TCP_NODELAY=1, as every benchmark and test should."""
    env = dict(os.environ, TCP_NODELAY="1")
    done = subprocess.run([tool(name), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)
    if check and done.returncode != 0:
        raise AssertionError(f"{name} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


class ServerProcess:
    """``python -m dsmpacs serve`` on ephemeral ports, as real OS processes.

    By default both children run (DICOM daemon and web server); ``only="dicom"``
    or ``only="web"`` runs one. ``start`` returns once every expected process wrote
    its run file (it listens): ``.port`` is the DICOM port, ``.web_port``/``.web_url``
    the web one. Not stdout: two processes' lines can merge in one pipe.
    """

    def __init__(self, data_dir: Path, sets: dict[str, object], only: str | None = None):
        self.data_dir = Path(data_dir)
        # Admins sign in with a password alone unless a test asks for the product's
        # default (require_totp_roles="admin"; tests/test_web_totp.py covers it), and
        # unregistered AEs store (tests/test_strict_defaults.py covers the default).
        # A value None leaves the setting at the product's default.
        self.sets = {"dicom_host": "127.0.0.1", "dicom_port": 0, "web_host": "127.0.0.1", "web_port": 0,
                     "min_free_mb": 0, "log_level": "DEBUG", "require_totp_roles": "",
                     "unknown_ae_may_store": True, **sets}
        self.only = only
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.web_port: int | None = None
        self.ae_title = str(self.sets.get("ae_title", "DSMPACS"))
        self.stderr_path = self.data_dir / "server.stderr"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "dsmpacs", "--data-dir", str(self.data_dir)]
        for key, value in self.sets.items():
            if value is not None:
                cmd += ["--set", f"{key}={value}"]
        return cmd + ["serve"] + (["--only", self.only] if self.only else [])

    def start(self, timeout: float = 60) -> "ServerProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("DSMPACS_DATA_DIR", None)
        self._stderr = open(self.stderr_path, "ab")
        # Its own process group: kill() takes the parent and both children down at
        # once, like a power cut, and nothing outlives the test. Both streams go to
        # one log file, shown when the start fails; readiness comes from the run files.
        self.proc = subprocess.Popen(self.command(), stdout=self._stderr, stderr=self._stderr,
                                     env=env, cwd=ROOT, start_new_session=True)
        roles = [role for role in ("dicom", "web") if self.only in (None, role)]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            ports = {role: self._listening_port(role) for role in roles}
            if None not in ports.values():
                self.port, self.web_port = ports.get("dicom"), ports.get("web")
                return self
            time.sleep(0.05)
        self._kill_group()                    # nothing half-started outlives the test
        raise AssertionError(f"server did not start:\n{self.log()}")

    def _listening_port(self, role: str) -> int | None:
        """The port in ``run/<role>.json``, which the process writes (atomically, by
        rename) once it listens; a file left by an earlier server in the same data
        directory does not count: its pid must be in this server's process group."""
        try:
            info = json.loads((self.data_dir / "run" / f"{role}.json").read_text())
            if os.getpgid(int(info["pid"])) != self.proc.pid:
                return None
            return int(info["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def log(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def logged(self, text: str | re.Pattern, timeout: float = 10) -> bool:
        """``text`` (or a match of the pattern) is in the log, now or within ``timeout``
        seconds: a line logged by a receiving process of the DICOM daemon
        (dicom/receivers.py) is written by the daemon a moment after the event the test
        saw (a connection closed, an answer). Returns as soon as the line is there."""
        pattern = text if isinstance(text, re.Pattern) else re.compile(re.escape(text))
        wait_until(lambda: pattern.search(self.log()), timeout=timeout,
                   what=f"{pattern.pattern!r} in the log")
        return True

    @property
    def storage(self) -> Path:
        return Path(str(self.sets.get("storage_root", self.data_dir / "storage")))

    @property
    def web_url(self) -> str:
        assert self.web_port is not None, "the web server is not running"
        scheme = "https" if str(self.sets.get("web_tls", "")).lower() in ("true", "1", "yes", "on") else "http"
        return f"{scheme}://127.0.0.1:{self.web_port}"

    def url(self, path: str = "/") -> str:
        return self.web_url + path

    def child_pid(self, role: str) -> int | None:
        """The pid of the dicom or web process, from its run file."""
        try:
            return int(json.loads((self.data_dir / "run" / f"{role}.json").read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._kill_group()
        self._stderr.close()
        return self.proc.returncode

    def kill(self) -> None:
        assert self.proc is not None
        self._kill_group()
        self.proc.wait()
        self._stderr.close()

    def _kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    # --- talking to it with dcmtk ------------------------------------------
    def storescu(self, *files: Path | str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        """storescu -v, so the response status is in stderr."""
        return dcmtk("storescu", "-v", "-aec", self.ae_title, *extra, "127.0.0.1", self.port, *files)

    def dcmsend(self, *files: Path | str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        """dcmsend proposes any SOP class, private ones included (storescu refuses those)."""
        return dcmtk("dcmsend", "-v", "-nuc", "-aec", self.ae_title, *extra, "127.0.0.1", self.port,
                     *files)

    def echoscu(self) -> subprocess.CompletedProcess:
        return dcmtk("echoscu", "-aec", self.ae_title, "127.0.0.1", self.port)
