"""Version 10: institutions sharing one archive (archive/visibility.py).

New tables (institution, membership, institution_alias); an ``institution`` column
on study and orders with the database default 1 (the default institution, so every
existing study and order lands there without a table rebuild) and on remote_ae
(NULL: unbound, sees everything); every existing user becomes a member of the
default institution with the role nearest their global one. An upgraded single-room
archive therefore behaves exactly as before."""
from __future__ import annotations

import peewee
from playhouse.migrate import MySQLMigrator, SqliteMigrator, migrate

from dsmpacs.archive.database import is_mysql
from dsmpacs.archive.migrations import create_new_tables, missing_columns, missing_indexes
from dsmpacs.archive.models import (
    Institution,
    InstitutionAlias,
    Membership,
    RemoteAE,
    User,
    institution_column,
)

NEW_MODELS = (Institution, Membership, InstitutionAlias)


def up(db: peewee.Database) -> None:
    from dsmpacs.archive.visibility import ensure_default_institution, membership_role_for

    create_new_tables(db, NEW_MODELS)
    ensure_default_institution()

    migrator = MySQLMigrator(db) if is_mysql(db) else SqliteMigrator(db)
    column = institution_column()["institution"]
    for table in ("study", "orders"):
        # Each step checks what is there first: on MariaDB every ALTER commits on its own.
        migrate(*(migrator.add_column(table, name, column, allow_not_null=True)
                  for name in missing_columns(db, table, ("institution",))))
        migrate(*(migrator.add_index(table, ("institution",), False)
                  for name in missing_indexes(db, table, (f"{table}_institution",))))
    migrate(*(migrator.add_column("remote_ae", name, RemoteAE.institution)
              for name in missing_columns(db, "remote_ae", ("institution",))))

    from dsmpacs.archive.models import DEFAULT_INSTITUTION_ID
    members = {m.user_id for m in Membership.select(Membership.user)}
    for user in User.select(User.id, User.role):
        if user.id not in members:
            Membership.create(user=user.id, institution=DEFAULT_INSTITUTION_ID,
                              role=membership_role_for(user.role))
