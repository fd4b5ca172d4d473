"""The integrity state in the index and the background verification job, in process,
against SQLite and the real MariaDB: resumable slices, the lease, clearing the mark
after a restore, and the schema migration that adds it all."""
from __future__ import annotations

import time
from datetime import timedelta

import pytest
from playhouse.migrate import MySQLMigrator, SqliteMigrator, migrate

from dsmpacs.archive import database
from dsmpacs.archive.ingest import Origin
from dsmpacs.archive.integrity import corrupt_instances
from dsmpacs.archive.models import Instance, JobLease, SchemaVersion, utcnow
from dsmpacs.archive.verification import JOB_NAME, VerificationJob
from tests import factories as f

# Everything received before "now" is due: the job re-hashes at once.
TINY_PERIOD_DAYS = 1e-9


def job(archive, owner: str) -> VerificationJob:
    return VerificationJob(archive, period_days=TINY_PERIOD_DAYS, bytes_per_second=0, owner=owner, batch=2)


def flip_last_byte(path) -> None:
    with open(path, "r+b") as fh:
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 0xFF]))


@pytest.fixture
def stored(archive, tmp_path) -> list[Instance]:
    """Five instances, as index rows in id order."""
    study = "1.2.826.0.1.3680043.10.77.1"
    for n in range(5):
        path = f.write(f.secondary_capture(size=16, study_uid=study, instance_number=n), tmp_path / f"{n}.dcm")
        assert archive.ingest.import_file(path, Origin("import")).archived
    return list(archive.index.iter_instances())


def corrupt_uids(archive) -> set[str]:
    return {c.sop_instance_uid for c in corrupt_instances(archive.index)}


def test_a_restarted_job_continues_from_its_saved_position(archive, stored):
    first = job(archive, "node-a")
    report = first.run_slice(max_instances=2)
    assert report.checked == [stored[0].id, stored[1].id] and not report.pass_finished
    flip_last_byte(archive.storage.path(stored[3].path))
    first.release()                          # the process stops

    # A new process (another owner) picks up the saved position: the first two,
    # though due again under this period, are not re-read in this pass.
    again = job(archive, "node-b").run_slice()
    assert again.checked == [r.id for r in stored[2:]]
    assert again.pass_finished and again.corrupt == [stored[3].sop_instance_uid]
    assert corrupt_uids(archive) == {stored[3].sop_instance_uid}
    with archive.index.read():
        state = JobLease.get(JobLease.name == JOB_NAME)
        verified = {r.id: r.verified_at for r in Instance.select()}
    assert state.cursor == 0 and state.cycle_finished_at is not None     # next pass starts over
    assert all(verified.values())


def test_the_lease_keeps_a_second_node_out_until_released_or_expired(archive, stored):
    holder, other = job(archive, "node-a"), job(archive, "node-b")
    assert holder.acquire() is not None
    assert other.run_slice().leased is False
    holder.release()
    assert other.run_slice(max_instances=1).checked == [stored[0].id]
    # node-b dies holding the lease; once it has expired, node-a takes over.
    assert holder.acquire() is None
    with archive.index.write():
        JobLease.update(lease_until=utcnow() - timedelta(seconds=1)).where(JobLease.name == JOB_NAME).execute()
    assert holder.run_slice(max_instances=1).checked == [stored[1].id]


def test_a_restored_file_clears_the_mark(archive, stored):
    path = archive.storage.path(stored[1].path)
    original = path.read_bytes()
    flip_last_byte(path)
    job(archive, "node-a").run_slice()
    assert corrupt_uids(archive) == {stored[1].sop_instance_uid}
    [instance] = [i for i in archive.index.iter_instances() if i.id == stored[1].id]
    assert archive.refusal(instance) is not None and "corrupt" in archive.refusal(instance)

    path.write_bytes(original)               # the administrator restores it from a backup
    job(archive, "node-a").run_slice()
    assert corrupt_uids(archive) == set()


def test_size_check_on_read_marks_a_truncated_file(archive, stored):
    path = archive.storage.path(stored[2].path)
    path.write_bytes(path.read_bytes()[:-10])
    [instance] = [i for i in archive.index.iter_instances() if i.id == stored[2].id]
    reason = archive.refusal(instance)
    assert reason and "bytes" in reason
    assert corrupt_uids(archive) == {stored[2].sop_instance_uid}
    assert archive.refusal(stored[0]) is None


def test_nothing_due_is_not_reread(archive, stored):
    """With a period of a day, files received just now are not due."""
    daily = VerificationJob(archive, period_days=1, bytes_per_second=0, owner="node-a")
    report = daily.run_slice()
    assert report.checked == [] and report.pass_finished
    assert 0 < daily.next_due_in() <= 86400


def test_throttle_bounds_the_reading_rate(archive, stored):
    """At 20 KiB/s, five files of about 1 KiB take about a quarter of a second at least."""
    total = sum(r.size for r in stored)
    slow = VerificationJob(archive, period_days=TINY_PERIOD_DAYS, bytes_per_second=20 * 1024, owner="n")
    started = time.monotonic()
    report = slow.run_slice()
    assert report.bytes == total
    assert time.monotonic() - started >= total / (20 * 1024) * 0.95


def test_upgrade_from_version_1_adds_the_integrity_state(archive, stored):
    """Take the columns and table of version 2 away, stamp version 1, upgrade."""
    db = archive.db
    migrator = MySQLMigrator(db) if database.is_mysql(db) else SqliteMigrator(db)
    with database.session(db):
        db.execute_sql(f"DROP INDEX {'instance_corrupt ON instance' if database.is_mysql(db) else 'instance_corrupt'}")
        migrate(*(migrator.drop_column("instance", c) for c in ("corrupt", "corrupt_reason", "verified_at")))
        db.drop_tables([JobLease])
        SchemaVersion.delete().execute()
        SchemaVersion.create(version=1)
    assert database.current_version(db) == 1
    assert database.upgrade(db) == (1, database.LATEST_VERSION)
    database.check(db)
    # Old rows are intact and not corrupt; the job and the marks work on them.
    assert [r.sop_instance_uid for r in archive.index.iter_instances()] == [r.sop_instance_uid for r in stored]
    flip_last_byte(archive.storage.path(stored[0].path))
    assert job(archive, "node-a").run_slice().corrupt == [stored[0].sop_instance_uid]
