"""Version 15: an index on ``reading_task.updated_at``. The UPS event channel
(web/upsws.py) looks for the reading tasks changed in the last two seconds, twice a
second; without the index each look scanned the whole table (about 20 ms at 200,000
tasks, a few years of a hospital's studies), with it a few microseconds."""
from __future__ import annotations

import peewee
from playhouse.migrate import MySQLMigrator, SqliteMigrator, migrate

from dsmpacs.archive.database import is_mysql
from dsmpacs.archive.migrations import missing_indexes

INDEX = "reading_task_updated_at"


def up(db: peewee.Database) -> None:
    migrator = MySQLMigrator(db) if is_mysql(db) else SqliteMigrator(db)
    migrate(*(migrator.add_index("reading_task", ("updated_at",), False)
              for _ in missing_indexes(db, "reading_task", (INDEX,))))
