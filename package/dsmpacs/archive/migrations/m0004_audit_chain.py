"""Version 4: the audit trail becomes a chain (seq, mac), and records carry the role,
the ATNA event, the patient and the AE titles.

Records written before the upgrade keep their order as ``seq`` (their id) and an
empty ``mac``: they predate the chain. The first record appended afterwards
starts the chain right after them, and `dsmpacs audit verify` reports where the
chain starts, so an earlier record cannot pass as a chained one.
"""
from __future__ import annotations

import peewee
from playhouse.migrate import SchemaMigrator, migrate

from dsmpacs.archive.migrations import missing_columns, missing_indexes
from dsmpacs.archive.models import AuditEvent


def up(db: peewee.Database) -> None:
    m = SchemaMigrator.from_database(db)
    table = AuditEvent._meta.table_name
    text = {name: peewee.CharField(max_length=size, default="") for name, size in (
        ("role", 16), ("event", 64), ("patient_id", 64), ("patient_name", 128), ("calling_ae", 16),
        ("called_ae", 16), ("key_id", 16), ("mac", 64))}
    columns = {"seq": peewee.BigIntegerField(null=True), **text}
    migrate(*(m.add_column(table, name, columns[name]) for name in missing_columns(db, table, columns)))
    AuditEvent.update(seq=AuditEvent.id).where(AuditEvent.seq.is_null()).execute()
    indexes = {f"{table}_seq": (("seq",), True), f"{table}_patient_id": (("patient_id",), False)}
    migrate(m.add_not_null(table, "seq"),
            *(m.add_index(table, indexes[name][0], unique=indexes[name][1])
              for name in missing_indexes(db, table, indexes)))
