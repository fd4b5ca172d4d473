"""dcmtk findscu as the C-FIND peer: run it, keep its responses as datasets."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

from tests.peers import tool

_FINAL = re.compile(r"Received Final Find Response \(([^)]*)\)")
_PENDING = re.compile(r"Find Response:? \d+ \((Pending[^)]*)\)")


@dataclass
class FindResult:
    responses: list[Dataset]
    pending: list[str]          # dcmtk's text for each pending status
    final: str                  # dcmtk's text for the final status, e.g. "Success"
    output: str

    def values(self, keyword: str) -> list[str]:
        return [str(ds.get(keyword, "")) for ds in self.responses]


def arg(value: str | bytes) -> str:
    """A command-line argument carrying exactly these bytes (e.g. GB18030 text)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def findscu(port: int, keys: list[str | bytes], out: Path, *, model: str = "-S", calling_ae: str = "FINDSCU",
            called_ae: str = "DSMPACS", extra: tuple[str, ...] = ()) -> FindResult:
    """Run findscu with ``-k`` for each key; responses are extracted to files and read back."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("rsp*.dcm"):
        old.unlink()
    args = ["-v", model, "-aet", calling_ae, "-aec", called_ae, "-X", "-od", str(out), *extra]
    for key in keys:
        args += ["-k", arg(key)]
    # Not peers.dcmtk(): the output holds patient names in the answers' character sets.
    done = subprocess.run([tool("findscu"), *args, "127.0.0.1", str(port)], capture_output=True,
                          timeout=120, env=dict(os.environ, TCP_NODELAY="1"))
    output = (done.stdout + done.stderr).decode("utf-8", "replace")
    final = _FINAL.search(output)
    assert final, f"findscu got no final response (rc {done.returncode}):\n{output[-3000:]}"
    responses = [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]
    return FindResult(responses, _PENDING.findall(output), final.group(1), output)


def register(server, name: str, ae_title: str, *flags: str) -> None:
    """`dsmpacs ae add` against the running server's index, as an administrator would."""
    cmd = [sys.executable, "-m", "dsmpacs", "--data-dir", str(server.data_dir)]
    for key, value in server.sets.items():
        if value is not None:        # None: the product's default (tests/peers.py)
            cmd += ["--set", f"{key}={value}"]
    cmd += ["ae", "add", name, ae_title, "127.0.0.1", "11113", *flags]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def unregister(server, name: str) -> None:
    cmd = [sys.executable, "-m", "dsmpacs", "--data-dir", str(server.data_dir)]
    for key, value in server.sets.items():
        if value is not None:        # None: the product's default (tests/peers.py)
            cmd += ["--set", f"{key}={value}"]
    done = subprocess.run(cmd + ["ae", "remove", name], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
