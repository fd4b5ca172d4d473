"""Audit records to a syslog collector: RFC 5424 messages over TLS (RFC 5425).

The spool is the audit trail itself: the records are already durable in the
index, in ``seq`` order, so the exporter only keeps how far it has delivered
(``audit-export.json`` in the data directory, written atomically and fsynced).
While the collector is down nothing advances; when it is back, everything from
that position on is sent, in order. Pruning never deletes records that were not
delivered yet (see ``AuditTrail.prune``).

A record written to the TLS connection just as the collector dies may be lost in
the network buffers: syslog has no acknowledgement. Each message carries the
record's sequence number, so the collector can see such a gap (and `dsmpacs
audit verify` still has every record).
"""
from __future__ import annotations

import json
import logging
import os
import select
import socket
import ssl
import threading
from pathlib import Path

from dsmpacs.archive.audit import AuditTrail
from dsmpacs.archive.models import AuditEvent
from dsmpacs.settings import Settings

log = logging.getLogger(__name__)
ENTERPRISE_ID = "32473"          # RFC 5612 documentation number: no private enterprise number yet
FACILITY_AUTHPRIV = 10
NOTICE, WARNING = 5, 4
BATCH = 200
SOCKET_TIMEOUT = 10.0


def position_file(settings: Settings) -> Path:
    return settings.data_dir / "audit-export.json"


def delivered(settings: Settings) -> int:
    """The last sequence number handed to the collector (0: none)."""
    try:
        return int(json.loads(position_file(settings).read_text("utf-8"))["seq"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _save(settings: Settings, seq: int) -> None:
    path = position_file(settings)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"seq": seq}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _sd_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _ascii_token(text: str, limit: int) -> str:
    token = "".join(c for c in text if 33 <= ord(c) <= 126)[:limit]
    return token or "-"


def format_message(row: dict, hostname: str) -> bytes:
    """One record as an RFC 5424 message: the fields as structured data, the detail as
    the UTF-8 message (with its BOM, as RFC 5424 asks)."""
    severity = NOTICE if row["outcome"] in ("ok", "started") else WARNING
    params = (("seq", row["seq"]), ("event", row["event"]), ("actor", row["actor"]), ("role", row["role"]),
              ("outcome", row["outcome"]), ("address", row["address"]), ("callingAE", row["calling_ae"]),
              ("calledAE", row["called_ae"]), ("patientID", row["patient_id"]),
              ("patientName", row["patient_name"]), ("study", row["study_instance_uid"]),
              ("mac", row["mac"]))
    sd = "".join(f' {k}="{_sd_value(str(v))}"' for k, v in params if v not in ("", None))
    header = (f"<{FACILITY_AUTHPRIV * 8 + severity}>1 {row['at'].strftime('%Y-%m-%dT%H:%M:%SZ')} "
              f"{_ascii_token(hostname, 255)} dsmpacs - {_ascii_token(row['action'], 32)} "
              f"[audit@{ENTERPRISE_ID}{sd}]")
    return header.encode("utf-8") + b" \xef\xbb\xbf" + row["detail"].encode("utf-8")


def frame(message: bytes) -> bytes:
    """RFC 5425 octet counting: MSG-LEN SP SYSLOG-MSG."""
    return str(len(message)).encode("ascii") + b" " + message


def tls_context(settings: Settings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(settings.audit_syslog_ca_file)
                                         if settings.audit_syslog_ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class Exporter:
    """Sends every record after the delivered position, then waits for more."""

    def __init__(self, settings: Settings, trail: AuditTrail, stop: threading.Event | None = None):
        self.settings = settings
        self.trail = trail
        self.stop = stop if stop is not None else threading.Event()
        self.hostname = socket.gethostname()
        self._context = tls_context(settings)
        self.thread: threading.Thread | None = None

    def close(self, timeout: float = SOCKET_TIMEOUT * 2) -> None:
        """Stop and wait for the thread, before whoever owns the index closes it: a
        thread left querying a closed SQLite connection can crash the process."""
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout)

    def _connect(self) -> ssl.SSLSocket:
        host, port = self.settings.audit_syslog_host, self.settings.audit_syslog_port
        raw = socket.create_connection((host, port), timeout=SOCKET_TIMEOUT)
        try:
            return self._context.wrap_socket(raw, server_hostname=host)
        except BaseException:
            raw.close()
            raise

    def _pending(self, after: int) -> list[dict]:
        with self.trail.index.read():
            return list(AuditEvent.select().where(AuditEvent.seq > after)
                        .order_by(AuditEvent.seq).limit(BATCH).dicts())

    @staticmethod
    def _check_open(conn: ssl.SSLSocket) -> None:
        """A collector never sends data: a connection that reads end-of-file is closed.
        Checked before each batch, so records are not written into a connection the
        collector already closed (and lost in its buffers). Readable alone proves
        nothing: TLS 1.3 sends session tickets after the handshake."""
        readable, _, _ = select.select([conn], [], [], 0)
        if not readable:
            return
        conn.settimeout(0)
        try:
            data = conn.recv(1)
        except ssl.SSLWantReadError:
            return                       # only TLS housekeeping records
        finally:
            conn.settimeout(SOCKET_TIMEOUT)
        if not data:
            raise ConnectionResetError("the collector closed the connection")

    def run_once(self, conn: ssl.SSLSocket) -> int:
        """Send what is pending (in batches); returns how many were sent."""
        sent = 0
        while not self.stop.is_set():
            rows = self._pending(delivered(self.settings))
            if not rows:
                return sent
            self._check_open(conn)
            conn.sendall(b"".join(frame(format_message(r, self.hostname)) for r in rows))
            _save(self.settings, rows[-1]["seq"])
            sent += len(rows)
        return sent

    def run(self, poll: float = 1.0) -> None:
        conn, backoff = None, 0.5
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = self._connect()
                    log.info("audit export: connected to %s:%d", self.settings.audit_syslog_host,
                             self.settings.audit_syslog_port)
                    backoff = 0.5
                self.run_once(conn)
                self.stop.wait(poll)
            except (OSError, ssl.SSLError) as exc:
                log.warning("audit export to %s:%d: %s; retrying in %.1f s", self.settings.audit_syslog_host,
                            self.settings.audit_syslog_port, exc, backoff)
                if conn is not None:
                    conn.close()
                conn = None
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            except Exception:
                log.exception("audit export failed; retrying")
                self.stop.wait(backoff)
        if conn is not None:
            conn.close()


def start(settings: Settings, trail: AuditTrail, poll: float = 1.0,
          stop: threading.Event | None = None) -> Exporter | None:
    """Run the exporter in a daemon thread when audit_syslog_host is set, until ``stop``
    (its own event when not given: ``exporter.stop``)."""
    if not settings.audit_syslog_host:
        return None
    exporter = Exporter(settings, trail, stop)
    exporter.thread = threading.Thread(target=exporter.run, args=(poll,), name="audit-syslog", daemon=True)
    exporter.thread.start()
    return exporter
