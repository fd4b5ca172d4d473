"""Version 6: per-user measurements and annotations of the viewer (a new table)."""
from __future__ import annotations

import peewee

from dsmpacs.archive.migrations import create_new_tables
from dsmpacs.archive.models import Annotation

NEW_MODELS = (Annotation,)


def up(db: peewee.Database) -> None:
    create_new_tables(db, NEW_MODELS)
