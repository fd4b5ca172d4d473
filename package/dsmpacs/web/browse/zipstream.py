"""A ZIP of stored files streamed as it is written: no temporary file, constant memory.

Members are stored (no compression): the Part 10 files are copied byte for byte,
and most pixel data is compressed already. zipfile writes data descriptors when
the output cannot seek, and ZIP64 records when a member or the archive needs them.
"""
from __future__ import annotations

import re
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator

CHUNK = 1 << 20
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str, fallback: str = "x") -> str:
    """A path component from DICOM text: no separators, no dot-dot, no control characters."""
    cleaned = _UNSAFE.sub("_", text or "").strip("._")[:64]
    return cleaned or fallback


class _Sink:
    """The file zipfile writes to; the generator hands its bytes out as they come."""

    def __init__(self):
        self.parts: list[bytes] = []
        self.position = 0

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def stream_zip(members: Iterable[tuple[str, Path, int]]) -> Iterator[bytes]:
    """Yield a ZIP holding each (name in the archive, file, size) unchanged."""
    sink = _Sink()
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, path, size in members:
            info = zipfile.ZipInfo(name, date_time=datetime.fromtimestamp(path.stat().st_mtime).timetuple()[:6])
            info.compress_type = zipfile.ZIP_STORED
            with open(path, "rb") as source, archive.open(info, mode="w", force_zip64=size >= 2**31) as dest:
                while chunk := source.read(CHUNK):
                    dest.write(chunk)
                    if sink.parts:
                        yield sink.take()
            if sink.parts:
                yield sink.take()          # the member's data descriptor
    yield sink.take()                      # the central directory
