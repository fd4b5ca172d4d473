"""Version 2: instances carry what re-hashing found (corrupt, corrupt_reason,
verified_at), and background jobs keep a lease and their progress (job_lease)."""
from __future__ import annotations

import peewee
from playhouse.migrate import MySQLMigrator, SqliteMigrator, migrate

from dsmpacs.archive.database import is_mysql
from dsmpacs.archive.migrations import create_new_tables, missing_columns
from dsmpacs.archive.models import JobLease, integrity_columns


def up(db: peewee.Database) -> None:
    migrator = MySQLMigrator(db) if is_mysql(db) else SqliteMigrator(db)
    # NOT NULL with a database default: one ALTER each, no table rebuild on SQLite.
    columns = integrity_columns()
    migrate(*(migrator.add_column("instance", name, columns[name], allow_not_null=True)
              for name in missing_columns(db, "instance", columns)))
    create_new_tables(db, [JobLease])
