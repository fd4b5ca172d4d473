"""Health of the running archive: index reachable, storage writable with space
left, DICOM listener up. Served by the web process as ``/-/health``.

Each check says ``ok`` and, when it fails, an ``error`` sentence of our own;
``public()`` keeps only those for anonymous monitoring. The rest (free bytes,
the DICOM port, AE title and pid, the index driver's own message, which can
name the database host and user) is for a signed-in administrator."""
from __future__ import annotations

import os
import time
import uuid
from typing import Any

from dsmpacs import runfiles
from dsmpacs.archive import Archive
from dsmpacs.settings import Settings


def _index(archive: Archive) -> dict[str, Any]:
    started = time.monotonic()
    try:
        archive.index.ping()
    except Exception as exc:   # any driver error means "not reachable"
        return {"ok": False, "error": "the index does not answer", "detail": str(exc)[:200]}
    return {"ok": True, "ms": round((time.monotonic() - started) * 1000, 1)}


def _storage(archive: Archive) -> dict[str, Any]:
    storage = archive.storage
    out: dict[str, Any] = {"ok": False, "min_free_bytes": storage.min_free_bytes}
    try:
        out["free_bytes"] = storage.free_bytes()
    except OSError as exc:
        out["error"] = f"storage root unavailable: {exc.strerror or exc}"
        return out
    # A real write, not just a permission check: a read-only remount or a full
    # quota shows up here before the next instance arrives.
    probe = storage.tmp_dir / f"health-{uuid.uuid4().hex}.probe"
    try:
        with open(probe, "xb") as fh:
            fh.write(b"ok")
        out["writable"] = True
    except OSError as exc:
        out["writable"] = False
        out["error"] = f"storage not writable: {exc.strerror or exc}"
        return out
    finally:
        try:
            os.unlink(probe)
        except OSError:
            pass
    if out["free_bytes"] < storage.min_free_bytes:
        out["error"] = "free space is below min_free_mb: new instances are refused"
        return out
    out["ok"] = True
    return out


def _dicom(settings: Settings) -> dict[str, Any]:
    info = runfiles.read(settings, "dicom")
    if info is None:
        return {"ok": False, "error": "the DICOM listener is not running (no run file)"}
    out = {"ok": runfiles.is_up(info), "ae_title": info.get("ae_title", ""), "port": info.get("port"),
           "pid": info.get("pid"), "heartbeat_age": round(info["heartbeat_age"], 1)}
    if not out["ok"]:
        out["error"] = "the DICOM listener stopped (process gone or heartbeat stale)"
    return out


def check(settings: Settings, archive: Archive) -> dict[str, Any]:
    checks = {"index": _index(archive), "storage": _storage(archive), "dicom": _dicom(settings)}
    return {"status": "ok" if all(c["ok"] for c in checks.values()) else "fail", "checks": checks}


PUBLIC_KEYS = ("ok", "error")


def public(report: dict[str, Any]) -> dict[str, Any]:
    """The report as anyone may see it: each check's outcome and our own sentence."""
    return {"status": report["status"],
            "checks": {name: {k: v for k, v in c.items() if k in PUBLIC_KEYS}
                       for name, c in report["checks"].items()}}
