"""Version 2: the audit trail becomes a chain (seq, mac), and records carry the role,
the ATNA event, the patient and the AE titles.

Records written before the upgrade keep their order as ``seq`` (their id) and an
empty ``mac``: they predate the chain. The first record appended afterwards
starts the chain right after them, and `dsmpacs audit verify` reports where the
chain starts, so an earlier record cannot pass as a chained one.
"""
from __future__ import annotations

import peewee
from playhouse.migrate import SchemaMigrator, migrate

from dsmpacs.archive.models import AuditEvent


def up(db: peewee.Database) -> None:
    m = SchemaMigrator.from_database(db)
    table = AuditEvent._meta.table_name
    text = {name: peewee.CharField(max_length=size, default="") for name, size in (
        ("role", 16), ("event", 64), ("patient_id", 64), ("patient_name", 128), ("calling_ae", 16),
        ("called_ae", 16), ("key_id", 16), ("mac", 64))}
    migrate(m.add_column(table, "seq", peewee.BigIntegerField(null=True)),
            *(m.add_column(table, name, field) for name, field in text.items()))
    AuditEvent.update(seq=AuditEvent.id).execute()
    migrate(m.add_not_null(table, "seq"),
            m.add_index(table, ("seq",), unique=True),
            m.add_index(table, ("patient_id",)))
