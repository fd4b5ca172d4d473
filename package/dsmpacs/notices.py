"""System notices: what the administrator must hear about without looking for it.

Four conditions, each with a stable key so that it is told once, not every minute:

- ``service-crashed`` / ``service-gave-up``: the watchdog in ``serve`` (supervisor.py)
  restarted a DICOM or web process that died, or stopped restarting it after too many
  crashes in a short time. The watchdog keeps each service's record in
  ``<data_dir>/run/services.json`` (written by the supervisor only).
- ``storage-low``: free space on the storage filesystem is below ``storage_warn_mb`` (or
  below ``min_free_mb``, when new instances are already refused).
- ``verification-failed``: the background verification (archive/verification.py) marked
  instances corrupt.
- ``certificate-expiring``: the TLS server certificate in ``<data_dir>/tls/`` (DICOM TLS,
  HTTPS on the web port) expires within ``cert_warn_days`` or has expired.

Where they go: every administration page shows the current ones (web/admin); each new one
is appended as one line to ``<data_dir>/logs/notices.log``, which DSM's lifecycle script
copies into DSM's package log (``/var/log/packages/dsmpacs.log``) the next time DSM runs it;
and ``notify_command``, when set, is run with a title and the message (for example DSM's
``synodsmnotify``, where the package may call it, or a script that pages someone).
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dsmpacs.settings import Settings

log = logging.getLogger(__name__)

SERVICES_FILE = "services.json"      # in <data_dir>/run
NOTICES_LOG = "notices.log"          # in <data_dir>/logs
CRASH_SHOWN_SECONDS = 24 * 3600      # a restarted service is shown for a day
CHECK_SECONDS = 15 * 60              # how often the DICOM daemon looks at storage, checks, certs


@dataclass(frozen=True)
class Notice:
    kind: str                 # one of the kinds in the module docstring
    key: str                  # stable while the condition lasts: told once per key
    params: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        """English, for the logs and notify_command (the web pages word it per language)."""
        p = self.params
        if self.kind == "service-crashed":
            return (f"The {p['service']} service stopped unexpectedly (exit status {p['status']}) "
                    f"and was restarted; {p['restarts']} restart(s) since {p['since']}.")
        if self.kind == "service-gave-up":
            return (f"The {p['service']} service crashed {p['crashes']} times within "
                    f"{p['window_minutes']} minutes (last exit status {p['status']}); it is no longer "
                    f"restarted and DSM PACS stopped. See the logs, then start the package again.")
        if self.kind == "storage-low":
            return (f"Only {p['free_mb']} MiB free on the storage filesystem {p['root']} (warning "
                    f"below {p['warn_mb']} MiB; new instances are refused below {p['min_free_mb']} MiB).")
        if self.kind == "verification-failed":
            return (f"{p['count']} stored instance(s) failed verification: their files no longer "
                    f"match the checksum recorded when stored, or are missing.")
        if self.kind == "certificate-expiring":
            return f"The TLS server certificate {p['path']} expires on {p['not_after']} ({p['days']} days)."
        return self.kind


# --- the watchdog's record -------------------------------------------------------------
def services_path(settings: Settings) -> Path:
    return settings.data_dir / "run" / SERVICES_FILE


def read_services(settings: Settings) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(services_path(settings).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_services(settings: Settings, record: dict[str, dict[str, Any]]) -> None:
    path = services_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def service_notices(settings: Settings, now: float | None = None) -> list[Notice]:
    now = time.time() if now is None else now
    out = []
    for role, rec in sorted(read_services(settings).items()):
        last = float(rec.get("last_crash", 0) or 0)
        if rec.get("gave_up"):
            out.append(Notice("service-gave-up", f"gave-up:{role}:{last}", {
                "service": role, "crashes": rec.get("crashes_in_window", 0),
                "window_minutes": round(float(rec.get("window", 0)) / 60),
                "status": rec.get("last_status"), "at": _iso(last)}))
        elif last and now - last < CRASH_SHOWN_SECONDS:
            out.append(Notice("service-crashed", f"crashed:{role}:{last}", {
                "service": role, "status": rec.get("last_status"), "restarts": rec.get("restarts", 0),
                "since": _iso(float(rec.get("since", last))), "at": _iso(last)}))
    return out


# --- the other conditions --------------------------------------------------------------
def storage_notice(settings: Settings, root: Path, min_free_bytes: int) -> Notice | None:
    try:
        free = shutil.disk_usage(root).free
    except OSError:
        return None                  # the health check and the start checks report a missing root
    warn = max(settings.storage_warn_mb * 2**20, min_free_bytes)
    if free >= warn:
        return None
    # The key changes with each GiB lost, so a shrinking disk is told again, not every byte.
    return Notice("storage-low", f"storage-low:{free // 2**30}", {
        "free_mb": free // 2**20, "warn_mb": warn // 2**20, "min_free_mb": min_free_bytes // 2**20,
        "root": str(root), "refusing": free < min_free_bytes})


def verification_notice(corrupt: int) -> Notice | None:
    if not corrupt:
        return None
    return Notice("verification-failed", f"corrupt:{corrupt}", {"count": corrupt})


def certificate_notice(settings: Settings, now: datetime | None = None) -> Notice | None:
    """The server certificate, when a TLS listener uses it and it expires soon."""
    if not (settings.dicom_tls_port or settings.web_tls):
        return None
    from cryptography import x509

    from dsmpacs.tls import TlsFiles

    path = TlsFiles.of(settings).server_cert
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None                  # no certificate: the start check says so
    now = now or datetime.now(timezone.utc)
    days = (cert.not_valid_after_utc - now).days
    if days > settings.cert_warn_days:
        return None
    not_after = cert.not_valid_after_utc.date().isoformat()
    return Notice("certificate-expiring", f"cert:{not_after}", {
        "path": str(path), "not_after": not_after, "days": days, "expired": days < 0})


def current(settings: Settings, archive) -> list[Notice]:
    """Every notice that holds now (for the administration pages and the monitor)."""
    from dsmpacs.archive.integrity import corrupt_count

    found = service_notices(settings)
    for notice in (storage_notice(settings, archive.storage.root, archive.storage.min_free_bytes),
                   verification_notice(corrupt_count(archive.index)),
                   certificate_notice(settings)):
        if notice is not None:
            found.append(notice)
    return found


# --- telling -----------------------------------------------------------------------------
def log_path(settings: Settings) -> Path:
    return settings.data_dir / "logs" / NOTICES_LOG


def tell(settings: Settings, notice: Notice) -> None:
    """Append the notice to notices.log (for DSM's package log) and run notify_command."""
    line = f"{_iso(time.time())} DSM PACS {notice.kind}: {notice.text()}\n"
    path = log_path(settings)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # One write in append mode: lines from the supervisor and the DICOM daemon never mix.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)
    except OSError as exc:
        log.warning("cannot write %s: %s", path, exc)
    log.warning("notice %s: %s", notice.kind, notice.text())
    if settings.notify_command:
        command = shlex.split(settings.notify_command) + ["DSM PACS", notice.text()]
        try:
            done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=30, check=False)
            if done.returncode != 0:
                # On DSM a package user may be refused by synodsmnotify: the log line stays.
                log.warning("notify_command exited %s: %s", done.returncode,
                            done.stderr.decode(errors="replace").strip()[:300])
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("notify_command failed: %s", exc)


class Monitor:
    """Tells each new notice once. ``told`` remembers the keys told in this process and in
    ``<data_dir>/run/notices-told.json``, so a restart does not repeat them."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.path = settings.data_dir / "run" / "notices-told.json"
        try:
            self.told = set(json.loads(self.path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            self.told = set()

    def check(self, notices: list[Notice]) -> list[Notice]:
        new = [n for n in notices if n.key not in self.told]
        for notice in new:
            tell(self.settings, notice)
        # Forget what no longer holds, so that it is told again if it comes back.
        current = {n.key for n in notices}
        if new or self.told - current:
            self.told = current
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.write_text(json.dumps(sorted(self.told)), encoding="utf-8")
            except OSError as exc:
                log.warning("cannot write %s: %s", self.path, exc)
        return new


def start_monitor(archive, stop: threading.Event, every: float = CHECK_SECONDS) -> threading.Thread:
    """In the DICOM daemon: look at storage, verification and certificates now and then
    every ``every`` seconds, until ``stop`` (the watchdog tells crashes itself)."""
    monitor = Monitor(archive.settings)

    def run() -> None:
        while True:
            try:
                found = [n for n in current(archive.settings, archive)
                         if not n.kind.startswith("service-")]
                monitor.check(found)
            except Exception:          # a failed look must not end the daemon; the next one retries
                log.exception("system notice check failed")
            if stop.wait(every):
                return

    thread = threading.Thread(target=run, name="notices", daemon=True)
    thread.start()
    return thread
