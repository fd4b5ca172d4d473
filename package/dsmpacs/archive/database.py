"""Opening the index database and keeping its schema version.

A fresh database gets the current schema from ``models.py`` and is stamped
with the latest version. An existing one is brought forward by the deltas in
``archive/migrations``. An index stamped with a version newer than this code
is refused, so an older package can never write to a schema it does not know.
"""
from __future__ import annotations

import logging
import math
import shutil
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, unquote, urlsplit

import peewee
from playhouse.pool import PooledMySQLDatabase, PooledSqliteDatabase

from dsmpacs.archive import checkpoint, migrations
from dsmpacs.archive.models import MODELS, SchemaVersion, database_proxy

log = logging.getLogger(__name__)

LATEST_VERSION = migrations.LATEST_VERSION
_MYSQL_TABLE_SETTINGS = ["ENGINE=InnoDB", "DEFAULT CHARSET=utf8mb4", "COLLATE=utf8mb4_bin"]


class IndexProblem(Exception):
    """Base for index problems the CLI reports without a traceback."""


class IndexTooNew(IndexProblem):
    pass


class IndexOutdated(IndexProblem):
    pass


class IndexUnavailable(IndexProblem):
    """The database cannot be reached (MariaDB down, file unreadable)."""


class TransientConflict(IndexUnavailable):
    """A deadlock or lock wait timeout: the transaction may simply be retried."""


# MariaDB: 1213 deadlock, 1205 lock wait timeout. SQLite: "database is locked".
_TRANSIENT_CODES = {1205, 1213}


def is_transient(exc: BaseException) -> bool:
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int) and args[0] in _TRANSIENT_CODES:
        return True
    return "database is locked" in str(exc)


def sqlite_path(url: str) -> str:
    """``sqlite:///relative`` or ``sqlite:////absolute``."""
    return url[len("sqlite:///"):] if url.startswith("sqlite:///") else url[len("sqlite:"):]


# Longest one statement waits for a lock held by another connection, unless the
# caller says otherwise (Settings.effective_index_timeout for the archive).
DEFAULT_LOCK_TIMEOUT = 30.0


def open_database(url: str, *, max_connections: int = 64,
                  lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> peewee.Database:
    """A pooled peewee database for the URL, not yet connected. Every connection waits
    at most ``lock_timeout`` seconds for a lock (SQLite busy timeout, MariaDB row and
    metadata lock waits) before its statement fails as a transient conflict."""
    if url.startswith("sqlite:"):
        path = sqlite_path(url)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # synchronous=FULL: in WAL mode NORMAL may lose the last commits on power
        # loss, and a lost commit is a lost acknowledged instance.
        return PooledSqliteDatabase(path, max_connections=max_connections, stale_timeout=600,
                                    check_same_thread=False, timeout=lock_timeout, pragmas={
                                        "journal_mode": "wal", "synchronous": "full",
                                        "foreign_keys": 1,
                                        "busy_timeout": int(lock_timeout * 1000),
                                        "cache_size": -32000,
                                        # The DICOM daemon checkpoints from a thread of
                                        # its own (archive/checkpoint.py); this bounds the
                                        # log when it does not run.
                                        "wal_autocheckpoint": checkpoint.BACKSTOP_PAGES})
    parts = urlsplit(url)
    if parts.scheme not in ("mysql", "mariadb"):
        raise ValueError(f"unsupported database URL scheme {parts.scheme!r}")
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return PooledMySQLDatabase(
        parts.path.lstrip("/"), host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
        user=unquote(parts.username or "root"), password=unquote(parts.password or ""),
        charset="utf8mb4", max_connections=max_connections, stale_timeout=300,
        connect_timeout=float(options.get("connect_timeout", 5)),
        read_timeout=float(options.get("read_timeout", 30)),
        write_timeout=float(options.get("write_timeout", 30)),
        # REPEATABLE READ takes gap locks for SELECT ... FOR UPDATE on a study that
        # does not exist yet, and two stores creating the same study then deadlock.
        # Under READ COMMITTED the unique keys settle such races instead. The lock
        # waits (rows; tables and metadata, which default to a year) are bounded.
        init_command="SET SESSION tx_isolation = 'READ-COMMITTED', "
                     + _mysql_lock_timeouts(lock_timeout),
        autoconnect=True)


def _mysql_lock_timeouts(seconds: float) -> str:
    whole = max(1, math.ceil(seconds))      # both variables take whole seconds, at least 1
    return f"innodb_lock_wait_timeout = {whole}, lock_wait_timeout = {whole}"


@contextmanager
def lock_timeout(db: peewee.Database, seconds: float, default: float) -> Iterator[None]:
    """Wait at most ``seconds`` for locks on this thread's connection meanwhile (the
    rest of a store's time budget on a retry), then restore ``default``."""
    def apply(value: float) -> None:
        if is_mysql(db):
            db.execute_sql("SET SESSION " + _mysql_lock_timeouts(value))
        else:
            set_busy_timeout(db, value)
    apply(seconds)
    try:
        yield
    finally:
        try:
            apply(default)
        except (peewee.OperationalError, peewee.InterfaceError) as exc:
            # The transaction is settled by now; a broken connection is the pool's problem.
            log.warning("could not restore the index lock timeout: %s", exc)


def set_busy_timeout(db: peewee.Database, seconds: float) -> None:
    """How long this thread's SQLite connection waits for a lock (at least 1 ms); 0: it
    does not wait at all (the caller tries again itself)."""
    db.execute_sql(f"PRAGMA busy_timeout = {max(1, int(seconds * 1000)) if seconds else 0}")


def is_mysql(db: peewee.Database) -> bool:
    return isinstance(db, peewee.MySQLDatabase)


@contextmanager
def session(db: peewee.Database) -> Iterator[peewee.Database]:
    """Use this thread's connection, opening (and afterwards returning) one if needed."""
    opened = db.is_closed()
    if opened:
        try:
            db.connect()
        except peewee.OperationalError as exc:
            raise IndexUnavailable(f"index database unreachable: {exc}") from exc
    try:
        yield db
    finally:
        if opened and not db.in_transaction():
            db.close()


def bind(db: peewee.Database) -> None:
    database_proxy.initialize(db)


def current_version(db: peewee.Database) -> int:
    """0 for an empty database."""
    with session(db):
        if not db.table_exists(SchemaVersion._meta.table_name):
            return 0
        row = SchemaVersion.select(peewee.fn.MAX(SchemaVersion.version)).scalar()
        return int(row or 0)


def check(db: peewee.Database) -> int:
    """Raise unless the schema is exactly the one this code expects."""
    version = current_version(db)
    if version > LATEST_VERSION:
        raise IndexTooNew(f"the index has schema version {version}, newer than this program's "
                          f"{LATEST_VERSION}; install the newer DSM PACS or restore a backup")
    if version < LATEST_VERSION:
        raise IndexOutdated(f"the index has schema version {version}; run `dsmpacs db upgrade` "
                            f"to bring it to {LATEST_VERSION}")
    return version


def upgrade(db: peewee.Database, *, backup_dir: Path | None = None) -> tuple[int, int]:
    """Create or migrate the schema to LATEST_VERSION; returns (from, to)."""
    before = current_version(db)
    if before > LATEST_VERSION:
        check(db)
    if before == LATEST_VERSION:
        return before, before
    with session(db):
        if before == 0:
            _create_schema(db)
        else:
            if backup_dir is not None and isinstance(db, peewee.SqliteDatabase):
                backup_sqlite(db, backup_dir / f"index-before-v{LATEST_VERSION}.sqlite3")
            for version in range(before + 1, LATEST_VERSION + 1):
                log.info("migrating index schema to version %d", version)
                with db.atomic():
                    migrations.apply(version, db)
                    SchemaVersion.create(version=version)
    return before, LATEST_VERSION


def _create_schema(db: peewee.Database) -> None:
    mysql = is_mysql(db)
    for model in MODELS:
        model._meta.table_settings = list(_MYSQL_TABLE_SETTINGS) if mysql else []
    try:
        with db.atomic():
            db.create_tables(MODELS, safe=True)
            SchemaVersion.create(version=LATEST_VERSION)
            # Every archive has its default institution from the start (archive/visibility.py).
            from dsmpacs.archive.visibility import ensure_default_institution
            ensure_default_institution()
    finally:
        for model in MODELS:
            model._meta.table_settings = []
    log.info("created index schema version %d", LATEST_VERSION)


def backup_sqlite(db: peewee.Database, target: Path) -> Path:
    """Consistent online copy of an SQLite index (sqlite3 backup API)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(db.database)
    try:
        dest = sqlite3.connect(str(target))
        with dest:
            source.backup(dest)
        dest.close()
    finally:
        source.close()
    return target


def backup_mysql_command(url: str) -> list[str]:
    """The mariadb-dump command for a MySQL URL (the password goes in the environment)."""
    parts = urlsplit(url)
    dump = shutil.which("mariadb-dump") or shutil.which("mysqldump") or "mysqldump"
    return [dump, "--single-transaction", "--routines", f"--host={parts.hostname or '127.0.0.1'}",
            f"--port={parts.port or 3306}", f"--user={unquote(parts.username or 'root')}",
            parts.path.lstrip("/")]


def statement(db: peewee.Database, key: str, build) -> str:
    """SQL text of a hot read query, built once per database by ``build(q, p)`` (``q``
    quotes an identifier, ``p`` is the parameter placeholder).

    peewee's query builder costs 0.2 to 0.9 ms of Python per query on a 2-core machine,
    while SQLite answers a look-up by key in about 10 microseconds; the queries every
    web request runs (its account, its scope, the instance it names) are therefore
    written out once and only bound to new parameters."""
    cache = db.__dict__.setdefault("_dsmpacs_statements", {})
    text = cache.get(key)
    if text is None:
        text = cache[key] = build(lambda name: f"{db.quote[0]}{name}{db.quote[1]}", db.param)
    return text
