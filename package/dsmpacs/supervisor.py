"""`dsmpacs serve` as a parent of two OS processes: the DICOM daemon and the web server.

They share the index and the storage and nothing else, so that rendering in the
web process never slows ingest under the GIL. The parent only starts them,
forwards SIGTERM/SIGINT, and watches: if one child dies, it stops the other
and exits non-zero, because DSM's start-stop-status (and any service manager)
must see "not running" rather than half a server.

Children are told by the kernel (PR_SET_PDEATHSIG) to stop when the parent
dies, even by SIGKILL, so they never outlive it holding the ports.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import threading
from typing import Callable

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _death_signal_setter() -> Callable[[], None]:
    """A function, safe to run between fork and exec, that makes the child get
    SIGTERM when this process dies (Linux; a no-op elsewhere)."""
    parent = os.getpid()
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return lambda: None

    def setter() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:        # the parent died before prctl took effect
            os._exit(1)
    return setter


def supervise(commands: dict[str, list[str]], *, stop_timeout: float = 30.0) -> int:
    """Run each command as a child until a signal or a child's death; returns the exit code."""
    wake = threading.Event()
    stopping: list[int] = []

    def on_signal(signum, _frame) -> None:
        stopping.append(signum)
        wake.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    signal.signal(signal.SIGCHLD, lambda *_: wake.set())

    children: dict[str, subprocess.Popen] = {}
    setter = _death_signal_setter()
    try:
        for role, command in commands.items():
            children[role] = subprocess.Popen(command, preexec_fn=setter)
            log.info("started the %s process (pid %d)", role, children[role].pid)
        code = 0
        while True:
            if stopping:
                log.info("signal %d: stopping", stopping[0])
                break
            dead = {role: p.returncode for role, p in children.items() if p.poll() is not None}
            if dead:
                for role, rc in dead.items():
                    log.error("the %s process exited with status %s; stopping the others", role, rc)
                code = next((rc for rc in dead.values() if rc and rc > 0), 1)
                break
            wake.wait(1.0)
            wake.clear()
    finally:
        # On the way out for any reason (signal, a dead child, an error here), stop
        # every child that still runs.
        codes = _stop_all(children, stop_timeout)
    if code == 0 and any(rc != 0 for rc in codes.values()):
        code = 1
    return code


def _stop_all(children: dict[str, subprocess.Popen], timeout: float) -> dict[str, int]:
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes = {}
    for role, proc in children.items():
        try:
            codes[role] = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("the %s process did not stop within %.0f s; killing it", role, timeout)
            proc.kill()
            codes[role] = proc.wait()
    return codes
