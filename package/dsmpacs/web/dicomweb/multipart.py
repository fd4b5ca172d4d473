"""multipart/related (RFC 2387) as DICOMweb uses it, both ways, in constant memory.

Writing: parts are streamed from the stored files; when every part's size is
known the total length is computed up front, so the response carries a
Content-Length instead of chunked encoding. Reading (STOW-RS): the body is
scanned chunk by chunk and each part is written to a sink (a spool file) as it
arrives, so an upload is never held in memory.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterable, Iterator, Protocol

CHUNK = 1 << 20
CRLF = b"\r\n"
MAX_HEADER_BYTES = 16 * 1024


def new_boundary() -> str:
    return f"dsmpacs-{uuid.uuid4().hex}"


def content_type(part_type: str, boundary: str) -> str:
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


# --- writing -------------------------------------------------------------------
@dataclass
class Part:
    """One part: its Content-Type and either bytes, a file range, or a generator."""
    media_type: str
    data: bytes | None = None
    path: str | os.PathLike | None = None
    offset: int = 0
    length: int | None = None               # of the file range; None: to the end
    chunks: Callable[[], Iterable[bytes]] | None = None   # produced lazily (conversions)
    headers: dict[str, str] = field(default_factory=dict)

    def size(self) -> int | None:
        if self.data is not None:
            return len(self.data)
        if self.path is not None:
            return self.length if self.length is not None else os.path.getsize(self.path) - self.offset
        return None

    def body(self) -> Iterator[bytes]:
        if self.data is not None:
            yield self.data
        elif self.path is not None:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                remaining = self.length
                while remaining is None or remaining > 0:
                    block = fh.read(CHUNK if remaining is None else min(CHUNK, remaining))
                    if not block:
                        break
                    if remaining is not None:
                        remaining -= len(block)
                    yield block
                if remaining:
                    raise OSError(f"{self.path} ended {remaining} bytes early")
        elif self.chunks is not None:
            yield from self.chunks()


def _head(part: Part, boundary: str, first: bool) -> bytes:
    lines = [f"--{boundary}", f"Content-Type: {part.media_type}"]
    lines += [f"{k}: {v}" for k, v in part.headers.items()]
    size = part.size()
    if size is not None:
        lines.append(f"Content-Length: {size}")
    return (b"" if first else CRLF) + "\r\n".join(lines).encode("ascii") + CRLF + CRLF


def _tail(boundary: str) -> bytes:
    return CRLF + f"--{boundary}--".encode("ascii") + CRLF


def total_length(parts: list[Part], boundary: str) -> int | None:
    """The body's length, or None when some part's size is unknown until produced."""
    total = len(_tail(boundary))
    for i, part in enumerate(parts):
        size = part.size()
        if size is None:
            return None
        total += len(_head(part, boundary, i == 0)) + size
    return total


def stream(parts: Iterable[Part], boundary: str) -> Iterator[bytes]:
    for i, part in enumerate(parts):
        yield _head(part, boundary, i == 0)
        yield from part.body()
    yield _tail(boundary)


# --- reading -------------------------------------------------------------------
class MalformedMultipart(ValueError):
    """The body is not the multipart/related message its Content-Type announces."""


class TooLarge(Exception):
    """The body exceeds the size limit."""


class Sink(Protocol):
    def write(self, data: bytes) -> int: ...


def boundary_of(content_type_value: str) -> str:
    """The boundary parameter of a multipart Content-Type, or MalformedMultipart."""
    from dsmpacs.web.dicomweb.accept import _split

    pieces = [p.strip() for p in _split(content_type_value or "", ";")]
    if not pieces or pieces[0].lower() != "multipart/related":
        raise MalformedMultipart(f"Content-Type must be multipart/related, not {pieces[0][:80]!r}")
    for piece in pieces[1:]:
        name, _, value = piece.partition("=")
        if name.strip().lower() == "boundary":
            value = value.strip().strip('"')
            if 0 < len(value) <= 200:
                return value
    raise MalformedMultipart("multipart/related without a boundary parameter")


def parameter(content_type_value: str, wanted: str) -> str:
    from dsmpacs.web.dicomweb.accept import _split

    for piece in _split(content_type_value or "", ";")[1:]:
        name, _, value = piece.partition("=")
        if name.strip().lower() == wanted:
            return value.strip().strip('"')
    return ""


def _parse_headers(raw: bytes) -> dict[str, str]:
    headers = {}
    for line in raw.decode("latin-1").split("\r\n"):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise MalformedMultipart(f"bad part header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


class _Reader:
    """A buffer over the body stream that counts what it reads."""

    def __init__(self, body: BinaryIO, max_bytes: int | None):
        self.body, self.max_bytes = body, max_bytes
        self.buf = bytearray()
        self.read_total = 0
        self.eof = False

    def fill(self) -> bool:
        if self.eof:
            return False
        block = self.body.read(CHUNK)
        if not block:
            self.eof = True
            return False
        self.read_total += len(block)
        if self.max_bytes is not None and self.read_total > self.max_bytes:
            raise TooLarge(f"request body larger than {self.max_bytes} bytes")
        self.buf += block
        return True


def read_parts(body: BinaryIO, boundary: str, open_sink: Callable[[dict[str, str]], Sink],
               max_bytes: int | None = None) -> int:
    """Split ``body`` into parts; each part's bytes go to the sink ``open_sink(headers)``
    returns. Returns the number of parts. Raises MalformedMultipart or TooLarge (the
    caller discards the sinks it opened)."""
    reader = _Reader(body, max_bytes)
    dash = b"--" + boundary.encode("latin-1")
    delimiter = CRLF + dash
    # The first boundary may open the body directly or follow a preamble.
    while True:
        if reader.buf.startswith(dash):
            pos = 0
            break
        pos = reader.buf.find(delimiter)
        if pos >= 0:
            pos += 2
            break
        if len(reader.buf) > MAX_HEADER_BYTES + len(delimiter) or not reader.fill():
            raise MalformedMultipart("no opening boundary found")
    del reader.buf[:pos + len(dash)]
    count = 0
    while True:
        while len(reader.buf) < 2 and reader.fill():
            pass
        if reader.buf[:2] == b"--":
            return count                        # close delimiter; the epilogue is ignored
        # Transport padding (spaces, tabs) may precede the CRLF ending a boundary line.
        while True:
            end = reader.buf.find(CRLF)
            if end >= 0 or len(reader.buf) > 1024 or not reader.fill():
                break
        if end < 0 or reader.buf[:end].strip(b" \t"):
            raise MalformedMultipart("boundary line not followed by CRLF")
        del reader.buf[:end + 2]
        while (head_end := reader.buf.find(CRLF + CRLF)) < 0 and not reader.buf.startswith(CRLF):
            if len(reader.buf) > MAX_HEADER_BYTES or not reader.fill():
                raise MalformedMultipart("part headers not ended by an empty line")
        if head_end < 0 or reader.buf.startswith(CRLF):
            headers, skip = {}, 2                # a part without headers
        else:
            headers, skip = _parse_headers(bytes(reader.buf[:head_end])), head_end + 4
        del reader.buf[:skip]
        sink = open_sink(headers)
        count += 1
        while True:
            pos = reader.buf.find(delimiter)
            if pos >= 0:
                if pos:
                    sink.write(bytes(reader.buf[:pos]))
                del reader.buf[:pos + len(delimiter)]
                break
            keep = len(delimiter) - 1               # a delimiter may straddle two reads
            if len(reader.buf) > keep:
                sink.write(bytes(reader.buf[:-keep]))
                del reader.buf[:-keep]
            if not reader.fill():
                raise MalformedMultipart("body ended inside a part (no closing boundary)")
