"""Version 5: a remote AE may be required to show a TLS client certificate
(``tls_client_cert``) on the DICOM TLS port. Existing entries require none."""
from __future__ import annotations

import peewee
from playhouse.migrate import MySQLMigrator, SqliteMigrator, migrate

from dsmpacs.archive.database import is_mysql
from dsmpacs.archive.migrations import missing_columns


def up(db: peewee.Database) -> None:
    migrator = MySQLMigrator(db) if is_mysql(db) else SqliteMigrator(db)
    columns = {"tls_client_cert": peewee.BooleanField(default=False)}
    migrate(*(migrator.add_column("remote_ae", name, columns[name])
              for name in missing_columns(db, "remote_ae", columns)))
