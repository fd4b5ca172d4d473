"""What keeps the index flat as it grows (archive/checkpoint.py, Index.add_batch) and the
query's first page (Search.search), on SQLite and MariaDB."""
from __future__ import annotations

import os
import threading
import time
import uuid

from dsmpacs.archive import checkpoint
from dsmpacs.archive.attributes import Level, extract
from dsmpacs.archive.index import StoredFile
from dsmpacs.archive.models import Instance, Patient, Series, Study
from dsmpacs.archive.query import Query, Search
from tests import factories as f


def _items(count: int, studies: int = 3) -> list:
    out = []
    headers = [f.secondary_capture(size=8, patient=f.Patient(f"ZHANG^WEI{i}", f"P{i:03d}"),
                                   accession=f"A{i}") for i in range(studies)]
    for n in range(count):
        ds = headers[n % studies]
        ds.SOPInstanceUID = f"2.25.{uuid.uuid4().int}"
        ds.InstanceNumber = n
        out.append((extract(ds), StoredFile(f"2026/12/06/{uuid.uuid4().hex}.dcm", 100, "0" * 64, 10,
                                            "1.2.840.10008.1.2.1")))
    return out


def _rows(archive) -> dict:
    def table(model, skip=("id", "created_at", "updated_at", "received_at", "patient", "study", "series")):
        return sorted(tuple(sorted((k, v) for k, v in row.items() if k not in skip))
                      for row in model.select().dicts())
    with archive.index.read():
        return {m.__name__: table(m) for m in (Patient, Study, Series, Instance)}


def test_add_batch_writes_what_add_instance_writes(archive, settings, tmp_path):
    from dsmpacs.archive import Archive

    items = _items(30)
    archive.index.add_batch(items, origin="bench")
    other_url = (f"sqlite:///{tmp_path / 'other.sqlite3'}" if settings.effective_database_url.startswith("sqlite")
                 else None)
    if other_url is None:       # MariaDB: the same database, emptied, then one by one
        with archive.index.write():
            for model in (Instance, Series, Study, Patient):
                model.delete().execute()
        batch_rows = None
    else:
        batch_rows = _rows(archive)
        other = Archive(settings.__class__.load(data_dir=tmp_path / "other", env={},
                                                overrides={"database_url": other_url, "min_free_mb": 0}))
        other.open(upgrade=True)
        archive.close()
        archive = other
    for extracted, stored in items:
        archive.index.add_instance(extracted, stored, origin="bench")
    one_by_one = _rows(archive)
    assert len(one_by_one["Instance"]) == 30 and len(one_by_one["Study"]) == 3
    if batch_rows is not None:
        assert batch_rows == one_by_one
        archive.close()


def test_first_page_is_small_and_the_rows_are_the_same(archive):
    archive.index.add_batch(_items(12, studies=12), origin="bench")
    search = Search(archive.index)
    query = Query(Level.STUDY, {"PatientName": "ZHANG*"}, ["PatientID", "StudyInstanceUID"])
    default = list(search.search(query))
    assert len(default) == 12
    assert list(search.search(query, batch=5, first=2)) == default
    assert list(search.search(query, batch=500, first=500)) == default
    limited = Query(Level.STUDY, {"PatientName": "ZHANG*"}, ["PatientID", "StudyInstanceUID"], limit=7, offset=3)
    assert list(search.search(limited, batch=4, first=1)) == default[3:10]


def test_background_checkpoint_moves_the_log_into_the_database(archive):
    stop = threading.Event()
    if not archive.settings.effective_database_url.startswith("sqlite"):
        assert checkpoint.start(archive.db, stop) is None        # MariaDB flushes its own pages
        return
    path = archive.db.database
    # No commit checkpoints below the backstop: the new pages live only in the log.
    with archive.index.read():
        assert archive.db.execute_sql("PRAGMA wal_autocheckpoint").fetchone()[0] == checkpoint.BACKSTOP_PAGES
    size_before = os.path.getsize(path)
    archive.index.add_batch(_items(400, studies=20), origin="bench")
    assert os.path.getsize(path) == size_before
    thread = checkpoint.start(archive.db, stop, interval=0.05)
    deadline = time.monotonic() + 20
    while os.path.getsize(path) <= size_before and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(timeout=5)
    assert os.path.getsize(path) > size_before, "the log was never written back"
    assert not thread.is_alive()
    assert len(_rows(archive)["Instance"]) == 400
