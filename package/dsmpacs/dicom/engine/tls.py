"""DICOM over TLS: the acceptor's handshake off the accept thread, and the
requestor's handshake failures told as such.

Acceptor. pynetdicom's ``AssociationServer.get_request`` wraps each accepted
socket with ``ssl_context.wrap_socket`` on the accept thread, with the
handshake done there and then: one client that connects and sends nothing (or
sends plain DICOM and waits for an answer) blocks the accept loop, and every
other client with it, for as long as it likes. So the listener here is given no
``ssl_context``; ``handshake`` runs on the connection's own thread
(socketserver's per-request thread, ``engine/listener.py``) before pynetdicom
sees the socket, non-blocking against one fixed deadline (``acse_timeout``
from the accept), so trickling handshake bytes cannot extend it. A first byte
that is not a TLS handshake record (a plain A-ASSOCIATE-RQ is 0x01) is refused
without answering; so is anything OpenSSL refuses (TLS below 1.2, a client
certificate that does not chain to trusted.pem, suites outside BCP 195).

Requestor. pynetdicom wraps the socket itself (``tls_args``) and, when the
handshake fails, logs the error and reports only that the connection failed.
``capture_connect_errors`` gives the context a socket class that records the
error on the connecting thread, and ``connect_error(assoc)`` returns
"TLS handshake with HOST:PORT failed: ..." so the caller can say so. There is
no fallback to plaintext anywhere.
"""
from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time

TLS_HANDSHAKE_RECORD = 0x16
A_ASSOCIATE_RQ = 0x01
_ERROR = "_dsmpacs_tls_error"


class HandshakeRefused(Exception):
    """The connection did not become a TLS session; the message says why."""


def _wait(sock, events: int, deadline: float) -> bool:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    poller = select.poll()      # not select(): descriptors above 1024 are normal here
    poller.register(sock, events)
    return bool(poller.poll(min(remaining, 3600.0) * 1000))


def _first_byte(sock: socket.socket, deadline: float, seconds: float) -> int:
    if not _wait(sock, select.POLLIN, deadline):
        raise HandshakeRefused(f"no TLS handshake {seconds:g} s after connecting (acse_timeout)")
    try:
        head = sock.recv(1, socket.MSG_PEEK)
    except OSError as exc:
        raise HandshakeRefused(f"connection failed before the TLS handshake: {exc}") from None
    if not head:
        raise HandshakeRefused("connection closed before the TLS handshake")
    return head[0]


def handshake(sock: socket.socket, context: ssl.SSLContext, deadline: float,
              seconds: float) -> ssl.SSLSocket:
    """The server side of the TLS handshake on an accepted socket, complete by
    ``deadline`` (time.monotonic()); returns the blocking SSLSocket or raises
    HandshakeRefused. The socket is closed on refusal."""
    wrapped: ssl.SSLSocket | None = None
    try:
        first = _first_byte(sock, deadline, seconds)
        if first == A_ASSOCIATE_RQ:
            raise HandshakeRefused("plaintext DICOM (an A-ASSOCIATE-RQ) on the TLS port")
        if first != TLS_HANDSHAKE_RECORD:
            raise HandshakeRefused(f"not a TLS handshake (first byte 0x{first:02X})")
        sock.setblocking(False)
        wrapped = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        while True:
            try:
                wrapped.do_handshake()
                break
            except ssl.SSLWantReadError:
                ready = _wait(wrapped, select.POLLIN, deadline)
            except ssl.SSLWantWriteError:
                ready = _wait(wrapped, select.POLLOUT, deadline)
            except ssl.SSLError as exc:
                raise HandshakeRefused(f"TLS handshake failed: {exc.reason or exc}") from None
            except OSError as exc:
                raise HandshakeRefused(f"connection failed during the TLS handshake: {exc}") from None
            if not ready:
                raise HandshakeRefused(f"TLS handshake not complete {seconds:g} s after "
                                       "connecting (acse_timeout)")
        wrapped.setblocking(True)
        return wrapped
    except BaseException:
        with contextlib.suppress(OSError):
            (wrapped or sock).close()
        raise


def client_certificate(sock) -> dict | None:
    """The verified certificate the TLS client presented, or None (no TLS, or no
    certificate). With CERT_OPTIONAL a presented certificate that does not verify
    fails the handshake, so one that is here was verified."""
    if not isinstance(sock, ssl.SSLSocket):
        return None
    try:
        return sock.getpeercert() or None
    except (ValueError, OSError):
        return None


def is_tls(sock) -> bool:
    return isinstance(sock, ssl.SSLSocket)


class _RecordingSocket(ssl.SSLSocket):
    """An SSLSocket whose connect (TCP connect and handshake) leaves its error on
    the connecting thread, where the caller of pynetdicom's connect finds it."""

    def connect(self, address):
        try:
            super().connect(address)
        except OSError as exc:
            setattr(threading.current_thread(), _ERROR, exc)
            raise


def capture_connect_errors(context: ssl.SSLContext) -> ssl.SSLContext:
    context.sslsocket_class = _RecordingSocket
    return context


def take_connect_error() -> OSError | None:
    """The error the last TLS connect on this thread recorded (cleared)."""
    thread = threading.current_thread()
    error = getattr(thread, _ERROR, None)
    if error is not None:
        delattr(thread, _ERROR)
    return error


def describe_connect_error(host: str, port: int, exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with {host}:{port} failed: {exc.reason or exc}"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"TLS handshake with {host}:{port} failed: no answer (connection_timeout)"
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot connect to {host}:{port}: connection refused"
    return f"TLS handshake with {host}:{port} failed: {exc.strerror or exc}"
