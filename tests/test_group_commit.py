"""archive/commits.py: what a store is told, and which of its rows stay, on the real index.

A batch of one (every store of a lone sender) runs without a savepoint; these pin
that its outcomes are those of a store in a larger batch: failed inserts leave no
row, inserts that met another process's row run again, and a failed fsync commits
nothing. Batches of several are exercised by tests/test_durability_order.py.
"""
from __future__ import annotations

import time

import pytest

from dsmpacs.archive.commits import RetryLater
from dsmpacs.archive.index import InstanceExists
from dsmpacs.archive.models import Patient


def _rows(archive, key: str) -> int:
    with archive.index.read():
        return Patient.select().where(Patient.patient_key == key).count()


def _run(archive, work, before_commit=None):
    return archive.index.commits.run(work, before_commit, time.monotonic() + 10)


def test_a_lone_store_whose_inserts_fail_is_told_so_and_leaves_no_row(archive):
    def work():
        Patient.create(patient_key="inserted-then-failed", patient_name="A^B")
        raise InstanceExists("already archived")

    with pytest.raises(InstanceExists):
        _run(archive, work)
    assert _rows(archive, "inserted-then-failed") == 0
    _run(archive, lambda: Patient.create(patient_key="next", patient_name="C^D"))
    assert _rows(archive, "next") == 1


def test_a_lone_store_that_met_another_process_s_row_runs_again_and_commits_once(archive):
    attempts = []

    def work():
        attempts.append(1)
        # Unique: had the first attempt's row stayed, the second would fail.
        Patient.create(patient_key="retried", patient_name="E^F")
        if len(attempts) == 1:
            raise RetryLater("the study was created meanwhile")

    _run(archive, work)
    assert len(attempts) == 2
    assert _rows(archive, "retried") == 1


def test_a_lone_store_whose_fsync_failed_commits_nothing_and_is_told(archive):
    def disk_failed():
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError):
        _run(archive, lambda: Patient.create(patient_key="not-durable", patient_name="G^H"), disk_failed)
    assert _rows(archive, "not-durable") == 0


# --- waiting for SQLite's write lock, which another connection holds --------------
class _Holder:
    """Another connection (as another process's would be) holding SQLite's write lock
    from ``hold()`` until ``release()``, which notes when it let go."""

    def __init__(self, archive):
        import sqlite3

        from dsmpacs.archive.database import sqlite_path

        self.conn = sqlite3.connect(sqlite_path(archive.settings.effective_database_url),
                                    isolation_level=None, check_same_thread=False)
        self.held = False
        self.released_at = 0.0

    def hold(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.held = True

    def release(self) -> None:
        self.conn.execute("COMMIT")
        self.released_at = time.monotonic()
        self.held = False

    def release_after(self, seconds: float):
        import threading

        timer = threading.Timer(seconds, self.release)
        timer.start()
        return timer


@pytest.fixture
def sqlite_archive(tmp_path):
    """An archive on SQLite only: the write lock below is SQLite's (MariaDB locks rows)."""
    from dsmpacs.archive import Archive
    from dsmpacs.settings import Settings

    arc = Archive(Settings.load(data_dir=tmp_path / "data", env={}, overrides={
        "database_url": f"sqlite:///{tmp_path / 'index.sqlite3'}", "min_free_mb": 0}))
    arc.open(upgrade=True)
    yield arc
    arc.close()


def test_a_store_takes_the_write_lock_within_milliseconds_of_its_release(sqlite_archive):
    archive = sqlite_archive
    """SQLite's own busy handler sleeps 1, 2, 5 ... 25 ms between tries, and tried again
    up to 20 ms after the lock was free (index.BEGIN_PAUSE: at most 2 ms here)."""
    holder, lags = _Holder(archive), []
    for n, hold in enumerate((0.06, 0.16) * 3):
        holder.hold()
        timer = holder.release_after(hold)
        _run(archive, lambda n=n: Patient.create(patient_key=f"lag-{n}", patient_name="L^M"))
        lags.append(time.monotonic() - holder.released_at)
        timer.join()
    lags.sort()
    assert lags[len(lags) // 2] < 0.008, f"lags after the release: {lags}"
    assert _rows(archive, "lag-5") == 1


def test_stores_that_queue_while_the_lock_is_held_share_one_transaction(sqlite_archive):
    archive = sqlite_archive
    """The leader waiting for the lock takes those who queued meanwhile into its
    transaction once it has the lock, instead of committing them in a second one."""
    import threading

    holder = _Holder(archive)
    holder.hold()
    before = archive.index.commits.batches
    threads = [threading.Thread(target=_run, args=(archive, lambda k=k: Patient.create(
        patient_key=f"queued-{k}", patient_name="Q^R"))) for k in range(3)]
    threads[0].start()
    time.sleep(0.05)                # the first is the leader, waiting for the lock
    for thread in threads[1:]:
        thread.start()
    time.sleep(0.05)                # the others are queued behind it
    holder.release()
    for thread in threads:
        thread.join(10)
    assert [_rows(archive, f"queued-{k}") for k in range(3)] == [1, 1, 1]
    assert archive.index.commits.batches - before == 1


def test_a_store_waiting_for_the_lock_waits_for_its_fsyncs_first(sqlite_archive):
    archive = sqlite_archive
    """The fsyncs are waited for while the lock is someone else's, not inside the
    transaction; they are still asked for again before the commit (and a failed one
    fails the store, as above)."""
    holder, seen = _Holder(archive), []
    holder.hold()
    timer = holder.release_after(0.2)
    _run(archive, lambda: Patient.create(patient_key="synced-early", patient_name="S^T"),
         lambda: seen.append(holder.held))
    timer.join()
    assert seen == [True, False]         # once while the lock was held, once inside ours
    assert _rows(archive, "synced-early") == 1
