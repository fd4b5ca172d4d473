"""Composition root: builds the Archive once per process and hands it to the servers.

``serve`` runs the DICOM daemon and the web server as two child processes
(see supervisor.py); ``serve_dicom`` and ``serve_web`` are what each child
runs, and what ``serve --only dicom|web`` runs directly.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Callable

from dsmpacs import runfiles
from dsmpacs.archive import Archive
from dsmpacs.settings import Settings

log = logging.getLogger(__name__)


def install_engine() -> None:
    """Install this archive's changes to pynetdicom (dicom/engine/), once per process.

    Called by the process entry point (``dsmpacs.cli.main``) before any command
    runs, so the daemon, the web process (which sends studies) and every client
    command speak DICOM through the same engine."""
    from dsmpacs.dicom import engine

    engine.install()


# Files this program creates (index and its -wal/-shm, stored DICOM files, backups,
# logs, run files) are for the service user and its group only: 0640 for files and
# 0750 for directories. Secrets (web secret key, audit key, TLS keys) are created
# 0600 explicitly where they are written.
UMASK = 0o027


def restrict_file_modes() -> None:
    """Set the process umask, once, at the process entry point (``dsmpacs.cli.main``),
    rather than a chmod at every place that creates a file: the libraries that create
    files for us (SQLite, logging, pynetdicom's spool) follow it too, and the
    children of ``serve`` inherit it."""
    os.umask(UMASK)


def _mail_wording(note):
    """The words of a notification e-mail (web/notice_mail.py), imported at the first
    mail: the catalogs live beside the web UI and import Flask, which the DICOM
    process must not load just to be able to word a mail it may never send."""
    from dsmpacs.web.notice_mail import wording

    return wording(note)


def build_archive(settings: Settings, *, upgrade: bool = False) -> Archive:
    archive = Archive(settings)
    archive.open(upgrade=upgrade)
    # Notification e-mail in the words of the UI's catalogs, whichever process raises
    # it. Both processes build the Archive, whose Notifications listen to that
    # process's events (archive/__init__.py), so a rule's assignment made by the
    # DICOM daemon when images arrive is a notice in the index like one made on the
    # web page: the bell reads the index, not the events.
    archive.notifications.wording = _mail_wording
    return archive


def wait_for_stop() -> None:
    """Block until SIGTERM or SIGINT."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def prepare(settings: Settings) -> None:
    """What must happen once before either listener accepts work: create or
    migrate the index, and recover from a crash (staged files, orphans)."""
    archive = build_archive(settings, upgrade=True)
    try:
        archive.recover()
    finally:
        archive.close()


def serve(settings: Settings, roles: dict[str, Callable[[], int]]) -> int:
    """Prepare, then run the child processes (role -> what its forked child runs) until
    stopped, with the watchdog restarting a child that dies (supervisor.py)."""
    from dsmpacs import notices
    from dsmpacs.supervisor import Watchdog, supervise

    prepare(settings)
    # A new run starts a new record: what the previous run had is in the logs.
    notices.write_services(settings, {})

    def is_up(role: str, pid: int) -> bool:
        info = runfiles.read(settings, role)
        return bool(info) and info.get("pid") == pid

    def on_crash(role: str, record: dict) -> None:
        services = notices.read_services(settings)
        services[role] = record
        notices.write_services(settings, services)
        kind = [n for n in notices.service_notices(settings) if n.params.get("service") == role]
        for notice in kind:
            notices.tell(settings, notice)

    watchdog = Watchdog(max_crashes=settings.watchdog_max_crashes,
                        window=settings.watchdog_window_minutes * 60)
    return supervise(roles, watchdog=watchdog, is_up=is_up, on_crash=on_crash)


AUDIT_HOUSEKEEPING_SECONDS = 24 * 3600


def start_audit_housekeeping(archive: Archive, stop: threading.Event):
    """Prune and verify the audit trail now and then daily, and export it to syslog when
    configured, in daemon threads (one process does it: the DICOM daemon), until ``stop``.
    Returns the syslog exporter (None when not configured), to be closed before the index."""
    from dsmpacs import syslog_export
    from dsmpacs.archive.audit import AuditTrail, housekeeping

    settings = archive.settings
    exporter = syslog_export.start(settings, AuditTrail.of(archive), stop=stop)

    def run() -> None:
        while True:
            try:
                keep = syslog_export.delivered(settings) if exporter is not None else None
                housekeeping(AuditTrail.of(archive), settings.audit_retention_days, keep)
            except Exception:       # a bad night must not end the daemon; tomorrow retries
                log.exception("audit trail housekeeping failed")
            if stop.wait(AUDIT_HOUSEKEEPING_SECONDS):
                return

    threading.Thread(target=run, name="audit-housekeeping", daemon=True).start()
    return exporter


def start_overdue_checks(archive: Archive, stop: threading.Event) -> threading.Thread:
    """Look for overdue reading tasks every ``overdue_check_seconds`` (one process does
    it: the web server, which is always up beside the DICOM daemon), until ``stop``.
    Each task is noticed once (the notification's dedup key), so the check repeating,
    or racing the bell's own check, adds nothing twice."""
    every = archive.settings.overdue_check_seconds

    def run() -> None:
        while not stop.wait(every):
            try:
                archive.notifications.check_overdue()
            except Exception:     # an index hiccup: the next round retries
                log.exception("overdue reading check failed")

    thread = threading.Thread(target=run, name="overdue-reads", daemon=True)
    thread.start()
    return thread


def serve_dicom(settings: Settings, *, recover: bool = True) -> None:
    """Run the DICOM daemon until SIGTERM/SIGINT."""
    from dsmpacs.archive import checkpoint, verification
    from dsmpacs.dicom import server as dicom_server
    from dsmpacs.hl7v2 import server as hl7_server

    archive = build_archive(settings, upgrade=True)
    if recover:
        archive.recover()
    server = dicom_server.start(settings, archive)
    try:
        # Orders from a RIS or HIS (HL7 v2 over MLLP), when hl7_port is set: in this
        # process, beside the DICOM listeners that serve the worklist it feeds.
        hl7 = hl7_server.start(settings, archive)
    except BaseException:
        server.shutdown()
        raise
    # Background work beside the listener, all ended by one event: re-hashing
    # (archive/verification.py, which holds a lease in the index so other nodes over
    # the same index leave it alone meanwhile) and the audit trail's housekeeping.
    stop_jobs = threading.Event()
    verifier = verification.start_background(archive, stop_jobs)
    # SQLite: the log written back to the database file off the stores' commits.
    checkpoint.start(archive.db, stop_jobs)
    # "port" is where plain DICOM is heard, or the TLS port when there is none.
    host, port = server[0].server_address[:2]
    tls_port = server.tls.server_address[1] if server.tls is not None else None
    runfiles.write(settings, "dicom", host=host, port=port, ae_title=settings.ae_title,
                   plain=server.plain is not None, tls_port=tls_port,
                   hl7_port=hl7.server_address[1] if hl7 is not None else None)
    heartbeat = runfiles.start_heartbeat(settings, "dicom",
                                         lambda: all(s.socket.fileno() >= 0 for s in server))
    exporter = start_audit_housekeeping(archive, stop_jobs)
    from dsmpacs import notices

    notices.start_monitor(archive, stop_jobs)
    for listening in server:
        kind = "DICOM TLS" if listening is server.tls else "DICOM"
        lhost, lport = listening.server_address[:2]
        log.info("%s listener up on %s:%s as %s", kind, lhost, lport, settings.ae_title)
        print(f"{kind} listening on {lhost}:{lport} as AE title {settings.ae_title}", flush=True)
    if hl7 is not None:
        log.info("HL7 (MLLP) listener up on %s:%s", *hl7.server_address)
        print("HL7 (MLLP) listening on {}:{}".format(*hl7.server_address), flush=True)
    try:
        wait_for_stop()
    finally:
        heartbeat.set()
        stop_jobs.set()
        runfiles.remove(settings, "dicom")
        server.shutdown()
        if hl7 is not None:
            hl7.shutdown()
        if verifier is not None:
            verifier.join(timeout=30)
        if exporter is not None:
            exporter.close()
        archive.close()
        log.info("DICOM listener stopped")


def serve_web(settings: Settings) -> None:
    """Run the web server (UI, DICOMweb, /-/ introspection) until SIGTERM/SIGINT:
    cheroot (web/server.py), over HTTPS when web_tls is set."""
    from dsmpacs.web import server as web_server
    from dsmpacs.web.app import create_app

    archive = build_archive(settings, upgrade=True)
    app = create_app(settings, archive)
    context = None
    if settings.web_tls:
        from dsmpacs.tls import server_context

        context = server_context(settings)
    server = web_server.build(app, settings, context)
    server.prepare()                 # binds, starts the worker threads
    # The UPS-RS event channel (WebSocket, ups_ws_port), beside cheroot, which has none.
    from dsmpacs.web import upsws

    notifier = upsws.start(settings, archive, context)
    host, port = server.socket.getsockname()[:2]
    scheme = "https" if context is not None else "http"
    runfiles.write(settings, "web", host=host, port=port,
                   ups_ws_port=notifier.server_address[1] if notifier is not None else None)
    heartbeat = runfiles.start_heartbeat(settings, "web", lambda: server.ready)
    stop_jobs = threading.Event()
    overdue = start_overdue_checks(archive, stop_jobs)

    stopper = threading.Thread(target=server.stop, name="web-stop")

    def stop(*_):
        # cheroot stops from another thread: its select loop ends within half a second
        # and serve() returns. (An exception raised here could land while cheroot holds
        # one of its locks, which stop() then waits for.)
        if not stopper.is_alive() and stopper.ident is None:
            stopper.start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    log.info("web server up on %s://%s:%s", scheme, host, port)
    print(f"Web listening on {scheme}://{_url_host(host)}:{port}/", flush=True)
    if notifier is not None:
        log.info("UPS-RS event channel (WebSocket) up on %s:%s", *notifier.server_address)
    try:
        server.serve()
    finally:
        heartbeat.set()
        stop_jobs.set()
        runfiles.remove(settings, "web")
        if notifier is not None:
            notifier.shutdown()
        if stopper.ident is None:
            stopper.start()
        stopper.join()
        overdue.join(timeout=10)
        archive.close()
        log.info("web server stopped")
