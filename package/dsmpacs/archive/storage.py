"""Content store: staged writes, atomic publication, checksums, free-space guard.

Layout under the storage root::

    .tmp/                  staged files; everything here is garbage after a crash
    .quarantine/           conflicting or orphaned copies, kept for an administrator
    YYYY/MM/DD/<32 hex>.dcm published instances, named by the server

A file becomes visible only by ``rename`` from ``.tmp`` after it was fsynced,
and the rename is made durable by an fsync of the directory. Paths are
generated here from a random UUID and never from a UID that came over the wire.

The storage root is created only by ``prepare(create=True)``. While running, a
missing root is an error, never a reason to mkdir: on a NAS it means the
volume or share is gone, and recreating it would fill the system partition.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import logging
import os
import shutil
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator

from dsmpacs.archive.part10 import READ_WHOLE

if TYPE_CHECKING:
    from dsmpacs.archive.part10 import Header

log = logging.getLogger(__name__)

TMP_DIR = ".tmp"
QUARANTINE_DIR = ".quarantine"
_COPY_CHUNK = 1 << 20
WRITEBACK_STEP = 4 << 20    # bytes written before SpoolWriter.flush starts their write-back
SPOOL_BUFFER = 64 << 10     # SpoolWriter's write buffer (see its __init__)
HASH_STEP = 4 << 20         # bytes SpoolWriter gathers before hashing them on the hasher thread


class StorageError(Exception):
    """The store cannot write: no space, root missing or read-only (DIMSE 0xA700)."""


def _load_sync_file_range():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range to disk without waiting (Linux).

    Data arriving from the network is pushed towards the disk while the rest
    still arrives, so the fsync before publication only waits for the tail.
    Where the call does not exist the final fsync simply does all the work.
    """
    if _sync_file_range is not None and length > 0:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


class ReceivedBuffer(bytearray):
    """Bytes read from a peer into a buffer that its reader fills once and never
    writes again (dicom/engine/pdata.py reads each P-DATA-TF into one). Like
    ``bytes``, a view of one may be kept without a copy (``SpoolWriter.write``);
    unlike ``bytes``, the socket can read straight into it."""

    __slots__ = ()


@dataclass(frozen=True)
class StagedFile:
    """A complete Part 10 file in the tmp dir, hashed while it was written.

    It carries its own sync state, so that whatever becomes of it (published,
    published over an older copy, quarantined) waits for its data to reach the
    disk first: ``synced`` is True once fsynced; otherwise ``pending`` is the
    background fsync started by ``Storage.start_sync``, or the ``SyncOnWait`` that
    ``Storage.publish_first`` leaves to the ingest, if any. ``header`` is the
    parsed header when the stager already read it (import), so nobody parses twice;
    ``content`` is the whole file when its spool still held every byte it wrote (up to
    part10.READ_WHOLE), so the ingest parses the header without reading the file back.
    """
    path: Path
    size: int
    sha256: str
    synced: bool = True
    pending: "Future | SyncOnWait | None" = field(default=None, compare=False, repr=False)
    header: Header | None = field(default=None, compare=False, repr=False)
    content: bytes | None = field(default=None, compare=False, repr=False)


_UNCHANGING = (bytes, ReceivedBuffer)


class SpoolWriter:
    """A write-only file in the tmp dir that hashes what passes through it.

    It never raises on write: a failure (ENOSPC, EROFS, a vanished root) is kept
    and reported by ``staged()``, and the partial file is removed at once. The
    DICOM receiver writes through it from a network thread, where an exception
    would abort the association instead of letting us answer 0xA700.
    """

    def __init__(self, tmp_dir: Path, suffix: str = ".part",
                 hasher: Callable[[], ThreadPoolExecutor] | None = None):
        self.name = str(tmp_dir / f"{uuid.uuid4().hex}{suffix}")
        self.error: OSError | None = None
        self._hash = hashlib.sha256()
        self._size = 0
        # A large message is hashed a batch at a time on the hasher thread while this
        # (the DUL) thread goes on receiving: SHA-256 runs at about 1.5 GB/s here, a
        # third of a DSA run's receive time when done inline. One batch in flight at
        # a time keeps the updates in order; small instances never leave this thread.
        self._unhashed: list[bytes] = []
        self._unhashed_size = 0
        self._hashing: Future | None = None
        self._hasher = hasher               # the pool's getter; None: always hash here
        self._written_back = 0      # bytes handed to start_writeback so far
        self._fh: BinaryIO | None = None
        # True once staged() handed the file to its next owner (the ingest consumes it)
        # or it was removed: nothing left here to clean up.
        self.handed_over = False
        try:
            # An explicit buffer size: the default asks isatty() (an ioctl) of every new
            # file, and 64 KB holds a small instance's file meta and dataset for one
            # write() at pynetdicom's flush instead of two.
            self._fh = open(self.name, "xb", buffering=SPOOL_BUFFER)
        except OSError as exc:
            self.error = exc

    @property
    def file(self) -> "SpoolWriter":
        # pynetdicom calls ``spool.file.flush()``; NamedTemporaryFile exposes .file.
        return self

    def write(self, data: bytes) -> int:
        if self.error is None and self._fh is not None:
            try:
                self._fh.write(data)
                # Kept for hashing later. A buffer its owner reuses would change meanwhile,
                # so it is copied; bytes, or a view of bytes or of a ReceivedBuffer
                # (received PDUs, dicom/engine/pdata.py), do not change and are kept.
                kept = data if type(data) is bytes or (
                    type(data) is memoryview and type(data.obj) in _UNCHANGING) else bytes(data)
                self._unhashed.append(kept)
                self._unhashed_size += len(data)
                self._size += len(data)
                if self._unhashed_size >= HASH_STEP and self._hasher is not None:
                    self._hash_behind()
            except OSError as exc:
                self._fail(exc)
        return len(data)

    def flush(self) -> None:
        if self.error is None and self._fh is not None:
            try:
                self._fh.flush()
                # pynetdicom flushes after every PDU (128 KB from dcmtk): one
                # sync_file_range per few MB does the same job, and was a seventh of
                # the DUL thread's time on a DSA run when it ran per PDU.
                if self._size - self._written_back >= WRITEBACK_STEP:
                    start_writeback(self._fh.fileno(), self._written_back, self._size - self._written_back)
                    self._written_back = self._size
            except OSError as exc:
                self._fail(exc)

    def _hash_behind(self) -> None:
        if self._hashing is not None:
            self._hashing.result()          # the previous batch: its bytes come first
        batch, self._unhashed, self._unhashed_size = self._unhashed, [], 0
        self._hashing = self._hasher().submit(_update, self._hash, batch)

    def _digest(self) -> str:
        if self._hashing is not None:
            self._hashing.result()
            self._hashing = None
        _update(self._hash, self._unhashed)
        self._unhashed, self._unhashed_size = [], 0
        return self._hash.hexdigest()

    def _fail(self, exc: OSError) -> None:
        self.error = exc
        self._unhashed, self._unhashed_size = [], 0
        self._discard()

    def _discard(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
            self._fh = None
        try:
            os.unlink(self.name)
        except OSError:
            pass
        self.handed_over = True

    def close(self, *, sync: bool = True) -> None:
        if self._fh is not None:
            try:
                self._fh.flush()
                if sync:
                    os.fsync(self._fh.fileno())
                elif self._size > self._written_back:
                    # The rest of the file is on its way to the disk while the ingest
                    # checks it; its fsync then waits for little more than the flush.
                    start_writeback(self._fh.fileno(), self._written_back, self._size - self._written_back)
                    self._written_back = self._size
                self._fh.close()
            except OSError as exc:
                self._fail(exc)
            self._fh = None

    def abandon(self) -> None:
        """Drop the partial file (failed or cancelled transfer)."""
        self._discard()

    def staged(self, *, sync: bool = True) -> StagedFile:
        """Close and describe the staged file, or raise StorageError. With
        ``sync=False`` the fsync is left to the ingest, and the file's write-back to the
        disk begins now (``start_writeback``), so it overlaps the ingest's checks."""
        self.close(sync=sync)
        if self.error is not None:
            raise StorageError(_describe(self.error)) from self.error
        content = None
        if self._hashing is None and self._size <= READ_WHOLE:
            # Every byte written is still here, unhashed: the file's bytes, for the
            # ingest's header parse (one open, read and close less per small instance).
            content = b"".join(self._unhashed)
            self._unhashed = [content]
        self.handed_over = True
        return StagedFile(Path(self.name), self._size, self._digest(), synced=sync, content=content)

    def __enter__(self) -> "SpoolWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abandon()


class SyncOnWait:
    """The fsyncs of a published file, then of its directory, made by the first
    thread that waits for them (``result``, as a ``Future``'s) on that thread, and
    once: a later call waits for that one and raises what it raised (OSError).

    Not a pool's task: a hand-over to another thread for every instance cost more CPU
    than it saved (docs/architecture.md, "Two hand-overs to other threads"). The
    ingest calls it on its storing thread once the file is checked, while the
    kernel has been writing the data back since the spool closed
    (``SpoolWriter.close``)."""

    def __init__(self, storage: "Storage", path: Path):
        self._storage, self._path = storage, path
        self._lock = threading.Lock()
        self._done = False
        self._error: OSError | None = None

    def result(self) -> None:
        with self._lock:
            if not self._done:
                try:
                    # Opened by its name now: nothing renames a published file before
                    # its fsync (the ingest takes a duplicate back only after it).
                    fd = os.open(self._path, os.O_RDONLY)
                    self._storage._fsync_file(fd)
                    self._storage._fsync_dir(self._path.parent)
                except OSError as exc:
                    self._error = exc
                self._done = True
        if self._error is not None:
            raise self._error


def _update(digest, chunks: list[bytes]) -> None:
    for chunk in chunks:
        digest.update(chunk)            # hashlib lets the GIL go for large updates


def _describe(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the storage filesystem"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "storage is read-only or not writable"
    if exc.errno == errno.ENOENT:
        return "storage root is missing"
    return f"storage error: {exc.strerror or exc}"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_fd(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Linux's O_PATH (opens nothing: not a FIFO, not a device); without it, realpath.
_O_PATH = getattr(os, "O_PATH", None)


def real_path(path: str) -> str:
    """os.path.realpath(path), in three system calls when the file exists: the kernel
    resolves every symbolic link on the way when it opens the file (O_PATH: nothing is
    read) and /proc names what it opened. os.path.realpath walks the path in Python,
    one lstat per component (about 0.1 ms for a stored file, asked on every served
    frame). Anything else (a missing file, no /proc or no O_PATH, a file unlinked
    meanwhile, which /proc names "... (deleted)") falls back to os.path.realpath."""
    if _O_PATH is None:
        return os.path.realpath(path)
    try:
        fd = os.open(path, _O_PATH | os.O_CLOEXEC)
    except OSError:
        return os.path.realpath(path)
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        real = ""
    finally:
        os.close(fd)
    if not real.startswith("/") or real.endswith(" (deleted)"):
        return os.path.realpath(path)
    return real


class Storage:
    def __init__(self, root: Path, min_free_bytes: int = 0):
        self.root = Path(root).absolute()
        self._real_root: str | None = None
        self.tmp_dir = self.root / TMP_DIR
        self.quarantine_dir = self.root / QUARANTINE_DIR
        self.min_free_bytes = min_free_bytes
        self._syncer: ThreadPoolExecutor | None = None
        self._hasher: ThreadPoolExecutor | None = None
        # Several associations may ask for a pool first at once: one pool each, not
        # one per caller (the extra ones' threads would never be shut down).
        self._pools_lock = threading.Lock()

    # --- durability of staged files -------------------------------------------
    # Every fsync goes through these two methods, so a test can observe (or slow) them.
    def _fsync_file(self, fd: int) -> None:
        _fsync_fd(fd)

    def _fsync_dir(self, directory: Path) -> None:
        fsync_dir(directory)

    def start_sync(self, staged: StagedFile) -> StagedFile:
        """Begin the fsync of an unsynced staged file in the background; fsync waits on
        the disk with the GIL released, so the caller can parse the header meanwhile.
        Returns the staged file carrying that pending fsync."""
        if staged.synced or staged.pending is not None:
            return staged
        # Opened here, not in the worker: the file is renamed while the fsync runs.
        try:
            fd = os.open(staged.path, os.O_RDONLY)
        except OSError as exc:
            failed: Future = Future()
            failed.set_exception(exc)
            return replace(staged, pending=failed)
        return replace(staged, pending=self._sync_pool().submit(self._fsync_file, fd))

    def wait_synced(self, staged: StagedFile) -> None:
        """Return once the staged file's data is on disk; StorageError if it cannot be."""
        if staged.synced:
            return
        self.finish_sync(self.start_sync(staged).pending)

    @staticmethod
    def finish_sync(pending: "Future | SyncOnWait | None") -> None:
        """Wait for a file's pending fsyncs (a pool's, or made now by a ``SyncOnWait``);
        raises StorageError if the data did not reach the disk."""
        if pending is None:
            return
        try:
            pending.result()
        except OSError as exc:
            raise StorageError(_describe(exc)) from exc

    def _sync_dir_after(self, staged: StagedFile, directory: Path) -> Future:
        """The directory's fsync, begun only once the file's own fsync is done: the new
        name must never reach the disk before the data it names."""
        file_sync = self.start_sync(staged).pending

        def file_then_directory() -> None:
            if file_sync is not None:
                # Submitted to this pool before this task (FIFO), so it is running or
                # done by now: waiting here cannot starve the pool.
                file_sync.result()
            self._fsync_dir(directory)
        return self._sync_pool().submit(file_then_directory)

    # --- lifecycle -----------------------------------------------------------
    def prepare(self, *, create: bool = True) -> None:
        """Make sure the root and its working directories exist (at start-up only)."""
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        if not self.root.is_dir():
            raise StorageError(f"storage root {self.root} is missing")
        self.tmp_dir.mkdir(exist_ok=True)
        self.quarantine_dir.mkdir(exist_ok=True)

    def clean_tmp(self) -> int:
        """Remove staged files left by a crash. Only safe before the listener starts."""
        removed = 0
        if self.tmp_dir.is_dir():
            for entry in self.tmp_dir.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.warning("removed %d staged file(s) left by an interrupted transfer", removed)
        return removed

    # --- checks --------------------------------------------------------------
    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def check_writable(self, incoming_bytes: int = 0) -> None:
        """Raise StorageError when the store cannot take ``incoming_bytes`` more."""
        if not os.access(self.tmp_dir, os.W_OK):     # one system call when all is well
            if not self.tmp_dir.is_dir():
                raise StorageError(f"storage root {self.root} is missing")
            raise StorageError(f"storage root {self.root} is read-only")
        try:
            free = self.free_bytes()
        except OSError as exc:
            raise StorageError(_describe(exc)) from exc
        if free - incoming_bytes < self.min_free_bytes:
            raise StorageError(f"free space {free // 2**20} MiB is below the reserve of "
                               f"{self.min_free_bytes // 2**20} MiB")

    # --- writing -------------------------------------------------------------
    def spool(self, suffix: str = ".part") -> SpoolWriter:
        return SpoolWriter(self.tmp_dir, suffix, hasher=self._hash_pool)

    def stage_stream(self, head: bytes, body: BinaryIO, length: int | None = None, *,
                     sync: bool = True) -> StagedFile:
        """Write ``head`` then up to ``length`` bytes of ``body`` (all when None). With
        ``sync=False`` the staged file is returned unsynced, for the ingest to fsync."""
        with self.spool() as out:
            out.write(head)
            remaining = length
            while remaining is None or remaining > 0:
                chunk = body.read(_COPY_CHUNK if remaining is None else min(_COPY_CHUNK, remaining))
                if not chunk:
                    break
                out.write(chunk)
                if remaining is not None:
                    remaining -= len(chunk)
            return out.staged(sync=sync)

    def _new_relpath(self, when: datetime) -> str:
        return f"{when:%Y/%m/%d}/{uuid.uuid4().hex}.dcm"

    def publish(self, staged: StagedFile, when: datetime | None = None) -> str:
        """Move a staged file to a new generated path; durable (file, then directory)
        when this returns."""
        relpath, synced = self.publish_pending(staged, when)
        self.finish_sync(synced)
        return relpath

    def publish_pending(self, staged: StagedFile, when: datetime | None = None) -> tuple[str, Future]:
        """Rename a staged file to a new generated path now; the returned future is done
        once the file's fsync and then its directory's fsync are (``finish_sync``). The
        ingest inserts the index rows meanwhile and waits for it before the commit that
        makes the instance exist."""
        staged = self.start_sync(staged)        # the fd is opened before the rename
        when = when or datetime.now(timezone.utc)
        relpath = self._new_relpath(when)
        target = self.root / relpath
        try:
            self._make_dirs(target.parent)
            os.rename(staged.path, target)
        except OSError as exc:
            raise StorageError(_describe(exc)) from exc
        return relpath, self._sync_dir_after(staged, target.parent)

    def publish_first(self, staged: StagedFile, when: datetime | None = None
                      ) -> tuple[StagedFile, str, "Future | SyncOnWait"]:
        """Rename a staged file to a new generated path; its fsync and then its
        directory's are left to the caller (``finish_sync``), which checks the file
        first: the ingest's order. An unsynced file's are made by the thread that
        waits for them (``SyncOnWait``); one whose fsync already began finishes on
        the pool, its directory's after it.
        Renamed before the file's fsync, the new name goes to the disk with the
        file's data in one journal commit on ext4 and XFS, and the directory's fsync
        then finds (almost) nothing left to write; it is still called, so the order
        does not rely on the filesystem. Returns the file at its new path (carrying its
        pending fsyncs), its relative path and those fsyncs. A refused file is unlinked
        by the caller, unsynced; after a crash an unindexed file here is an orphan,
        which start-up recovery quarantines (never an acknowledged instance)."""
        when = when or datetime.now(timezone.utc)
        relpath = self._new_relpath(when)
        target = self.root / relpath
        try:
            self._make_dirs(target.parent)
            os.rename(staged.path, target)
        except OSError as exc:
            raise StorageError(_describe(exc)) from exc
        moved = replace(staged, path=target)
        if staged.synced or staged.pending is not None:
            return moved, relpath, self._sync_dir_after(moved, target.parent)
        both = SyncOnWait(self, target)
        return replace(moved, pending=both), relpath, both

    def _sync_pool(self) -> ThreadPoolExecutor:
        return self._pool("_syncer", 4, "fsync")

    def _hash_pool(self) -> ThreadPoolExecutor:
        """Where spools hash the bytes of large messages (SpoolWriter._hash_behind)."""
        return self._pool("_hasher", 2, "hasher")

    def _pool(self, attribute: str, workers: int, name: str) -> ThreadPoolExecutor:
        """The pool kept in ``attribute``, made on first use (once, under the lock)."""
        pool = getattr(self, attribute)
        if pool is None:
            with self._pools_lock:
                pool = getattr(self, attribute)
                if pool is None:
                    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
                    setattr(self, attribute, pool)
        return pool

    def _make_dirs(self, directory: Path) -> None:
        if directory.is_dir():
            return
        if not self.root.is_dir():
            raise StorageError(f"storage root {self.root} is missing")
        missing = []
        d = directory
        while not d.exists():
            missing.append(d)
            d = d.parent
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:
                pass
            fsync_dir(d.parent)

    def quarantine(self, staged: StagedFile, label: str) -> str:
        """Move a staged file into quarantine, durably (file, then directory); returns
        its path relative to the root."""
        name = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{label}-{uuid.uuid4().hex[:12]}.dcm"
        target = self.quarantine_dir / name
        self.wait_synced(staged)
        try:
            os.rename(staged.path, target)
            self._fsync_dir(self.quarantine_dir)
        except OSError as exc:
            raise StorageError(_describe(exc)) from exc
        return f"{QUARANTINE_DIR}/{name}"

    def discard(self, staged: StagedFile) -> None:
        try:
            os.unlink(staged.path)
        except FileNotFoundError:
            pass

    def remove(self, relpath: str) -> None:
        path = self.path(relpath)
        try:
            os.unlink(path)
            fsync_dir(path.parent)
        except FileNotFoundError:
            pass

    # --- reading -------------------------------------------------------------
    def path(self, relpath: str) -> Path:
        """Absolute path for a stored relpath, every symbolic link resolved; refuses
        anything that leaves the root (by '..', an absolute path or a link)."""
        candidate = real_path(os.path.join(self.root, relpath))
        if not self._inside_root(candidate):
            raise ValueError(f"path {relpath!r} is outside the storage root")
        return Path(candidate)

    def _inside_root(self, real: str) -> bool:
        # The root's own resolution is remembered; should the root have moved since (its
        # link changed), a refusal asks again before it stands.
        for fresh in (False, True):
            if fresh or self._real_root is None:
                self._real_root = os.path.realpath(self.root)
            if real != self._real_root and real.startswith(self._real_root.rstrip("/") + "/"):
                return True
        return False

    def open(self, relpath: str) -> BinaryIO:
        return open(self.path(relpath), "rb")

    def hash_file(self, relpath: str) -> tuple[int, str]:
        h = hashlib.sha256()
        size = 0
        with self.open(relpath) as fh:
            while chunk := fh.read(_COPY_CHUNK):
                h.update(chunk)
                size += len(chunk)
        return size, h.hexdigest()

    def iter_published(self, newest_days: int | None = None) -> Iterator[str]:
        """Relative paths of published files, optionally only the newest day directories."""
        day_dirs = sorted(p for p in self.root.glob("[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]")
                          if p.is_dir())
        if newest_days is not None:
            day_dirs = day_dirs[-newest_days:]
        for day in day_dirs:
            for f in sorted(day.iterdir()):
                if f.suffix == ".dcm" and f.is_file():
                    yield f.relative_to(self.root).as_posix()
