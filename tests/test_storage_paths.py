"""Storage.path: the stored file's real path, never anything outside the root
(archive/storage.py real_path resolves links the fast way; the answers must be
os.path.realpath's)."""
from __future__ import annotations

import os

import pytest

from dsmpacs.archive.storage import Storage, real_path


@pytest.fixture
def layout(tmp_path):
    real_root = tmp_path / "volume1" / "pacs"
    (real_root / "2026" / "12" / "06").mkdir(parents=True)
    (real_root / "2026" / "12" / "06" / "a.dcm").write_bytes(b"x")
    (tmp_path / "outside.dcm").write_bytes(b"secret")
    link_root = tmp_path / "share"
    link_root.symlink_to(real_root)       # the root itself through a link, as on DSM
    return tmp_path, real_root, link_root


def test_a_stored_file_is_its_real_path(layout):
    _tmp, real_root, link_root = layout
    storage = Storage(link_root)
    found = storage.path("2026/12/06/a.dcm")
    assert found == real_root / "2026" / "12" / "06" / "a.dcm"
    assert str(found) == os.path.realpath(link_root / "2026/12/06/a.dcm")


def test_a_missing_file_inside_the_root_is_still_answered(layout):
    _tmp, real_root, link_root = layout
    assert Storage(link_root).path("2026/12/07/b.dcm") == real_root / "2026" / "12" / "07" / "b.dcm"


@pytest.mark.parametrize("relpath", ["../../outside.dcm", "2026/../../../outside.dcm", "/etc/passwd",
                                     "", ".", "2026/.."])
def test_leaving_the_root_is_refused(layout, relpath):
    _tmp, _real, link_root = layout
    with pytest.raises(ValueError, match="outside the storage root"):
        Storage(link_root).path(relpath)


def test_a_link_out_of_the_root_is_refused(layout):
    tmp, real_root, link_root = layout
    (real_root / "2026" / "12" / "06" / "evil.dcm").symlink_to(tmp / "outside.dcm")
    (real_root / "2026" / "12" / "06" / "up").symlink_to(tmp)
    storage = Storage(link_root)
    for relpath in ("2026/12/06/evil.dcm", "2026/12/06/up/outside.dcm"):
        with pytest.raises(ValueError, match="outside the storage root"):
            storage.path(relpath)


def test_a_link_within_the_root_is_followed(layout):
    _tmp, real_root, link_root = layout
    (real_root / "alias").symlink_to(real_root / "2026")
    assert Storage(link_root).path("alias/12/06/a.dcm") == real_root / "2026" / "12" / "06" / "a.dcm"


def test_the_root_moved_since_the_last_answer(layout):
    tmp, real_root, link_root = layout
    storage = Storage(link_root)
    storage.path("2026/12/06/a.dcm")                # the old root is remembered
    moved = tmp / "volume2" / "pacs"
    (moved / "2026").mkdir(parents=True)
    (moved / "2026" / "c.dcm").write_bytes(b"y")
    link_root.unlink()
    link_root.symlink_to(moved)
    assert storage.path("2026/c.dcm") == moved / "2026" / "c.dcm"


def test_real_path_agrees_with_os_path_realpath(layout):
    tmp, real_root, link_root = layout
    (real_root / "dangling").symlink_to(tmp / "nowhere" / "x")
    for path in (link_root / "2026/12/06/a.dcm", link_root / "2026/12/06/none.dcm", real_root / "dangling",
                 link_root / "2026/12/../12/06/a.dcm", tmp / "outside.dcm", link_root):
        assert real_path(str(path)) == os.path.realpath(path)


def test_without_o_path_real_path_is_realpath(layout, monkeypatch):
    from dsmpacs.archive import storage as storage_module

    tmp, _real_root, link_root = layout
    monkeypatch.setattr(storage_module, "_O_PATH", None)
    assert real_path(str(link_root / "2026/12/06/a.dcm")) == os.path.realpath(link_root / "2026/12/06/a.dcm")
    with pytest.raises(ValueError, match="outside the storage root"):
        Storage(link_root).path("../../outside.dcm")


def test_a_spool_starts_write_back_every_few_megabytes_not_every_flush(tmp_path, monkeypatch):
    """pynetdicom flushes the spool after every PDU; write-back is started once per
    WRITEBACK_STEP bytes, over exactly the bytes not yet handed to it, and what it was
    never handed is left to the fsync."""
    from dsmpacs.archive import storage as storage_module

    calls = []
    real = storage_module.start_writeback
    monkeypatch.setattr(storage_module, "start_writeback",
                        lambda fd, offset, length: (calls.append((offset, length)), real(fd, offset, length)))
    storage = Storage(tmp_path / "storage")
    storage.prepare()
    chunk = os.urandom(128 * 1024)
    with storage.spool() as spool:
        for _ in range(80):                     # 10 MiB, one flush per "PDU"
            spool.write(chunk)
            spool.flush()
        staged = spool.staged()
    step = storage_module.WRITEBACK_STEP
    assert calls == [(0, step), (step, step)]
    assert staged.size == 80 * len(chunk) and staged.path.stat().st_size == staged.size


@pytest.mark.parametrize("total", [100, 4 * 2**20 - 1, 13 * 2**20 + 7])
def test_a_spool_s_hash_is_the_file_s_when_large_messages_are_hashed_behind(tmp_path, monkeypatch, total):
    """Past HASH_STEP the spool hashes its bytes a batch at a time on the hasher thread,
    in order; the digest is the SHA-256 of exactly the file written, also when the
    bytes came as views of a buffer that is reused (as a receiver's may be)."""
    import hashlib

    from dsmpacs.archive import storage as storage_module

    batches = []
    storage = Storage(tmp_path / "storage")
    storage.prepare()
    real = storage._hash_pool
    monkeypatch.setattr(storage, "_hash_pool", lambda: batches.append(1) or real())
    data = os.urandom(total)
    buffer = bytearray(128 * 1024)
    with storage.spool() as spool:
        for start in range(0, total, len(buffer)):
            piece = data[start:start + len(buffer)]
            buffer[:len(piece)] = piece
            spool.write(memoryview(buffer)[:len(piece)])
            spool.flush()
        buffer[:] = bytes(len(buffer))                          # the receiver reuses its buffer
        staged = spool.staged()
    assert staged.path.read_bytes() == data
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    assert len(batches) == total // storage_module.HASH_STEP      # small ones never leave the thread


@pytest.mark.parametrize("kind", [bytes, "received"])
def test_a_spool_keeps_views_of_unchanging_buffers_for_hashing_without_copying(tmp_path, kind):
    """A received PDU's values are read-only views of the one ReceivedBuffer it was
    read into (dicom/engine/pdata.py), which nobody writes again; bytes cannot change
    at all. The spool keeps views of either for hashing rather than a copy (a view of
    a reusable bytearray is copied: the test above); the digest is the file's."""
    import hashlib

    from dsmpacs.archive.storage import ReceivedBuffer

    storage = Storage(tmp_path / "storage")
    storage.prepare()
    pdu = os.urandom(64 * 1024)
    if kind == "received":
        pdu = ReceivedBuffer(pdu)
    views = [memoryview(pdu).toreadonly()[5:30000], memoryview(pdu)[30005:]]
    with storage.spool() as spool:
        for view in views:
            spool.write(view)
        assert [id(kept) for kept in spool._unhashed] == [id(view) for view in views]
        spool.write(memoryview(bytearray(b"reused")))
        assert type(spool._unhashed[-1]) is bytes, "a view of a plain bytearray is copied"
        staged = spool.staged()
    written = b"".join(bytes(view) for view in views) + b"reused"
    assert staged.path.read_bytes() == written
    assert staged.sha256 == hashlib.sha256(written).hexdigest()


@pytest.mark.parametrize("getter", ["_sync_pool", "_hash_pool"])
def test_associations_asking_for_a_pool_at_once_share_one(tmp_path, monkeypatch, getter):
    """The pools are made on first use, and the first use comes from several
    associations at once: each must get the same pool (a second one's threads
    would never be shut down). Making a pool is slowed so that every caller
    looks before any has finished making one."""
    import threading
    import time

    from dsmpacs.archive import storage as storage_module

    real = storage_module.ThreadPoolExecutor
    made = []

    def slow_pool(*args, **kwargs):
        time.sleep(0.05)
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(storage_module, "ThreadPoolExecutor", slow_pool)
    storage = Storage(tmp_path / "storage")
    start = threading.Barrier(6)
    got = []

    def ask():
        start.wait()
        got.append(getattr(storage, getter)())

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    try:
        assert len(got) == 6 and len(made) == 1 and all(pool is made[0] for pool in got)
    finally:
        for pool in made:
            pool.shutdown()


def test_a_small_spool_hands_its_bytes_on_and_a_large_one_does_not(tmp_path):
    """Up to part10.READ_WHOLE the staged file carries the bytes its spool wrote, so the
    ingest parses the header without opening the file again; past it, nothing is kept.
    Either way the spool is handed over, and its file and digest are the bytes written."""
    import hashlib

    from dsmpacs.archive.part10 import READ_WHOLE

    storage = Storage(tmp_path / "storage")
    storage.prepare()
    for size, kept in ((READ_WHOLE, True), (READ_WHOLE + 1, False)):
        data = os.urandom(size)
        with storage.spool() as spool:
            spool.write(memoryview(data)[:1000])
            spool.write(data[1000:])
            assert not spool.handed_over
            staged = spool.staged()
        assert spool.handed_over
        assert staged.path.read_bytes() == data and staged.sha256 == hashlib.sha256(data).hexdigest()
        assert staged.content == (data if kept else None)


def test_an_abandoned_spool_is_gone_and_counts_as_handed_over(tmp_path):
    storage = Storage(tmp_path / "storage")
    storage.prepare()
    spool = storage.spool()
    spool.write(b"partial")
    spool.abandon()
    assert spool.handed_over and list(storage.tmp_dir.iterdir()) == []
