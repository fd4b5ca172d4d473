"""Staging an uploaded Part 10 file while it arrives (STOW-RS parts).

The upload's preamble and file meta are the sender's; the archive keeps its own
meta and the sender's dataset bytes unchanged, the same staging contract as
C-STORE (see archive/ingest.py). So the head of the upload is held back until
its meta group is complete, our meta is written in its place from the values
it announces, and every later byte goes straight to the spool file: the part is
written once and hashed once, instead of being spooled and then copied.

A part whose head is not a standard Part 10 meta (no ``DICM``, no Media Storage
UIDs, an implicit VR meta) is written as it came and ``staged()`` reports it as
``needs_restage``: the caller then lets the ingest rebuild it (one extra copy,
for uploads that break PS3.10 only).
"""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from dsmpacs.archive.part10 import LONG_VRS, InvalidDataset, file_meta_bytes, read_meta_group
from dsmpacs.archive.storage import SpoolWriter, StagedFile

_PREAMBLE = 128
_MAGIC = b"DICM"
# A file meta group is a few hundred bytes; a head larger than this is not one.
MAX_META_BYTES = 64 * 1024


@dataclass(frozen=True)
class Announced:
    """What an upload's own file meta says it holds."""
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str


class Part10Stager:
    """A write-only sink for one uploaded Part 10 file; see the module docstring."""

    def __init__(self, spool: SpoolWriter):
        self.spool = spool
        self.announced: Announced | None = None
        self._head: bytearray | None = bytearray()    # None once the head was settled
        self.needs_restage = False

    @property
    def name(self) -> str:
        return self.spool.name

    @property
    def error(self):
        return self.spool.error

    def write(self, data: bytes) -> int:
        if self._head is None:
            return self.spool.write(data)
        self._head += data
        end = self._meta_end()
        if end is not None:
            self._settle(end)
        return len(data)

    def _meta_end(self) -> int | None:
        """Offset where the dataset starts, or None while more bytes are needed.
        -1: the head is not a standard meta (written as it came)."""
        head = self._head
        if len(head) < _PREAMBLE + len(_MAGIC):
            return -1 if len(head) > MAX_META_BYTES else None
        if head[_PREAMBLE:_PREAMBLE + 4] != _MAGIC:
            return -1
        pos = _PREAMBLE + 4
        while True:
            if pos > MAX_META_BYTES:
                return -1
            if len(head) < pos + 8:
                return None
            group = struct.unpack_from("<H", head, pos)[0]
            if group != 0x0002:
                return pos
            vr = bytes(head[pos + 4:pos + 6])
            if not (vr.isalpha() and vr.isupper()):
                return -1                           # implicit VR meta: not standard
            if vr in LONG_VRS:
                if len(head) < pos + 12:
                    return None
                pos += 12 + struct.unpack_from("<L", head, pos + 8)[0]
            else:
                pos += 8 + struct.unpack_from("<H", head, pos + 6)[0]

    def _settle(self, end: int) -> None:
        head, self._head = bytes(self._head), None
        if end > 0:
            try:
                # Up to the first dataset tag, so the reader stops there.
                meta = read_meta_group(io.BytesIO(head[_PREAMBLE + 4:end + 8]))
            except InvalidDataset:
                meta = {}
            uids = (meta.get("MediaStorageSOPClassUID", ""), meta.get("MediaStorageSOPInstanceUID", ""),
                    meta.get("TransferSyntaxUID", ""))
            if all(uids):
                self.announced = Announced(*uids)
                self.spool.write(file_meta_bytes(*uids))
                self.spool.write(head[end:])
                return
        self.needs_restage = True
        self.spool.write(head)

    def close(self, *, sync: bool = True) -> None:
        if self._head is not None:          # the whole upload was shorter than a meta
            self._settle(-1)
        self.spool.close(sync=sync)

    def abandon(self) -> None:
        self.spool.abandon()

    def staged(self) -> StagedFile:
        """The staged file, unsynced (the ingest fsyncs it); StorageError if writing failed."""
        self.close(sync=False)
        return self.spool.staged(sync=False)
