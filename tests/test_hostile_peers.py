"""Hostile peers against the archive as a real process, over raw loopback sockets.

Slow, junk and greedy peers must cost bounded time, memory and disk, and must not
keep a legitimate modality (dcmtk storescu) out. Peers use distinct loopback
addresses (127.0.0.x) where the per-address cap must not be what saves us.
"""
from __future__ import annotations

import select
import socket
import struct
import threading
import time

import pytest

from tests import factories as f
from tests.hostile import (
    A_ABORT,
    HTTP_GET,
    STORAGE,
    TLS_CLIENT_HELLO,
    UNKNOWN_PDU,
    VERIFICATION,
    associate,
    associate_rq,
    c_store_rq,
    closed_by_server,
    connect,
    context_results,
    memory_kb,
    open_fds_under,
    pdata,
    tree_size,
)
from tests.peers import wait_until

A_ASSOCIATE_AC = 0x02
A_ABORT_TYPE = 0x07
JUNK = [UNKNOWN_PDU] * 7 + [HTTP_GET] * 7 + [TLS_CLIENT_HELLO] * 6


def dicom_pid(srv) -> int:
    return wait_until(lambda: srv.child_pid("dicom"), what="the DICOM process's run file")


def spool_gone(srv, pid: int) -> bool:
    tmp = srv.storage / ".tmp"
    return tree_size(tmp) == 0 and not list(tmp.glob("*")) and not open_fds_under(pid, tmp)


def aborted_and_cleaned_up(srv, pid: int, sock: socket.socket, logged: str) -> None:
    """The server answered A-ABORT and closed, said ``logged`` in its log, left no spool
    file (closed and removed), and still serves an echo."""
    closed, got = closed_by_server(sock, timeout=10)
    sock.close()
    assert closed and got[:1] == bytes([A_ABORT_TYPE]), got
    assert srv.logged(logged)
    wait_until(lambda: spool_gone(srv, pid), timeout=10, what="no spool file left, none open")
    assert srv.echoscu().returncode == 0


def established_storage(srv, source: str = "127.0.0.1") -> tuple[socket.socket, int]:
    sock, answer = associate(srv.port, source, STORAGE)
    assert answer is not None and answer[0] == A_ASSOCIATE_AC, answer
    assert context_results(answer[1]) == {1: 0}
    return sock, 1


class Trickler(threading.Thread):
    """Sends an A-ASSOCIATE-RQ one byte per second on each socket, and notes when the
    server ends each connection. Bounded by ``limit`` seconds."""

    def __init__(self, sockets: list[socket.socket], limit: float):
        super().__init__(daemon=True)
        self.sockets = sockets
        self.limit = limit
        self.rq = associate_rq()
        self.closed_after: dict[int, float] = {}
        self.received: dict[int, bytes] = {}
        self.start_time = time.monotonic()

    def run(self) -> None:
        sent, last_send = 0, 0.0
        while len(self.closed_after) < len(self.sockets) and time.monotonic() - self.start_time < self.limit:
            now = time.monotonic()
            if now - last_send >= 1.0 and sent < len(self.rq):
                for i, sock in enumerate(self.sockets):
                    if i not in self.closed_after:
                        try:
                            sock.sendall(self.rq[sent:sent + 1])
                        except OSError:
                            self.closed_after[i] = now - self.start_time
                sent, last_send = sent + 1, now
            open_ones = [s for i, s in enumerate(self.sockets) if i not in self.closed_after]
            ready, _, _ = select.select(open_ones, [], [], 0.2)
            for sock in ready:
                i = self.sockets.index(sock)
                try:
                    chunk = sock.recv(4096)
                except OSError:
                    chunk = b""
                self.received[i] = self.received.get(i, b"") + chunk
                if not chunk:
                    self.closed_after[i] = time.monotonic() - self.start_time


def accepted(port: int, source: str = "127.0.0.1") -> socket.socket | None:
    """The socket of an association accepted from ``source``; None when it was refused
    or closed (the socket is closed then)."""
    sock, answer = associate(port, source)
    if answer is not None and answer[0] == A_ASSOCIATE_AC:
        return sock
    sock.close()
    return None


@pytest.mark.slow
def test_trickling_and_junk_peers_do_not_keep_a_modality_out(server_factory, tmp_path):
    acse = 3.0
    srv = server_factory(only="dicom", max_associations=16, acse_timeout=acse)
    pid = dicom_pid(srv)
    before = memory_kb(pid)
    path = f.write(f.secondary_capture(), tmp_path / "legit.dcm")

    trickling = [connect(srv.port, f"127.0.0.{10 + i}") for i in range(20)]
    trickler = Trickler(trickling, limit=acse + 30)
    trickler.start()
    junk = [connect(srv.port, f"127.0.0.{40 + i}") for i in range(len(JUNK))]
    for sock, payload in zip(junk, JUNK):
        sock.sendall(payload)
    started = trickler.start_time

    # The modality retries, as modalities do; each try is a fresh storescu.
    stored_after, tries = None, 0
    while stored_after is None and time.monotonic() - started < acse + 30:
        tries += 1
        if srv.storescu(path).returncode == 0:
            stored_after = time.monotonic() - started
    junk_closed = [closed_by_server(sock, timeout=5) for sock in junk]
    trickler.join(timeout=acse + 35)
    tmp = srv.storage / ".tmp"
    after = memory_kb(pid)
    print(f"\nstorescu stored {stored_after} s after 20 trickling + 20 junk peers connected "
          f"(acse_timeout {acse} s, {tries} tries); trickling peers cut after "
          f"{min(trickler.closed_after.values(), default=None)}-"
          f"{max(trickler.closed_after.values(), default=None)} s; DICOM process VmRSS "
          f"{before['VmRSS']}->{after['VmRSS']} kB, VmHWM {before['VmHWM']}->{after['VmHWM']} kB; "
          f".tmp {tree_size(tmp)} bytes")

    assert stored_after is not None, "storescu never got in"
    assert stored_after < acse + 15
    assert all(closed for closed, _ in junk_closed), "junk peers were left connected"
    assert all(got.startswith(A_ABORT[:1]) for _, got in junk_closed), junk_closed
    assert len(trickler.closed_after) == len(trickling), "trickling peers were left connected"
    assert max(trickler.closed_after.values()) < acse + 15
    assert after["VmHWM"] - before["VmRSS"] < 150_000
    wait_until(lambda: spool_gone(srv, pid), timeout=10, what=".tmp empty")
    assert srv.logged("closing the connection from 127.0.0.1") and srv.logged("(acse_timeout)")
    assert srv.logged("not DICOM from 127.0.0.4") and srv.logged("TLS handshake") and srv.logged("HTTP request")
    for sock in trickling + junk:
        sock.close()


def test_junk_is_aborted_and_closed_at_once(server_factory):
    """Not at the association deadline (60 s here): at once."""
    srv = server_factory(only="dicom", acse_timeout=60)
    for payload in (UNKNOWN_PDU, HTTP_GET, TLS_CLIENT_HELLO):
        sock = connect(srv.port)
        sock.sendall(payload)
        closed, got = closed_by_server(sock, timeout=10)
        sock.close()
        assert closed, f"the server kept a peer that sent {payload[:8]!r} connected"
        assert got[:1] == bytes([A_ABORT_TYPE]), got
    assert srv.logged("not DICOM from 127.0.0.1") and srv.logged("TLS handshake") and srv.logged("HTTP request")
    assert srv.echoscu().returncode == 0


def test_per_address_cap_refuses_at_accept(server_factory):
    srv = server_factory(only="dicom", max_associations_per_address=3, max_associations=16)
    held = []
    for _ in range(3):
        sock, answer = associate(srv.port, "127.0.0.1")
        assert answer is not None and answer[0] == A_ASSOCIATE_AC, answer
        held.append(sock)
    over, answer = associate(srv.port, "127.0.0.1")
    assert answer is None, "a fourth association from one address was accepted"
    over.close()
    other, answer = associate(srv.port, "127.0.0.2")
    assert answer is not None and answer[0] == A_ASSOCIATE_AC, "another address was refused"
    assert srv.logged("refusing a connection from 127.0.0.1")
    # A slot given back is reused: the count follows associations that end.
    held.pop().sendall(A_ABORT)

    held.append(wait_until(lambda: accepted(srv.port), timeout=10, what="a freed slot"))
    for sock in held + [other]:
        sock.close()


def test_a_peer_that_connects_and_closes_frees_its_slot_at_once(server_factory):
    """A port probe or a health check (connect, close, not a byte sent) and a peer that
    drops an established association without a release give their slot back at once,
    not after acse_timeout (60 s here): one slot per address, taken again and again."""
    srv = server_factory(only="dicom", max_associations_per_address=1, acse_timeout=60)
    started = time.monotonic()
    for _ in range(3):
        connect(srv.port, "127.0.0.1").close()
        wait_until(lambda: accepted(srv.port), timeout=10, what="the slot the probe held").close()
    assert time.monotonic() - started < 30
    assert srv.echoscu().returncode == 0


def test_endless_dimse_message_is_aborted_and_its_spool_removed(server_factory):
    srv = server_factory(only="dicom", max_dimse_message_mb=1)
    pid = dicom_pid(srv)
    sock, cx = established_storage(srv)
    sock.sendall(pdata(cx, 0x03, c_store_rq("1.2.826.0.1.3680043.8.498.1")))
    fragment, sent, answer = b"\0" * 65536, 0, b""
    while sent < 64 * 2**20:         # bounded: 64 MiB at most, the limit is 1 MiB
        try:
            sock.sendall(pdata(cx, 0x00, fragment))      # never the last fragment
        except OSError:
            break
        sent += len(fragment)
        if select.select([sock], [], [], 0)[0]:
            break
    closed, answer = closed_by_server(sock, timeout=10)
    sock.close()
    assert answer[:1] == bytes([A_ABORT_TYPE]), f"no A-ABORT after {sent} bytes: {answer!r}"
    assert closed
    assert sent < 32 * 2**20
    assert srv.logged("max_dimse_message_mb")
    wait_until(lambda: spool_gone(srv, pid), timeout=10, what="the spool file removed")
    assert srv.echoscu().returncode == 0


def test_abort_mid_dataset_removes_the_spool_at_once(server_factory):
    srv = server_factory(only="dicom")
    pid = dicom_pid(srv)
    tmp = srv.storage / ".tmp"
    sock, cx = established_storage(srv)
    sock.sendall(pdata(cx, 0x03, c_store_rq("1.2.826.0.1.3680043.8.498.2")))
    for _ in range(16):
        sock.sendall(pdata(cx, 0x00, b"\0" * 65536))
    wait_until(lambda: tree_size(tmp) >= 2**20 and open_fds_under(pid, tmp), timeout=10,
               what="the dataset spooled to .tmp")
    sock.sendall(A_ABORT)
    sock.close()
    wait_until(lambda: spool_gone(srv, pid), timeout=10, what="the spool file removed and closed")
    assert srv.echoscu().returncode == 0


def test_a_pdv_item_longer_than_its_pdu_is_aborted_and_its_spool_removed(server_factory):
    """engine/pdata.py reads the PDV list of every P-DATA-TF: an item that claims more
    bytes than its PDU holds is an invalid PDU (Evt19), mid-dataset too: A-ABORT, a log
    line, the partial dataset removed, and the daemon goes on serving."""
    srv = server_factory(only="dicom")
    pid = dicom_pid(srv)
    tmp = srv.storage / ".tmp"
    sock, cx = established_storage(srv)
    sock.sendall(pdata(cx, 0x03, c_store_rq("1.2.826.0.1.3680043.8.498.5")))
    sock.sendall(pdata(cx, 0x00, b"\0" * 4096))
    wait_until(lambda: open_fds_under(pid, tmp), timeout=10, what="the dataset spooled to .tmp")
    good = pdata(cx, 0x00, b"\0" * 4096)
    item_length = struct.unpack(">L", good[6:10])[0]
    sock.sendall(good[:6] + struct.pack(">L", item_length + 8) + good[10:])
    aborted_and_cleaned_up(srv, pid, sock, logged="Unable to decode the received PDU data")


def test_store_on_a_refused_context_leaves_no_spool(server_factory):
    """pynetdicom opens the spool file before it finds the context was refused."""
    srv = server_factory(only="dicom")
    pid = dicom_pid(srv)
    contexts = VERIFICATION + [("1.2.840.10008.5.1.4.1.1.7", ("1.2.3.4.5.6.7.8",))]
    sock, answer = associate(srv.port, "127.0.0.1", contexts)
    assert answer is not None and answer[0] == A_ASSOCIATE_AC
    assert context_results(answer[1]) == {1: 0, 3: 4}
    sock.sendall(pdata(3, 0x03, c_store_rq("1.2.826.0.1.3680043.8.498.3")))
    sock.sendall(pdata(3, 0x00, b"\0" * 4096))
    aborted_and_cleaned_up(srv, pid, sock, logged="presentation context 3, which was not accepted")


@pytest.mark.slow
def test_stalled_pdu_after_establishment_is_cut(server_factory):
    """A peer that starts a PDU and stops mid-way is cut after network_timeout."""
    srv = server_factory(only="dicom", network_timeout=3)
    sock, cx = established_storage(srv)
    whole = pdata(cx, 0x03, c_store_rq("1.2.826.0.1.3680043.8.498.4"))
    sock.sendall(whole[:10])
    closed, got = closed_by_server(sock, timeout=20)
    sock.close()
    assert closed and got[:1] == bytes([A_ABORT_TYPE]), got
    assert srv.logged("(network_timeout)")

