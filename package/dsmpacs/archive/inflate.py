"""Deflated Explicit VR Little Endian read as a bounded stream.

pydicom inflates a deflated dataset whole, in memory (``zlib.decompress`` of
the rest of the file), even to read its header: a 1 MB upload that inflates
to gigabytes takes the process with it. Here the dataset is inflated chunk by
chunk through ``zlib.decompressobj(...).decompress(data, max_length)``, behind
a file-like object that pydicom's ``read_dataset`` and our own walkers can
read, so memory stays at a few chunks whatever the ratio, and inflating more
than the limit (setting ``max_inflated_mb``) raises ``InflateLimitExceeded``.

The limit is process-wide because every reader of a stored file needs it
(ingest, header parsing, rendering) and they share no object; the composition
root sets it once from the settings (``set_limit``), like pydicom's own
process-wide configuration.
"""
from __future__ import annotations

import io
import zlib
from typing import BinaryIO

__all__ = ["InflateError", "InflateLimitExceeded", "InflatingReader", "set_limit", "limit"]

DEFAULT_LIMIT = 1024 * 2**20
_IN_CHUNK = 1 << 16
_OUT_CHUNK = 1 << 20
# pydicom seeks back a little after it looks ahead (a stop tag: 12 bytes; an
# undefined-length value's delimiter search: up to 8 KiB); keep that much behind.
_HISTORY = 1 << 16

_limit = DEFAULT_LIMIT


class InflateError(ValueError):
    """The deflated data is corrupt or truncated."""


class InflateLimitExceeded(InflateError):
    """The dataset inflates to more than ``max_inflated_mb``."""


def set_limit(nbytes: int) -> None:
    global _limit
    _limit = int(nbytes)


def limit() -> int:
    return _limit


class InflatingReader(io.RawIOBase):
    """Read-only, forward-seekable view of the raw-deflate stream starting at
    ``raw``'s position. Positions are offsets in the inflated dataset."""

    def __init__(self, raw: BinaryIO, max_bytes: int | None = None):
        super().__init__()
        self._raw = raw
        self._z = zlib.decompressobj(-zlib.MAX_WBITS)
        self._max = _limit if max_bytes is None else max_bytes
        self._buf = bytearray()     # inflated bytes from offset _base on
        self._base = 0
        self._pos = 0
        self._eof = False

    # --- the io interface pydicom uses --------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence != io.SEEK_SET:
            raise OSError("a deflated stream has no known end to seek from")
        if offset < self._base:
            raise OSError("cannot seek that far back in a deflated stream")
        self._pos = offset
        return offset

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            raise OSError("refusing to inflate a deflated dataset whole")
        self._fill(self._pos + size)
        start = self._pos - self._base
        data = bytes(self._buf[start:start + size])
        self._pos += len(data)
        self._trim()
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    # --- beyond io ------------------------------------------------------------
    def skip(self, count: int) -> bool:
        """Move ``count`` bytes forward; False when the stream ends first."""
        target = self._pos + count
        self._pos = target            # lets _fill drop what is skipped as it goes
        self._fill(target)
        self._pos = min(target, self._base + len(self._buf))
        return self._pos == target

    def at_end(self) -> bool:
        self._fill(self._pos + 1)
        return self._pos >= self._base + len(self._buf)

    def _fill(self, upto: int) -> None:
        """Inflate until the buffer reaches offset ``upto`` or the stream ends,
        dropping what lies before the current position's history."""
        while self._base + len(self._buf) < upto and not self._eof:
            self._trim(keep_from=min(self._pos, upto) - _HISTORY)
            data = self._z.unconsumed_tail
            if not data:
                data = self._raw.read(_IN_CHUNK)
                if not data:
                    if not self._z.eof:
                        raise InflateError("the deflated data is truncated")
                    self._eof = True
                    break
            try:
                out = self._z.decompress(data, _OUT_CHUNK)
            except zlib.error as exc:
                raise InflateError(f"the deflated data is corrupt: {exc}") from exc
            self._buf += out
            if self._base + len(self._buf) > self._max:
                raise InflateLimitExceeded(
                    f"dataset inflates to more than max_inflated_mb ({self._max // 2**20} MiB)")
            if self._z.eof:
                self._eof = True

    def _trim(self, keep_from: int | None = None) -> None:
        keep_from = self._pos - _HISTORY if keep_from is None else keep_from
        drop = min(keep_from - self._base, len(self._buf))
        if drop > _OUT_CHUNK:       # drop in big steps: del of a bytearray head copies
            del self._buf[:drop]
            self._base += drop
