"""Version 7: orders for the Modality Worklist, their arrivals and the performed
procedure steps modalities report (new tables)."""
from __future__ import annotations

import peewee

from dsmpacs.archive.models import Order, OrderArrival, PerformedStep

NEW_MODELS = (Order, OrderArrival, PerformedStep)


def up(db: peewee.Database) -> None:
    # Same table options as a fresh schema (binary collation on MariaDB).
    from dsmpacs.archive.database import _MYSQL_TABLE_SETTINGS, is_mysql

    for model in NEW_MODELS:
        model._meta.table_settings = list(_MYSQL_TABLE_SETTINGS) if is_mysql(db) else []
    try:
        db.create_tables(NEW_MODELS, safe=True)
    finally:
        for model in NEW_MODELS:
            model._meta.table_settings = []
