"""Who makes a new instance's fsyncs, and what a failed one leaves (archive/storage.py
``SyncOnWait``, archive/ingest.py step 3).

The storing thread itself fsyncs the published file and then its directory, before it
asks for the index's write lock: no pool thread is woken for an instance. A file the
ingest refuses is removed without being fsynced. A failed fsync is answered as out of
resources and leaves neither a row nor the file. The order against the commit and the
answer, on every path and entry, is tests/test_durability_order.py's.
"""
from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from dsmpacs.archive.ingest import Origin
from dsmpacs.archive.models import Instance
from dsmpacs.archive.results import StoreOutcome
from dsmpacs.archive.storage import Storage
from tests import factories as f

ORIGIN = Origin("dicom", calling_ae="SYNCSCU", peer="127.0.0.1")


class RecordingStorage(Storage):
    """The real storage; each fsync is recorded with the thread that made it, and the
    kind named in ``fail`` raises EIO instead (after closing its descriptor)."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.calls: list[tuple[str, int]] = []
        self.fail: str | None = None

    def _fsync_file(self, fd: int) -> None:
        self.calls.append(("file", threading.get_ident()))
        if self.fail == "file":
            os.close(fd)
            raise OSError(errno.EIO, "Input/output error")
        super()._fsync_file(fd)

    def _fsync_dir(self, directory: Path) -> None:
        self.calls.append(("directory", threading.get_ident()))
        if self.fail == "directory":
            raise OSError(errno.EIO, "Input/output error")
        super()._fsync_dir(directory)


@pytest.fixture
def storage(archive):
    recording = RecordingStorage(archive.storage.root)
    archive.storage = archive.ingest.storage = recording
    return recording


def _store(archive, tmp_path: Path, number: int, **expected):
    ds = f.secondary_capture(size=16, instance_number=number)
    content = f.write(ds, tmp_path / f"sc{number}.dcm").read_bytes()
    with archive.storage.spool() as spool:
        spool.write(content)
        staged = spool.staged(sync=False)
    return ds.SOPInstanceUID, content, archive.ingest.store(staged, ORIGIN, **expected)


def _stored_files(archive) -> list[Path]:
    return [p for p in archive.storage.root.rglob("*.dcm") if ".tmp" not in p.parts]


def test_the_storing_thread_fsyncs_the_file_then_its_directory_and_wakes_no_pool(archive, storage, tmp_path):
    me = threading.get_ident()
    for number in (1, 2, 3):
        uid, content, result = _store(archive, tmp_path, number)
        assert result.outcome is StoreOutcome.STORED, result.message
        with archive.index.read():
            path = Instance.select(Instance.path).where(Instance.sop_instance_uid == uid).scalar()
        assert (archive.storage.root / path).read_bytes() == content
    assert storage.calls == [("file", me), ("directory", me)] * 3
    assert storage._syncer is None, "a pool was made for the fsyncs of new instances"


def test_a_refused_file_is_removed_without_an_fsync(archive, storage, tmp_path):
    _, _, result = _store(archive, tmp_path, 1, expected_sop_instance_uid="1.2.3.4")
    assert result.outcome is StoreOutcome.UID_MISMATCH
    assert storage.calls == []
    assert _stored_files(archive) == []
    assert list(archive.storage.tmp_dir.iterdir()) == []


@pytest.mark.parametrize("failing", ["file", "directory"])
def test_a_failed_fsync_is_out_of_resources_and_leaves_no_row_nor_file(archive, storage, tmp_path, failing):
    storage.fail = failing
    uid, _, result = _store(archive, tmp_path, 1)
    assert result.outcome is StoreOutcome.OUT_OF_RESOURCES
    assert "Input/output error" in result.message
    with archive.index.read():
        assert not Instance.select().where(Instance.sop_instance_uid == uid).exists()
    assert _stored_files(archive) == []
    assert list(archive.storage.tmp_dir.iterdir()) == []
    # The next store, once the disk answers again, is archived.
    storage.fail = None
    _, _, result = _store(archive, tmp_path, 2)
    assert result.outcome is StoreOutcome.STORED, result.message
