"""Orthanc (Debian package) as a second archive: interoperability tests and benchmarks.

Started from a JSON config on loopback with temporary storage, TCP_NODELAY=1
(without it Orthanc's dcmtk sockets keep Nagle's algorithm, and each small DIMSE
exchange waits for a delayed ACK: bench/common.py), and the modalities it may talk
to; stopped by its PID.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.peers import free_port

ORTHANC_BIN = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def orthanc_available() -> bool:
    return shutil.which("Orthanc") is not None or os.path.exists(ORTHANC_BIN)


class Orthanc:
    """One Orthanc process. ``modalities`` maps a name to (AE title, host, port)."""

    def __init__(self, workdir: Path, *, ae_title: str = "ORTHANC",
                 modalities: dict[str, tuple[str, str, int]] | None = None,
                 dicomweb: bool = False, extra: dict | None = None):
        self.workdir = Path(workdir)
        self.ae_title = ae_title
        self.dicom_port = free_port()
        self.http_port = free_port()
        while self.http_port == self.dicom_port:    # a port just closed may be handed out again
            self.http_port = free_port()
        self.modalities = modalities or {}
        self.dicomweb = dicomweb
        self.extra = extra or {}
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def config(self) -> dict:
        cfg = {
            "Name": "test-orthanc",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "UnknownSopClassAccepted": True,
            "DicomCheckCalledAet": False,
            "DicomModalities": {k: list(v) for k, v in self.modalities.items()},
            "StorageCompression": False,
            "Plugins": [DICOMWEB_PLUGIN] if self.dicomweb else [],
        }
        cfg.update(self.extra)
        return cfg

    def start(self, timeout: float = 60) -> "Orthanc":
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg_path = self.workdir / "orthanc.json"
        cfg_path.write_text(json.dumps(self.config(), indent=2))
        log = open(self.workdir / "orthanc.log", "ab")
        env = dict(os.environ, TCP_NODELAY="1")
        self.proc = subprocess.Popen([shutil.which("Orthanc") or ORTHANC_BIN, str(cfg_path)],
                                     stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(self.workdir / 'orthanc.log').read_text()[-2000:]}")
            try:
                self.get("/system")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)
        raise RuntimeError("Orthanc did not start in time")

    def request(self, method: str, path: str, body: bytes | dict | list | None = None,
                content_type: str = "application/json"):
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": content_type} if data else {})
        with urllib.request.urlopen(req, timeout=120) as rsp:
            raw = rsp.read()
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw

    def get(self, path: str):
        return self.request("GET", path)

    def post(self, path: str, body=None, content_type: str = "application/json"):
        return self.request("POST", path, body, content_type)

    def upload(self, path: Path) -> dict:
        return self.post("/instances", path.read_bytes(), "application/dicom")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
