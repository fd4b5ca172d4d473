"""Start-up checks that turn the usual failures into a reason an administrator can act on.

``dsmpacs check`` runs them. On DSM, start-stop-status runs it before starting
the services and shows what it prints in Package Center, so each message names
the setting or the DSM page to change.
"""
from __future__ import annotations

import errno
import os
import pwd
import socket
from pathlib import Path
from urllib.parse import urlsplit

from dsmpacs.settings import CONFIG_FILE, Settings


def _config(settings: Settings) -> Path:
    return settings.data_dir / CONFIG_FILE


def _bind_problem(label: str, host: str, port: int, host_setting: str, port_setting: str,
                  config: Path) -> str | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # The servers set SO_REUSEADDR too: a port held only by TIME_WAIT is free for them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (f"The {label} port {port} is already in use on {host} by another program. "
                        f"Stop that program, or choose another port ({port_setting} in {config}) "
                        f"and start the package again.")
            if exc.errno == errno.EADDRNOTAVAIL:
                return (f"{host} is not an address of this machine, so the {label} service cannot "
                        f"listen on it. Set {host_setting} in {config} to 0.0.0.0 (all interfaces) "
                        f"or to one of this machine's addresses.")
            if exc.errno == errno.EACCES:
                return (f"The {label} port {port} needs root privileges. Choose a port from 1024 "
                        f"to 65535 ({port_setting} in {config}).")
            return f"The {label} service cannot listen on {host}:{port}: {exc.strerror or exc}."
    return None


def port_problems(settings: Settings) -> list[str]:
    """The DICOM and web ports must be free to bind (run while the archive is stopped)."""
    config = _config(settings)
    found = []
    if settings.dicom_port and settings.dicom_port == settings.web_port:
        found.append(f"The DICOM port and the web port are both {settings.dicom_port}; set "
                     f"different dicom_port and web_port in {config}.")
        return found
    if settings.hl7_port and settings.hl7_port in (settings.dicom_port, settings.web_port,
                                                   settings.dicom_tls_port):
        found.append(f"hl7_port {settings.hl7_port} is also the DICOM, DICOM TLS or web port; "
                     f"choose another in {config} (2575 is HL7 over MLLP).")
        return found
    if settings.ups_ws_port and settings.ups_ws_port in (settings.dicom_port, settings.web_port,
                                                         settings.dicom_tls_port, settings.hl7_port):
        found.append(f"ups_ws_port {settings.ups_ws_port} is also another listener's port; "
                     f"choose another in {config}.")
        return found
    if settings.dicom_tls_port and settings.dicom_tls_port in (settings.dicom_port, settings.web_port):
        found.append(f"dicom_tls_port {settings.dicom_tls_port} is also the DICOM or the web port; "
                     f"choose another in {config} (2762 is DICOM over TLS).")
        return found
    for problem in (tls_problem(settings), web_tls_problem(settings)):
        if problem:
            found.append(problem)
    listeners = [("DICOM", settings.dicom_host, settings.dicom_port if settings.dicom_plain else 0,
                  "dicom_host", "dicom_port"),
                 ("DICOM TLS", settings.dicom_host, settings.dicom_tls_port, "dicom_host",
                  "dicom_tls_port"),
                 ("web", settings.web_host, settings.web_port, "web_host", "web_port"),
                 ("HL7", settings.hl7_host or settings.dicom_host, settings.hl7_port, "hl7_host",
                  "hl7_port"),
                 ("UPS-RS event", settings.web_host, settings.ups_ws_port, "web_host", "ups_ws_port")]
    for label, host, port, host_setting, port_setting in listeners:
        if port:  # 0 lets the system pick a free port
            problem = _bind_problem(label, host, port, host_setting, port_setting, config)
            if problem:
                found.append(problem)
    return found


def _missing_certificate(settings: Settings, what: str, turn_off: str) -> str | None:
    from dsmpacs.tls import TlsFiles

    files = TlsFiles.of(settings)
    if files.has_server_identity():
        return None
    return (f"{what} but there is no certificate in {files.directory}: run `dsmpacs tls init "
            f"--host NAME-OR-ADDRESS` (a local CA) or `dsmpacs tls import --cert CERT --key KEY`, "
            f"or set {turn_off} in {_config(settings)}.")


def tls_problem(settings: Settings) -> str | None:
    """The DICOM TLS port needs this archive's certificate and key."""
    if not settings.dicom_tls_port:
        return None
    return _missing_certificate(settings, f"dicom_tls_port is {settings.dicom_tls_port}",
                                "dicom_tls_port = 0")


def web_tls_problem(settings: Settings) -> str | None:
    """HTTPS (web_tls) needs this archive's certificate and key too."""
    if not settings.web_tls:
        return None
    return _missing_certificate(settings, "web_tls is on", "web_tls = false")


def storage_problems(settings: Settings) -> list[str]:
    """The storage root exists (or can be created) and this user may write to it."""
    root = Path(settings.effective_storage_root)
    user = pwd.getpwuid(os.getuid()).pw_name
    share_hint = (f"If it is a DSM shared folder, check in Control Panel > Shared Folder that "
                  f"'{root.name}' exists and that its volume is available (an encrypted shared "
                  f"folder must be mounted).")
    if not root.exists():
        if root.is_symlink():
            return [f"The folder for the images, {root}, points to a folder that is not there. "
                    + share_hint]
        ancestor = root.parent
        while not ancestor.exists() and not ancestor.is_symlink() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if ancestor.is_dir() and os.access(ancestor, os.W_OK | os.X_OK):
            return []  # the archive creates it at start
        return [f"The folder for the images, {root} (storage_root), does not exist. " + share_hint]
    if not root.is_dir():
        return [f"The storage root {root} is not a folder; set storage_root in {_config(settings)}."]
    if not os.access(root, os.W_OK | os.X_OK):
        return [f"The user '{user}' cannot write to {root}. On DSM, give the system internal user "
                f"'{user}' read/write permission on the shared folder '{root.name}' in Control "
                f"Panel > Shared Folder > Edit > Permissions."]
    return []


def database_problems(settings: Settings) -> list[str]:
    """The index database answers and holds no schema newer than this program's."""
    from dsmpacs.archive import database

    url = settings.effective_database_url
    db = database.open_database(url, max_connections=2)
    database.bind(db)
    try:
        version = database.current_version(db)
    except database.IndexProblem as exc:
        if url.startswith("sqlite:"):
            return [f"The index file cannot be opened: {exc}."]
        parts = urlsplit(url)
        where = f"{parts.hostname}:{parts.port or 3306}"
        return [f"The index database at {where} cannot be reached: {exc}. Check that MariaDB is "
                f"running, that it accepts TCP/IP connections on port {parts.port or 3306} (on DSM: "
                f"MariaDB 10 > Enable TCP/IP connection), and that the user, password and database "
                f"in database_url in {_config(settings)} are right."]
    except Exception as exc:  # the driver's own errors: a broken file, missing rights
        return [f"The index database cannot be read: {exc}."]
    finally:
        db.close_all() if hasattr(db, "close_all") else db.close()
    if version > database.LATEST_VERSION:
        return [f"The index has schema version {version}, newer than this program's "
                f"{database.LATEST_VERSION}: install the newer DSM PACS, or restore an index backup."]
    return []


CHECKS = {"ports": port_problems, "storage": storage_problems, "database": database_problems}


def run(settings: Settings, names: list[str]) -> list[str]:
    found: list[str] = []
    for name in names:
        found.extend(CHECKS[name](settings))
    return found
