"""Schema deltas, one module per version: ``m0002_<what>.py`` defines ``up(db)``.

Version 1 is the schema in models.py as first released. A fresh index is created
from the current models and stamped with LATEST_VERSION, so a migration only has
to bring an index of the previous version forward: add a column with
``playhouse.migrate``, create a new table from a model, fill derived values.
When you add one, bump LATEST_VERSION and add a test that upgrades an index of
the previous version.
"""
from __future__ import annotations

import importlib
import pkgutil

import peewee

LATEST_VERSION = 15


def _module_for(version: int):
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith(f"m{version:04d}_"):
            return importlib.import_module(f"{__name__}.{info.name}")
    raise LookupError(f"no migration module for schema version {version}")


def apply(version: int, db: peewee.Database) -> None:
    _module_for(version).up(db)


def create_new_tables(db: peewee.Database, models) -> None:
    """Create a migration's new tables with the options of a fresh schema (binary
    collation on MariaDB). ``safe``: a migration cut short can run again."""
    from dsmpacs.archive.database import _MYSQL_TABLE_SETTINGS, is_mysql

    for model in models:
        model._meta.table_settings = list(_MYSQL_TABLE_SETTINGS) if is_mysql(db) else []
    try:
        db.create_tables(models, safe=True)
    finally:
        for model in models:
            model._meta.table_settings = []


def missing_columns(db: peewee.Database, table: str, names) -> list[str]:
    """Which of ``names`` the table lacks. Migrations add only those: on MariaDB each
    ALTER commits on its own, so a migration cut short (a crash, a power cut) must
    be able to run again over what it already did."""
    present = {c.name for c in db.get_columns(table)}
    return [n for n in names if n not in present]


def missing_indexes(db: peewee.Database, table: str, names) -> list[str]:
    present = {i.name for i in db.get_indexes(table)}
    return [n for n in names if n not in present]
