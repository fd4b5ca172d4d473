"""One HTTP request over a raw socket, its body produced lazily and sent only while
the server is not answering: what a careful client does with a large upload
(and what curl does). Lets a test send "600 MB" without holding 600 MB, and see
exactly when the server answered and whether it then closed the connection."""
from __future__ import annotations

import select
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Iterable


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int                   # body bytes the server let us send before it answered
    seconds: float              # from the first byte sent to the end of the response
    closed: bool                # the server closed the connection after answering
    interim: list[int] = field(default_factory=list)    # 1xx statuses seen before the answer


def _parse_head(data: bytes) -> tuple[int, dict[str, str], bytes] | None:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, data[end + 4:]


def request(host: str, port: int, method: str, path: str, headers: dict[str, str],
            body: Iterable[bytes] = (), *, tls: ssl.SSLContext | None = None,
            timeout: float = 60) -> RawResponse:
    sock = socket.create_connection((host, port), timeout=timeout)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname=host)
    sock.setblocking(False)
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    pending = memoryview(head.encode("latin-1"))
    chunks = iter(body)
    received = bytearray()
    sent = 0
    interim: list[int] = []
    started = time.monotonic()
    deadline = started + timeout
    head_sent = False
    sending = True
    parsed = None
    try:
        while parsed is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer within {timeout} s ({sent} body bytes sent)")
            want_write = [sock] if sending else []
            readable, writable, _ = select.select([sock], want_write, [], 0.5)
            if readable:
                try:
                    data = sock.recv(65536)
                except (ssl.SSLWantReadError, BlockingIOError):
                    data = None
                except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError):
                    data = b""
                if data == b"":
                    raise ConnectionError(f"closed without an answer after {sent} body bytes")
                if data:
                    received += data
                    while (got := _parse_head(bytes(received))) is not None and got[0] < 200:
                        interim.append(got[0])
                        del received[:len(received) - len(got[2])]
                    parsed = _parse_head(bytes(received))
                    if parsed:
                        break
            if writable and sending:
                if not pending:
                    block = next(chunks, None)
                    if block is None:
                        sending = False
                        continue
                    pending = memoryview(block)
                try:
                    n = sock.send(pending)
                except (ssl.SSLWantWriteError, BlockingIOError):
                    continue
                except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError):
                    # The server stopped reading (over TLS the close can surface as an
                    # EOF on write): its answer, if it sent one, is there to read.
                    sending = False
                    continue
                if head_sent:
                    sent += n
                pending = pending[n:]
                if not pending:
                    head_sent = True
        status, hdrs, rest = parsed
        body_bytes = bytearray(rest)
        length = int(hdrs.get("content-length", "0"))
        closed = False
        sock.setblocking(True)
        sock.settimeout(max(1.0, deadline - time.monotonic()))
        while len(body_bytes) < length:
            data = sock.recv(65536)
            if not data:
                break
            body_bytes += data
        seconds = time.monotonic() - started
        # Did the server close? Anything but EOF (or a reset) within 5 s says no.
        sock.settimeout(5)
        try:
            closed = sock.recv(1) == b""
        except (ConnectionResetError, ssl.SSLError):
            closed = True
        except TimeoutError:
            closed = False
        return RawResponse(status, hdrs, bytes(body_bytes), sent, seconds, closed, interim)
    finally:
        sock.close()


def zeros(total: int, block: int = 256 * 1024) -> Iterable[bytes]:
    """``total`` bytes of body, one small block at a time."""
    chunk = bytes(block)
    left = total
    while left > 0:
        yield chunk[:min(block, left)]
        left -= block
