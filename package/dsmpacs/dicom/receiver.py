"""A receiving process: serves the associations the DICOM daemon hands it.

``dsmpacs dicom-receiver --channel-fd N``, started by the daemon alone
(dicom/receivers.py says why and how connections are shared). It builds the same
archive, AE and handlers as the daemon, from the daemon's own settings (the
channel's first message), listens nowhere, and serves each connection handed over
the channel on a thread of its own, as the daemon's listener would
(engine/listener.py, ``HandedAssociationServer``). It runs no crash recovery and no
background job: those are the daemon's. It writes ``run/dicom-<number>.json`` once it
serves (runfiles.py), for DSM's stop, and removes it when it ends. Its log records go
to the daemon, which writes them with its own. It ends when the channel does, or on
SIGTERM.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys

from dsmpacs.dicom import handover

log = logging.getLogger(__name__)
MAX_LOGGED = 64 * 1024          # characters of one forwarded message (a traceback fits)


class _Forward(logging.Handler):
    """Log records to the daemon over the channel; to stderr when it is gone."""

    def __init__(self, channel: socket.socket):
        super().__init__()
        self.channel = channel
        self.fallback = logging.StreamHandler(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            fields = {"name": record.name, "msg": message[:MAX_LOGGED], "levelno": record.levelno,
                      "levelname": record.levelname, "created": record.created, "msecs": record.msecs,
                      "pathname": record.pathname, "lineno": record.lineno, "funcName": record.funcName,
                      "threadName": record.threadName, "process": record.process}
            handover.send(self.channel, {"log": fields})
        except Exception:
            self.fallback.handle(record)


def _log_to(channel: socket.socket, settings) -> None:
    from dsmpacs.logsetup import configure

    configure(settings, to_file=False)       # levels as the daemon has them
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_Forward(channel))


def run(channel_fd: int) -> int:
    from dsmpacs import app, runfiles, tls
    from dsmpacs.dicom import server as dicom_server
    from dsmpacs.dicom.engine.listener import HandedAssociationServer
    from dsmpacs.settings import Settings

    channel = socket.socket(fileno=channel_fd)
    got = handover.receive(channel)
    if got is None:
        return 1
    first, _ = got
    settings = Settings.from_values(first["settings"])
    role = f"dicom-{int(first['number'])}"
    _log_to(channel, settings)

    def ended(connection: int) -> None:
        try:
            handover.send(channel, {"released": connection})
        except OSError:
            pass                # the daemon is gone; so will this process be

    def stop(*_):
        # The receive loop's read then ends as when the daemon closes the channel (no
        # exception raised wherever the signal happens to land).
        try:
            channel.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    archive = app.build_archive(settings)     # the daemon brought the index up to date
    servers: dict[str, HandedAssociationServer] = {}
    try:
        ae = dicom_server.build_ae(settings, archive)
        ae.maximum_associations = int(first["share"])
        handlers = dicom_server.event_handlers(archive)
        refused = dicom_server.tls_refusal_recorder(settings, archive)

        for name, address in first["listeners"].items():
            tls_context = tls.server_context(settings, verify_clients=True) if name == "tls" else None
            servers[name] = ae.make_server(
                tuple(address), evt_handlers=handlers, server_class=HandedAssociationServer,
                per_address=settings.max_associations_per_address, tls_context=tls_context,
                on_tls_refused=refused if tls_context is not None else None, on_ended=ended)
        # Its run file (runfiles.py) names it to DSM's stop, which waits for, and if need
        # be kills, every process a run file names: this one has no PID file of its own.
        runfiles.write(settings, role)
        handover.send(channel, {"ready": os.getpid()})
        while True:
            got = handover.receive(channel)
            if got is None:
                break
            message, fd = got
            if fd is None:
                continue
            sock = socket.socket(fileno=fd)
            server = servers.get(message.get("listener"))
            if server is None:
                sock.close()
                ended(int(message["connection"]))
                continue
            server.hand_in(sock, tuple(message["address"]), int(message["connection"]),
                           float(message["opened"]))
    finally:
        for server in servers.values():
            server.server_close()
        archive.close()
        runfiles.remove(settings, role)
    return 0
