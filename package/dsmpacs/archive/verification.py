"""The background verification job: every stored file re-hashed within
``verify_period_days``, at no more than ``verify_mb_per_s``.

It walks the instance table in id order, re-hashing each instance whose last
verification (or, never verified, its reception) is older than the period, and
records the outcome (archive/integrity.py: a mismatch marks it corrupt). The
walk's position is saved in the index (table ``job_lease``), so a restarted
process continues where the last one stopped. Before working, a process takes
the job's lease in that same row: with several nodes over one index, one of
them verifies at a time; a node that dies leaves a lease that simply expires.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from peewee import fn

from dsmpacs.archive.database import IndexUnavailable
from dsmpacs.archive.integrity import Recorder, hash_check
from dsmpacs.archive.models import Instance, JobLease, utcnow

log = logging.getLogger(__name__)

JOB_NAME = "verify"
LEASE_SECONDS = 600
SAVE_EVERY = 30.0           # seconds between progress saves (each also renews the lease)
BATCH = 100                 # rows read from the index at a time
MAX_IDLE = 3600.0           # an idle job looks again at least this often
RETRY_AFTER_ERROR = 60.0


@dataclass
class SliceReport:
    leased: bool = True
    checked: list[int] = field(default_factory=list)        # Instance ids, in order
    corrupt: list[str] = field(default_factory=list)        # SOP Instance UIDs found corrupt
    bytes: int = 0
    pass_finished: bool = False                             # reached the end of the table


def node_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class VerificationJob:
    """One node's handle on the job. ``run_slice`` does a bounded piece of work;
    ``run`` loops until stopped (the DICOM daemon's background thread)."""

    def __init__(self, archive, *, period_days: float, bytes_per_second: float,
                 owner: str | None = None, batch: int = BATCH):
        self.archive = archive
        self.index = archive.index
        self.period = timedelta(days=period_days)
        self.bytes_per_second = bytes_per_second
        self.owner = owner or node_name()
        self.batch = batch

    @classmethod
    def from_settings(cls, archive) -> "VerificationJob":
        s = archive.settings
        return cls(archive, period_days=s.verify_period_days, bytes_per_second=s.verify_mb_per_s * 2**20)

    # --- the lease ---------------------------------------------------------------
    def acquire(self) -> JobLease | None:
        """Take or renew the lease; the job's row when this node holds it, else None."""
        now = utcnow()
        with self.index.write():
            JobLease.insert(name=JOB_NAME).on_conflict_ignore().execute()
            (JobLease.update(owner=self.owner, lease_until=now + timedelta(seconds=LEASE_SECONDS),
                             updated_at=now)
             .where((JobLease.name == JOB_NAME)
                    & ((JobLease.owner == self.owner) | (JobLease.owner == "")
                       | JobLease.lease_until.is_null() | (JobLease.lease_until < now)))
             .execute())
            # Read back rather than trust the row count: MariaDB reports rows changed,
            # and a renewal within the same second changes nothing.
            row = JobLease.get(JobLease.name == JOB_NAME)
        return row if row.owner == self.owner else None

    def _save(self, cursor: int, **extra) -> bool:
        """Save progress and renew the lease; False when the lease was lost meanwhile."""
        now = utcnow()
        with self.index.write():
            changed = (JobLease.update(cursor=cursor, lease_until=now + timedelta(seconds=LEASE_SECONDS),
                                       updated_at=now, **extra)
                       .where((JobLease.name == JOB_NAME) & (JobLease.owner == self.owner)).execute())
            held = changed or JobLease.get(JobLease.name == JOB_NAME).owner == self.owner
        if not held:
            log.warning("verification: lease lost to another node; stopping this slice")
        return bool(held)

    def release(self) -> None:
        try:
            with self.index.write():
                (JobLease.update(owner="", lease_until=None)
                 .where((JobLease.name == JOB_NAME) & (JobLease.owner == self.owner)).execute())
        except IndexUnavailable as exc:
            log.warning("verification: could not release the lease (it will expire): %s", exc)

    # --- the work ------------------------------------------------------------------
    def _due(self, after: int, cutoff: datetime) -> list[Instance]:
        with self.index.read():
            return list(Instance
                        .select(Instance.id, Instance.sop_instance_uid, Instance.path, Instance.size,
                                Instance.sha256, Instance.corrupt)
                        .where((Instance.id > after)
                               & (fn.COALESCE(Instance.verified_at, Instance.received_at)
                                  < Instance.received_at.db_value(cutoff)))
                        .order_by(Instance.id).limit(self.batch))

    def run_slice(self, *, max_instances: int | None = None, max_seconds: float | None = None,
                  stop: threading.Event | None = None) -> SliceReport:
        """Verify due instances from the saved position until the end of the table, a
        limit, or ``stop``; the position is saved as it goes and when the slice ends."""
        lease = self.acquire()
        if lease is None:
            return SliceReport(leased=False)
        report = SliceReport()
        recorder = Recorder(self.index, "verification job", batch=self.batch)
        cursor = lease.cursor
        if cursor == 0:
            self._save(0, cycle_started_at=utcnow())
        cutoff = utcnow() - self.period
        started = last_save = time.monotonic()

        def out_of_budget() -> bool:
            return ((stop is not None and stop.is_set())
                    or (max_instances is not None and len(report.checked) >= max_instances)
                    or (max_seconds is not None and time.monotonic() - started >= max_seconds))

        while not out_of_budget():
            recorder.flush()                 # before the position that covers them is saved
            rows = self._due(cursor, cutoff)
            if not rows:
                report.pass_finished = True
                self._save(0, cycle_finished_at=utcnow())
                if report.checked or cursor:
                    log.info("verification pass finished (%d file(s) in this last slice)",
                             len(report.checked))
                return report
            for row in rows:
                if out_of_budget():
                    break
                check = hash_check(self.archive.storage, row.path, row.size, row.sha256)
                recorder.add(row, check)
                report.checked.append(row.id)
                report.bytes += check.size
                if not check.ok:
                    report.corrupt.append(row.sop_instance_uid)
                cursor = row.id
                if not self._throttle(report.bytes, started, stop, cursor, recorder):
                    return report
                if time.monotonic() - last_save >= SAVE_EVERY:
                    last_save = time.monotonic()
                    recorder.flush()
                    if not self._save(cursor):
                        return report
        recorder.flush()
        self._save(cursor)
        return report

    def _throttle(self, done: int, started: float, stop: threading.Event | None, cursor: int,
                  recorder: Recorder) -> bool:
        """Sleep until ``done`` bytes fit the rate; the lease is renewed during long
        waits. False when the lease was lost."""
        if self.bytes_per_second <= 0:
            return True
        while True:
            ahead = done / self.bytes_per_second - (time.monotonic() - started)
            if ahead <= 0 or (stop is not None and stop.is_set()):
                return True
            pause = min(ahead, SAVE_EVERY)
            if stop is not None:
                stop.wait(pause)
            else:
                time.sleep(pause)
            if ahead > SAVE_EVERY:
                recorder.flush()
                if not self._save(cursor):
                    return False

    def next_due_in(self) -> float:
        """Seconds until the oldest verification falls out of the period."""
        with self.index.read():
            oldest = Instance.select(fn.MIN(fn.COALESCE(Instance.verified_at, Instance.received_at))).scalar()
        if oldest is None:
            # Nothing stored yet: whatever arrives now falls due one period from now.
            return self.period.total_seconds()
        if isinstance(oldest, str):          # SQLite hands an aggregate back as text
            oldest = datetime.fromisoformat(oldest)
        return (oldest + self.period - utcnow()).total_seconds()

    def run(self, stop: threading.Event) -> None:
        """Work in slices until ``stop``; idle until something falls due."""
        log.info("verification job started (every file within %g days, at most %s)",
                 self.period.total_seconds() / 86400,
                 f"{self.bytes_per_second / 2**20:g} MiB/s" if self.bytes_per_second > 0 else "unthrottled")
        try:
            while not stop.is_set():
                try:
                    report = self.run_slice(max_seconds=SAVE_EVERY * 10, stop=stop)
                    if not report.leased:
                        wait = min(LEASE_SECONDS / 4, MAX_IDLE)
                    elif report.pass_finished or not report.checked:
                        wait = min(max(self.next_due_in(), 1.0), MAX_IDLE)
                    else:
                        wait = 0.0
                    if report.corrupt:
                        log.error("verification job: %d corrupt instance(s) found in this slice",
                                  len(report.corrupt))
                except IndexUnavailable as exc:
                    log.warning("verification job: %s; retrying in %d s", exc, RETRY_AFTER_ERROR)
                    wait = RETRY_AFTER_ERROR
                except Exception:
                    log.exception("verification job failed; retrying in %d s", RETRY_AFTER_ERROR)
                    wait = RETRY_AFTER_ERROR
                stop.wait(wait)
        finally:
            self.release()
            log.info("verification job stopped")


def verification_state(index) -> JobLease | None:
    """The job's row (owner, position, last pass), for the administration pages."""
    with index.read():
        return JobLease.get_or_none(JobLease.name == JOB_NAME)


def start_background(archive, stop: threading.Event) -> threading.Thread | None:
    """Start the job on a daemon thread (None when verify_period_days is 0)."""
    if archive.settings.verify_period_days <= 0:
        log.info("background verification is off (verify_period_days = 0)")
        return None
    job = VerificationJob.from_settings(archive)
    thread = threading.Thread(target=job.run, args=(stop,), name="verification", daemon=True)
    thread.start()
    return thread
