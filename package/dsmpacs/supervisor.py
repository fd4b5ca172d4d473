"""`dsmpacs serve` as a parent of two OS processes: the DICOM daemon and the web server.

They share the index and the storage and nothing else, so that rendering in the
web process never slows ingest under the GIL. The parent only starts them,
forwards SIGTERM/SIGINT, and watches.

A child is forked from the parent, not started as a new interpreter: the parent has
imported the archive (it migrated the index and recovered before starting them), and a
new interpreter would import it all again, about 0.8 s of CPU per child on the 2-core
development VM, on every start and every restart. The parent starts no thread, so
forking it is safe; ``gc.freeze`` keeps its objects out of the children's collections,
so their pages stay shared.

The watchdog: a child that dies after it was up (its run file written, see
runfiles.py) is restarted, after 1 s, then 2, 4 ... up to a minute when it keeps
dying, while the other child goes on serving. Each crash is recorded
(``<data_dir>/run/services.json``, read by the administration pages) and told
(notices.py: a log line, notices.log for DSM's package log, notify_command).
After ``watchdog_max_crashes`` crashes within ``watchdog_window_minutes`` it gives
up: it stops the other child and exits non-zero, because DSM's start-stop-status
(and any service manager) must then see "not running" rather than half a server.
A child that dies before it was ever up (a port in use, a missing folder) is a
failed start, not a crash: the same clean exit, at once, with its reason.

A restarted DICOM process does not run crash recovery: the web process may be
storing meanwhile, and recovery would take its staged files for leftovers.
Nothing acknowledged needs it (every store is durable before its answer); what
the crash left staged is cleaned at the next start of ``serve``.

Children are told by the kernel (PR_SET_PDEATHSIG) to stop when the parent
dies, even by SIGKILL, so they never outlive it holding the ports.
"""
from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def death_signal_setter() -> Callable[[], None]:
    """A function, run in a forked child before its role, that makes the child get
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


@dataclass
class Watchdog:
    """When to restart a dead child and when to give up (see the module docstring)."""
    max_crashes: int = 5
    window: float = 600.0             # seconds
    first_delay: float = 1.0
    max_delay: float = 60.0
    crashes: dict[str, list[float]] = field(default_factory=dict)

    def crashed(self, role: str, now: float) -> float | None:
        """Note a crash; the delay before the restart, or None to give up."""
        recent = [t for t in self.crashes.get(role, []) if now - t < self.window] + [now]
        self.crashes[role] = recent
        if len(recent) >= self.max_crashes:
            return None
        return min(self.first_delay * 2 ** (len(recent) - 1), self.max_delay)


class Forked:
    """A child forked from this process (``multiprocessing``'s fork start method, which
    also ends the child as an interpreter ends: its threads joined, its queued executor
    work done) that runs ``target`` and exits with what it returns; the part of
    ``subprocess.Popen`` that ``supervise`` uses."""

    def __init__(self, target: Callable[[], int | None], before: Callable[[], None]):
        self._process = _FORK.Process(target=_run_child, args=(target, before))
        self._process.start()
        self.pid = self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode       # negative: the signal that ended it, as Popen's

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
        return self._process.exitcode

    def send_signal(self, signum: int) -> None:
        if self._process.exitcode is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


_FORK = multiprocessing.get_context("fork")


def _run_child(target: Callable[[], int | None], before: Callable[[], None]) -> None:
    """In the forked child: the signal dispositions a new interpreter has, then the role;
    its return value is the exit status."""
    before()
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(target() or 0)


def exit_status(rc: int) -> str:
    """As an administrator reads it: a number, or the signal that ended the process."""
    if rc is not None and rc < 0:
        try:
            return f"{signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return str(rc)


def supervise(roles: dict[str, Callable[[], int | None]], *, stop_timeout: float = 30.0,
              watchdog: Watchdog | None = None, is_up: Callable[[str, int], bool] | None = None,
              on_crash: Callable[[str, dict], None] | None = None) -> int:
    """Run each role as a child until a signal or the watchdog gives up; returns the
    exit code. A role is a function, run in a forked child; its return value is the
    exit status. Without ``watchdog`` (or ``is_up``) any child's death stops
    everything.
    ``is_up(role, pid)`` says whether a child got up; ``on_crash(role, record)`` records
    and tells each crash."""
    wake = threading.Event()
    stopping: list[int] = []

    def on_signal(signum, _frame) -> None:
        stopping.append(signum)
        wake.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    signal.signal(signal.SIGCHLD, lambda *_: wake.set())

    children: dict[str, Forked] = {}
    was_up: set[str] = set()          # got up at least once: its death is a crash
    restart_at: dict[str, float] = {}
    records: dict[str, dict] = {}
    setter = death_signal_setter()
    gc.freeze()

    def launch(role: str) -> None:
        children[role] = Forked(roles[role], setter)
        log.info("started the %s process (pid %d)", role, children[role].pid)

    try:
        for role in roles:
            launch(role)
        code = 0
        while True:
            if stopping:
                log.info("signal %d: stopping", stopping[0])
                break
            now = time.monotonic()
            for role, proc in children.items():
                # Dead or alive: a run file with its pid says it got up (one killed at once
                # after it wrote it leaves the file behind).
                if role not in was_up and is_up is not None and is_up(role, proc.pid):
                    was_up.add(role)
            dead = {role: p.returncode for role, p in children.items()
                    if role not in restart_at and p.poll() is not None}
            fatal = {role: rc for role, rc in dead.items() if watchdog is None or role not in was_up}
            if fatal:
                for role, rc in fatal.items():
                    log.error("the %s process exited with status %s; stopping the others", role, rc)
                code = next((rc for rc in fatal.values() if rc and rc > 0), 1)
                break
            gave_up = False
            for role, rc in dead.items():
                delay = watchdog.crashed(role, now)
                rec = records.setdefault(role, {"restarts": 0, "since": time.time()})
                rec.update(last_crash=time.time(), last_status=exit_status(rc),
                           crashes_in_window=len(watchdog.crashes[role]), window=watchdog.window,
                           gave_up=delay is None)
                if delay is None:
                    log.error("the %s process exited with status %s, its %d. crash within %.0f "
                              "minutes: not restarting it; stopping", role, rec["last_status"],
                              rec["crashes_in_window"], watchdog.window / 60)
                    gave_up = True
                else:
                    rec["restarts"] += 1
                    log.error("the %s process exited with status %s; restarting it in %.0f s",
                              role, rec["last_status"], delay)
                    restart_at[role] = now + delay
                if on_crash is not None:
                    try:
                        on_crash(role, dict(rec))
                    except Exception:      # telling must never stop the watching
                        log.exception("recording the crash of the %s process failed", role)
            if gave_up:
                code = 1
                break
            for role, when in list(restart_at.items()):
                if now >= when:
                    del restart_at[role]
                    launch(role)
            timeout = min([1.0] + [max(0.05, t - now) for t in restart_at.values()])
            wake.wait(timeout)
            wake.clear()
    finally:
        # On the way out for any reason (signal, a dead child, an error here), stop
        # every child that still runs.
        codes = _stop_all(children, stop_timeout)
    if code == 0 and any(rc != 0 for rc in codes.values()):
        code = 1
    return code


def _stop_all(children: dict[str, Forked], timeout: float) -> dict[str, int]:
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
