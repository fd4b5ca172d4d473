"""Version 11: the reading worklist, its tasks and assignment rules (new tables;
archive/reading.py)."""
from __future__ import annotations

import peewee

from dsmpacs.archive.migrations import create_new_tables
from dsmpacs.archive.models import ReadingRule, ReadingTask

NEW_MODELS = (ReadingRule, ReadingTask)


def up(db: peewee.Database) -> None:
    create_new_tables(db, NEW_MODELS)
