"""A locked index fails a C-STORE in bounded time, with dcmtk storescu against the
archive as a real process, and leaves nothing behind.

Another connection holds the index's write lock (BEGIN EXCLUSIVE on SQLite, LOCK
TABLES on MariaDB) for the whole store. Before the store's lock waits were bounded,
the answer came 0x0000 after the lock was released (65 s in the report) or 0xA701
after about 240 s of retries, long after the sender had given up.
"""
from __future__ import annotations

import contextlib
import sqlite3
import time

import pymysql
import pytest

from dsmpacs.archive.database import sqlite_path
from tests import factories as f
from tests.peers import MARIADB
from tests.test_failures import index_has, published_files, staged_files

DIMSE_TIMEOUT = 5          # the archive then waits at most 2.5 s for the lock


@contextlib.contextmanager
def index_locked(database_url: str):
    """Hold the index's write lock from another connection until the block ends."""
    if database_url.startswith("sqlite:"):
        conn = sqlite3.connect(sqlite_path(database_url), isolation_level=None, timeout=10)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    conn = pymysql.connect(host=MARIADB["host"], port=MARIADB["port"], user=MARIADB["user"],
                           password=MARIADB.get("password", ""),
                           database=database_url.rsplit("/", 1)[1])
    with conn.cursor() as cur:
        cur.execute("LOCK TABLES instance WRITE, study WRITE, series WRITE, patient WRITE")
    try:
        yield
    finally:
        with conn.cursor() as cur:
            cur.execute("UNLOCK TABLES")
        conn.close()


@pytest.mark.slow           # a server start; the store itself is answered in about 3 s
def test_locked_index_gives_a701_within_dimse_timeout_and_no_orphan(server_factory, tmp_path,
                                                                     database_url):
    srv = server_factory(database_url=database_url, dimse_timeout=DIMSE_TIMEOUT)
    assert srv.storescu(f.write(f.secondary_capture(), tmp_path / "a.dcm")).returncode == 0
    before = published_files(srv.storage)
    second = f.write(f.secondary_capture(), tmp_path / "b.dcm")

    with index_locked(database_url):
        started = time.monotonic()
        done = srv.storescu(second, extra=("-d",))
        elapsed = time.monotonic() - started
        # Judged while the lock is still held: nothing may be answered by waiting it out.
        assert "0xa701" in done.stderr.lower(), done.stderr[-3000:]
        assert elapsed < DIMSE_TIMEOUT, f"answered after {elapsed:.1f} s"
        assert published_files(srv.storage) == before, "no orphan file may stay behind"
        assert staged_files(srv.storage) == []

    assert not index_has(srv, f.read_uid(second)), "no half row may stay behind"
    assert srv.logged("index database")
    assert srv.storescu(second).returncode == 0          # fine once the lock is gone
    assert len(published_files(srv.storage)) == len(before) + 1
