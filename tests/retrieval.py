"""Helpers for the retrieve and storage commitment tests: registering peers in a
running server's index, and dcmtk storescp as a real receiving workstation."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from dsmpacs.archive import Archive
from dsmpacs.archive.peers import Peer, PeerRegistry
from dsmpacs.settings import Settings
from tests.peers import dcmtk, free_port, tool


def open_archive_at(data_dir: Path, sets: dict) -> Archive:
    """An archive by data directory and settings, opened as the web process or the CLI does."""
    arc = Archive(Settings.load(data_dir=data_dir, env={}, overrides=dict(sets)))
    arc.open()
    return arc


def open_index(server) -> Archive:
    """The running server's archive, opened beside it."""
    return open_archive_at(server.data_dir, server.sets)


def register(server, name: str, ae_title: str, port: int, host: str = "127.0.0.1", **flags) -> Peer:
    """Add a remote AE to the running server's registry (the `ae add` CLI is elsewhere)."""
    arc = open_index(server)
    try:
        return PeerRegistry(arc.index).add(Peer(name, ae_title, host, port, **flags))
    finally:
        arc.close()


def stored_path(server, sop_instance_uid: str) -> Path:
    arc = open_index(server)
    try:
        row = arc.index.find_instance(sop_instance_uid)
        assert row is not None, f"{sop_instance_uid} is not stored"
        return arc.storage.path(row.path)
    finally:
        arc.close()


class StoreSCP:
    """dcmtk storescp on a free port, writing what it receives bit-preserved."""

    def __init__(self, outdir: Path, ae_title: str = "WORKSTATION", *options: str,
                 probe: tuple[str, ...] = ()):
        self.outdir = Path(outdir)
        self.ae_title = ae_title
        self.options = options
        self.probe = probe          # echoscu's options to reach it (TLS: +tls KEY CERT +cf CA)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> "StoreSCP":
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.outdir.parent / f"{self.outdir.name}.storescp.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [tool("storescp"), "-aet", self.ae_title, "-od", str(self.outdir), "+B", *self.options,
             str(self.port)], stdout=self._log, stderr=subprocess.STDOUT,
            env=dict(os.environ, TCP_NODELAY="1"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"storescp exited: {self.log_path.read_text()}")
            if dcmtk("echoscu", *self.probe, "-aec", self.ae_title, "127.0.0.1", self.port,
                     timeout=10).returncode == 0:
                return self
            time.sleep(0.05)
        raise AssertionError("storescp did not start")

    def files(self) -> list[Path]:
        return sorted(p for p in self.outdir.iterdir() if p.is_file())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._log.close()


def run_cli(data_dir: Path, sets: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``dsmpacs`` as an administrator runs it over SSH, against a data directory."""
    import sys

    cmd = [sys.executable, "-m", "dsmpacs", "--data-dir", str(data_dir)]
    for key, value in sets.items():
        if value is not None:        # None: the product's default (tests/peers.py)
            cmd += ["--set", f"{key}={value}"]
    env = dict(os.environ)
    env.pop("DSMPACS_DATA_DIR", None)
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout, env=env)


def decode_like_archive(source, **kwargs):
    """Pixels decoded with the plugin the archive itself uses for that transfer syntax:
    lossy decoders may differ by a grey level, so compare like with like."""
    from pydicom import dcmread
    from pydicom.pixels import pixel_array

    from dsmpacs.archive.transcode import plugin_for

    ds = source if hasattr(source, "file_meta") else dcmread(source, stop_before_pixels=True)
    return pixel_array(source, decoding_plugin=plugin_for(ds.file_meta.TransferSyntaxUID), **kwargs)
