"""SQLite: copy the write-ahead log back into the database file from a thread of its own.

By default SQLite checkpoints inside the commit that takes the log past 1,000 pages:
that store then writes the log's pages back into the database file and fsyncs it
before it is answered. On an index of a million instances the pages an instance
touches (the SOP Instance UID index above all, whose keys arrive in random order)
are scattered, so that write-back is larger there and lands on whichever store
crosses the line. Here:

- the DICOM daemon runs a PASSIVE checkpoint every ``INTERVAL`` seconds from this
  thread: it never blocks a writer or a reader, so no store waits for it, and a few
  seconds of log hold several hundred instances whose hot pages (table tails,
  counters, sequential indexes) are written back once instead of once per 1,000
  pages (bench/scale.py, the disk's own counter: 62 KB per instance at 1,000,000
  with this thread, 64 KB with checkpoints in the commit, 55 and 57 KB on an empty
  index; docs/architecture.md "The index as it grows");
- every connection still checkpoints by itself past ``BACKSTOP_PAGES`` (open_database
  sets it), so the log stays bounded when this thread is not running (the CLI, the
  web process alone, a stalled thread).

Durability is unchanged: a commit is durable once its log frames are fsynced
(synchronous=FULL); a checkpoint only moves committed pages into the main file.
"""
from __future__ import annotations

import logging
import sqlite3
import threading

import peewee

log = logging.getLogger(__name__)

INTERVAL = 2.0
BACKSTOP_PAGES = 10_000        # 40 MB of log at 4 KB pages


def start(db: peewee.Database, stop: threading.Event, interval: float = INTERVAL) -> threading.Thread | None:
    """Start the checkpoint thread for an SQLite index (None for MariaDB); it ends when
    ``stop`` is set."""
    if not isinstance(db, peewee.SqliteDatabase) or db.database == ":memory:":
        return None
    path = db.database

    def run() -> None:
        conn = None
        try:
            conn = sqlite3.connect(path, timeout=1.0, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 1000")
            while not stop.wait(interval):
                try:
                    busy, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if busy:
                        log.debug("checkpoint busy: %s of %s log frames copied", done, frames)
                except sqlite3.Error as exc:       # a locked or vanished file: try again later
                    log.warning("index checkpoint failed: %s", exc)
        except sqlite3.Error as exc:
            log.warning("index checkpoint thread cannot open %s: %s", path, exc)
        finally:
            if conn is not None:
                conn.close()

    thread = threading.Thread(target=run, name="index-checkpoint", daemon=True)
    thread.start()
    return thread
