"""Raw-socket DICOM peers that misbehave: PDUs built byte by byte, sent as a hostile
host would, on loopback only. pynetdicom's PDU classes encode the association
request so the bytes are the standard's, not ours."""
from __future__ import annotations

import select
import socket
import struct
import time
from pathlib import Path

from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import SecondaryCaptureImageStorage, Verification

EXPLICIT_LE = "1.2.840.10008.1.2.1"
A_ABORT = b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00"
HTTP_GET = b"GET / HTTP/1.1\r\nHost: pacs\r\n\r\n"
# The first bytes of a TLS 1.2 ClientHello record (type 0x16, version 3.1).
TLS_CLIENT_HELLO = bytes.fromhex("160301007c0100007803035f") + b"\x00" * 40
UNKNOWN_PDU = b"\x08\x00\x00\x00\x00\x04abcd"     # 10 bytes, PDU type 0x08


Contexts = list[tuple[str, tuple[str, ...]]]
VERIFICATION: Contexts = [(Verification, (EXPLICIT_LE,))]
STORAGE: Contexts = [(SecondaryCaptureImageStorage, (EXPLICIT_LE,))]


def associate_rq(contexts: Contexts = VERIFICATION, called: str = "DSMPACS",
                 calling: str = "HOSTILE") -> bytes:
    """An A-ASSOCIATE-RQ proposing ``contexts`` with ids 1, 3, 5..."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    proposed = []
    for index, (abstract, syntaxes) in enumerate(contexts):
        context = build_context(abstract, list(syntaxes))
        context.context_id = 2 * index + 1
        proposed.append(context)
    primitive.presentation_context_definition_list = proposed
    length = MaximumLengthNotification()
    length.maximum_length_received = 65536
    primitive.user_information = [length]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()


def connect(port: int, source: str = "127.0.0.1", timeout: float = 10) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def read_pdu(sock: socket.socket) -> tuple[int, bytes] | None:
    """One PDU (type, body), or None when the server closed the connection."""
    head = _read_exactly(sock, 6)
    if len(head) < 6:
        return None
    pdu_type, _, length = struct.unpack(">BBL", head)
    body = _read_exactly(sock, length)
    return (pdu_type, body) if len(body) == length else None


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except ConnectionResetError:
            return buf
        if not chunk:
            return buf
        buf += chunk
    return buf


def associate(port: int, source: str = "127.0.0.1",
              contexts: Contexts = VERIFICATION) -> tuple[socket.socket, tuple[int, bytes] | None]:
    """Send an A-ASSOCIATE-RQ; returns the socket and the answer (None: closed)."""
    sock = connect(port, source)
    try:
        sock.sendall(associate_rq(contexts))
    except OSError:             # refused so fast that the request met a reset
        return sock, None
    return sock, read_pdu(sock)


def context_results(ac_body: bytes) -> dict[int, int]:
    """Presentation context id -> result (0 accepted) from an A-ASSOCIATE-AC body."""
    results = {}
    pos = 68                        # the fixed fields after the 6-byte header
    while pos + 4 <= len(ac_body):
        item_type, length = ac_body[pos], struct.unpack(">H", ac_body[pos + 2:pos + 4])[0]
        if item_type == 0x21:
            results[ac_body[pos + 4]] = ac_body[pos + 6]
        pos += 4 + length
    return results


def pdata(context_id: int, control: int, payload: bytes) -> bytes:
    """A P-DATA-TF PDU with one presentation data value item."""
    item = struct.pack(">LBB", len(payload) + 2, context_id, control) + payload
    return struct.pack(">BBL", 0x04, 0, len(item)) + item


def _element(group: int, element: int, value: bytes) -> bytes:
    return struct.pack("<HHL", group, element, len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode()
    return raw + b"\x00" if len(raw) % 2 else raw


def c_store_rq(sop_instance_uid: str, sop_class_uid: str = SecondaryCaptureImageStorage) -> bytes:
    """A C-STORE-RQ command set announcing a dataset, Implicit VR Little Endian."""
    body = b"".join([
        _element(0x0000, 0x0002, _uid(sop_class_uid)),
        _element(0x0000, 0x0100, struct.pack("<H", 0x0001)),
        _element(0x0000, 0x0110, struct.pack("<H", 1)),
        _element(0x0000, 0x0700, struct.pack("<H", 0)),
        _element(0x0000, 0x0800, struct.pack("<H", 0x0000)),
        _element(0x0000, 0x1000, _uid(sop_instance_uid)),
    ])
    return _element(0x0000, 0x0000, struct.pack("<L", len(body))) + body


def closed_by_server(sock: socket.socket, timeout: float) -> tuple[bool, bytes]:
    """Wait (bounded) for the server to end the connection; returns (closed, bytes read)."""
    got = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([sock], [], [], max(0.0, min(0.2, end - time.monotonic())))
        if not ready:
            continue
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, OSError):
            return True, got
        if not chunk:
            return True, got
        got += chunk
    return False, got


def with_children(pid: int) -> list[int]:
    """``pid`` and its living children: the DICOM daemon and its receiving processes
    (dicom/receivers.py), which serve some of its connections."""
    pids = [pid]
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            pids += [int(child) for child in children.read_text().split()]
        except OSError:
            continue
    return pids


def open_fds_under(pid: int, directory: Path) -> list[str]:
    """The files under ``directory`` that process ``pid`` or its children hold open."""
    found = []
    prefix = str(directory)
    for process in with_children(pid):
        try:
            fds = list(Path(f"/proc/{process}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = str(fd.readlink())
            except OSError:
                continue
            if target.startswith(prefix):
                found.append(target)
    return found


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process and its children together, in kB."""
    values = {"VmRSS": 0, "VmHWM": 0}
    for process in with_children(pid):
        try:
            status = Path(f"/proc/{process}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            key, _, rest = line.partition(":")
            if key in values:
                values[key] += int(rest.split()[0])
    return values


def tree_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) if directory.exists() else 0
