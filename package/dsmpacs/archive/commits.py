"""Group commit: the index rows of stores arriving at once share one transaction.

Each store's rows must commit only after its file and directory are fsynced, and
each commit is itself an fsync (SQLite's WAL with ``synchronous=FULL``, InnoDB's
redo log). Done one store at a time, a store holds the index's write lock while
it waits for its own file's fsync, so concurrent associations queue behind each
other's disk waits and four senders together go no faster than one.

Here stores hand their work to whichever of them is committing (leader and
followers, no thread of its own): the first store finding no commit under way
becomes the leader; it takes every store queued so far (itself included) into
one transaction, runs each store's inserts in a savepoint of its own (a batch of
one needs none: the transaction is its savepoint), then waits for every store's
fsyncs (``before_commit``), then commits once. Stores that
arrive meanwhile queue for the next batch, whose leader is one of them. A lone
sender is its own leader, on its own thread, exactly as before. The ingest makes
each store's fsyncs on its own thread before handing its work over
(archive/ingest.py, ``SyncOnWait``), so there ``before_commit`` and ``_sync_early``
find them done and only check; the waits stay for a caller whose fsyncs run
elsewhere.

What each store is told, only once the batch's transaction has ended:

* committed: its rows and its file are durable (the order of
  tests/test_durability_order.py holds for every store of the batch);
* its own inserts failed (``InstanceExists``, ``StudyElsewhere``, a bug): that
  exception, its savepoint rolled back, the others unaffected;
* its fsync failed: that error; the batch is rolled back and the others run
  again in a new transaction (their fsyncs are done by then), so no row commits
  whose file is not on disk;
* the commit failed, or the index is unreachable: ``IndexUnavailable`` for
  every store of the batch, which then removes its file (no orphan);
* a lock wait or deadlock (``TransientConflict``): the batch is retried until
  each store's own deadline, past which that store gets ``IndexUnavailable``.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable

import peewee

from dsmpacs.archive.database import IndexUnavailable, TransientConflict

log = logging.getLogger(__name__)
_DB_ERRORS = (peewee.OperationalError, peewee.InterfaceError)
MAX_BATCH = 64          # stores in one transaction; more wait for the next one
WAIT_SLICE = 0.25       # seconds one attempt waits for the write lock (see _commit)


class RetryLater(Exception):
    """A store's inserts met a row another process created meanwhile: run it again
    in the next transaction, where it finds the row."""


class _Abandon(Exception):
    """Roll the batch back: some store's file did not reach the disk."""


class _Rollback(Exception):
    """Roll a batch of one back: its inserts failed (see ``_alone``)."""

    def __init__(self, retry: bool):
        super().__init__()
        self.retry = retry


class _Job:
    __slots__ = ("work", "before_commit", "deadline", "tries", "error", "done")

    def __init__(self, work: Callable[[], None], before_commit: Callable[[], None] | None,
                 deadline: float):
        self.work, self.before_commit, self.deadline = work, before_commit, deadline
        self.tries = 0
        self.error: BaseException | None = None
        self.done = False


class GroupCommit:
    """Commits the work of concurrent stores together; see the module doc."""

    def __init__(self, write: Callable, savepoint: Callable, *, max_batch: int = MAX_BATCH):
        # write(wait): the index's write-transaction context (Index.write);
        # savepoint(): a nested atomic block of the same connection.
        self._write, self._savepoint, self.max_batch = write, savepoint, max_batch
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._leading = False
        self.batches = 0            # transactions committed, for the logs and the tests
        self.attempts = 0           # transactions begun, committed or not

    def run(self, work: Callable[[], None], before_commit: Callable[[], None] | None,
            deadline: float) -> None:
        """Run ``work`` in a transaction shared with concurrent stores, call
        ``before_commit`` inside it, and return once it committed; raises what the
        store must answer (see the module doc)."""
        job = _Job(work, before_commit, deadline)
        with self._cond:
            self._queue.append(job)
            while not job.done and self._leading:
                self._cond.wait()
            if job.done:
                return self._outcome(job)
            self._leading = True
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self.max_batch))]
        try:
            self._commit(batch)
        finally:
            with self._cond:
                for other in batch:         # nobody may wait forever, even after a bug here
                    if not other.done:
                        other.error = other.error or IndexUnavailable("index commit was interrupted")
                        other.done = True
                self._leading = False
                self._cond.notify_all()
        if not job.done:                    # only when the loop above was cut short
            raise IndexUnavailable("index commit was interrupted")
        return self._outcome(job)

    @staticmethod
    def _outcome(job: _Job) -> None:
        if job.error is not None:
            raise job.error

    # --- the leader's part ------------------------------------------------------
    def _commit(self, batch: list[_Job]) -> None:
        todo = list(batch)
        while todo:
            now = time.monotonic()
            for job in todo:
                if job.tries and now >= job.deadline:
                    self._finish(job, IndexUnavailable("index database busy: no write lock in time"))
            todo = [job for job in todo if not job.done]
            if not todo:
                return
            # Wait for the write lock in short slices up to the deadline, never in one
            # long busy wait: SQLite holds a connection's mutex while its busy handler
            # sleeps, and another thread that happens to finalize one of that
            # connection's statements (garbage collection runs anywhere) blocks on that
            # mutex. If that thread holds the write lock itself (an audit append), both
            # wait until the whole busy timeout has passed and a store fails.
            wait = min(WAIT_SLICE, max(0.001, min(job.deadline for job in todo) - now))
            for job in todo:
                job.tries += 1
                job.error = None
            later: list[_Job] = []
            self.attempts += 1
            try:
                with self._write(wait, on_busy=lambda: self._sync_early(todo)):
                    self._join_late(todo, batch)
                    later = self._transaction(todo)
            except _Rollback as rollback:
                if not rollback.retry:
                    self._finish(todo[0], todo[0].error)
                    return
                continue                    # its rows met another process's: again
            except _Abandon:
                # Those whose fsync failed are answered; the others run again.
                for job in todo:
                    if job.error is not None:
                        self._finish(job, job.error)
                todo = [job for job in todo if not job.done]
                continue
            except TransientConflict as exc:
                log.debug("retrying a batch of %d store(s) after %s", len(todo), exc)
                time.sleep(0.005 * min(max(job.tries for job in todo), 8))
                continue
            except IndexUnavailable as exc:
                for job in todo:
                    self._finish(job, exc)
                return
            self.batches += 1
            if len(todo) > 1:
                log.debug("committed %d stores in one transaction", len(todo) - len(later))
            for job in todo:
                if job not in later:
                    self._finish(job, job.error)
            todo = later

    @staticmethod
    def _sync_early(todo: list[_Job]) -> None:
        """Another connection holds the write lock: wait for this batch's fsyncs now,
        before taking it, so the transaction that follows holds the lock for its
        statements and its commit only. (``_make_durable`` calls ``before_commit``
        again inside it, where a failed fsync is answered; these only wait.)"""
        for job in todo:
            if job.before_commit is not None:
                try:
                    job.before_commit()
                except Exception:
                    pass

    def _join_late(self, todo: list[_Job], batch: list[_Job]) -> None:
        """Stores queued while the leader waited for the write lock join the transaction
        now rather than wait for the next one: the wait is long exactly when another
        process (dicom/receivers.py) or connection is committing, and a batch that
        grows meanwhile holds the lock once for all of them."""
        with self._cond:
            while self._queue and len(todo) < self.max_batch:
                job = self._queue.popleft()
                job.tries += 1
                todo.append(job)
                batch.append(job)

    def _transaction(self, todo: list[_Job]) -> list[_Job]:
        """Inside the write transaction: each job's inserts in its savepoint, then
        every fsync. Returns the jobs to run again in the next transaction."""
        if len(todo) == 1:
            return self._alone(todo[0])
        inserted, later = [], []
        for job in todo:
            try:
                with self._savepoint():
                    job.work()
                inserted.append(job)
            except RetryLater:
                later.append(job)
            except _DB_ERRORS:
                raise                       # the connection or the transaction is gone
            except Exception as exc:        # this store's own outcome (InstanceExists...)
                job.error = exc
        self._make_durable(inserted)
        return later

    def _alone(self, job: _Job) -> list[_Job]:
        """``_transaction`` for a batch of one, as every store of a lone sender is: no
        savepoint, since no other store's rows share the transaction. When the inserts
        fail, the whole transaction is rolled back instead (``_Rollback``). A SAVEPOINT
        and its RELEASE were about 40 µs of the storing thread per instance."""
        try:
            job.work()
        except RetryLater:
            raise _Rollback(retry=True) from None
        except _DB_ERRORS:
            raise
        except Exception as exc:
            job.error = exc
            raise _Rollback(retry=False) from None
        self._make_durable([job])
        return []

    @staticmethod
    def _make_durable(inserted: list[_Job]) -> None:
        """Every inserted store's ``before_commit`` (its fsyncs), still inside the
        transaction; _Abandon, rolling it back, when any of them failed."""
        failed = False
        for job in inserted:
            if job.before_commit is None:
                continue
            try:
                job.before_commit()
            except Exception as exc:
                job.error = exc
                failed = True
        if failed:
            raise _Abandon()

    def _finish(self, job: _Job, error: BaseException | None) -> None:
        with self._cond:
            job.error = error
            job.done = True
