"""Run files: how the two server processes tell each other (and tests, and DSM
scripts) that they are up, and where.

Each process writes ``<data_dir>/run/<role>.json`` (pid, address, port) once it
listens, refreshes its modification time from a heartbeat thread, and removes
it when it stops cleanly. The DICOM daemon's receiving processes write
``dicom-2.json``... (pid only, no heartbeat) once they serve: DSM's stop waits for
every process a run file names. The web process's health check reads the DICOM one:
a file whose process is gone, or whose heartbeat is stale, means the DICOM
listener is down. The processes share nothing else.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from dsmpacs.settings import Settings

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 30.0


def path(settings: Settings, role: str) -> Path:
    return settings.data_dir / "run" / f"{role}.json"


def write(settings: Settings, role: str, **info: Any) -> Path:
    target = path(settings, role)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"role": role, "pid": os.getpid(), "started": time.time(), **info}))
    os.replace(tmp, target)
    return target


def read(settings: Settings, role: str) -> dict[str, Any] | None:
    """The run file's content plus its heartbeat age in seconds, or None."""
    target = path(settings, role)
    try:
        info = json.loads(target.read_text())
        info["heartbeat_age"] = max(0.0, time.time() - target.stat().st_mtime)
    except (OSError, ValueError):
        return None
    return info


def remove(settings: Settings, role: str) -> None:
    target = path(settings, role)
    try:
        # Only our own file: a successor process may already have written its own.
        if json.loads(target.read_text()).get("pid") == os.getpid():
            target.unlink()
    except (OSError, ValueError):
        pass


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True          # exists, owned by someone else
    return True


def is_up(info: dict[str, Any] | None) -> bool:
    return bool(info) and pid_alive(int(info.get("pid", 0) or 0)) and \
        info.get("heartbeat_age", STALE_SECONDS + 1) < STALE_SECONDS


def start_heartbeat(settings: Settings, role: str, healthy: Callable[[], bool]) -> threading.Event:
    """Touch the run file every few seconds while ``healthy()``; set the returned
    event to stop."""
    stop = threading.Event()
    target = path(settings, role)

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                if healthy():
                    os.utime(target)
            except OSError as exc:
                log.warning("cannot refresh %s: %s", target, exc)

    threading.Thread(target=beat, name=f"{role}-heartbeat", daemon=True).start()
    return stop
