"""Audit export to a syslog collector over TLS (RFC 5424 messages, RFC 5425 framing):
a real TLS listener on loopback, stopped while records are written and started
again, receives every record once, in order."""
from __future__ import annotations

import dataclasses
import queue
import re
import shutil
import socket
import ssl
import subprocess
import threading

import pytest

from dsmpacs import syslog_export
from dsmpacs.archive.audit import AuditAction, AuditTrail
from tests.peers import require, wait_until


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    require(shutil.which("openssl") is not None, "openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "collector.pem", folder / "collector.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


class Collector:
    """A syslog-over-TLS listener: reads octet-counted frames into a queue."""

    def __init__(self, cert, key, port: int = 0):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen()
        self.port = self.listener.getsockname()[1]
        self.messages: "queue.Queue[bytes]" = queue.Queue()
        self.connections: list[ssl.SSLSocket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
                conn = self.context.wrap_socket(raw, server_side=True)
            except (OSError, ssl.SSLError):
                return
            self.connections.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn) -> None:
        buffer = b""
        while True:
            try:
                data = conn.recv(65536)
            except (OSError, ssl.SSLError):
                return
            if not data:
                return
            buffer += data
            while b" " in buffer:
                length, rest = buffer.split(b" ", 1)
                if len(rest) < int(length):
                    break
                self.messages.put(rest[:int(length)])
                buffer = rest[int(length):]

    def take(self, count: int) -> list[bytes]:
        got: list[bytes] = []
        wait_until(lambda: self._drain(got) >= count, 60, f"{count} syslog messages")
        return got

    def _drain(self, got: list[bytes]) -> int:
        while not self.messages.empty():
            got.append(self.messages.get())
        return len(got)

    def stop(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)     # wakes the accepting thread, frees the port
        except OSError:
            pass
        self.listener.close()
        for conn in self.connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)      # like a collector process going away
            except OSError:
                pass
            conn.close()


SEQ = re.compile(rb'seq="(\d+)"')


def test_records_reach_the_collector_in_order_across_an_outage(settings, archive, certificate):
    cert, key = certificate
    collector = Collector(cert, key)
    port = collector.port
    exporting = dataclasses.replace(settings, audit_syslog_host="127.0.0.1", audit_syslog_port=port,
                                    audit_syslog_ca_file=cert)
    trail = AuditTrail.of(archive)
    exporter = syslog_export.start(exporting, trail, poll=0.1)
    try:
        for i in range(3):
            trail.record("rad1", AuditAction.SEARCH, role="radiologist", patient_id=f"PAT{i}",
                         detail=f"before {i}", address="10.0.0.5")
        first = collector.take(3)
        wait_until(lambda: syslog_export.delivered(exporting) == 3, 30, "the delivered position saved")
        collector.stop()
        for i in range(3):
            trail.record("rad1", AuditAction.VIEW, detail=f"during {i} \"quoted\" ]", study_instance_uid="1.2.3")
        # nothing is delivered while the collector is down
        assert syslog_export.delivered(exporting) == 3
        collector = Collector(cert, key, port)
        later = collector.take(3)
        trail.record("rad1", AuditAction.LOGOUT, detail="after")
        later += collector.take(1)
    finally:
        exporter.close()
        assert not exporter.thread.is_alive()
        collector.stop()
    messages = first + later
    assert [int(SEQ.search(m).group(1)) for m in messages] == [1, 2, 3, 4, 5, 6, 7]
    text = messages[0].decode("utf-8")
    # <authpriv.notice>1 timestamp host app procid msgid [sd] BOM detail
    assert re.match(r'<85>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \S+ dsmpacs - search \[audit@32473 seq="1" '
                    r'event="Query" actor="rad1" role="radiologist" outcome="ok" address="10.0.0.5" '
                    r'patientID="PAT0" mac="[0-9a-f]{64}"\] \ufeffbefore 0$', text), text
    assert 'outcome="ok"' in messages[4].decode() and messages[4].decode().endswith('during 1 "quoted" ]')
    assert b'study="1.2.3"' in messages[4]


def test_pruning_keeps_records_the_collector_has_not_received(settings, archive, monkeypatch):
    from datetime import timedelta

    import dsmpacs.archive.audit as audit_module
    from dsmpacs.archive.models import utcnow

    trail = AuditTrail.of(archive)
    then = utcnow() - timedelta(days=40)
    monkeypatch.setattr(audit_module, "utcnow", lambda: then)
    for i in range(4):
        trail.record("rad1", AuditAction.SEARCH, detail=str(i))
    monkeypatch.undo()
    assert trail.prune(30, keep_after=2) == 2
    assert trail.verify().ok
    assert [e.seq for e in reversed(trail.recent())] == [3, 4, 5]
