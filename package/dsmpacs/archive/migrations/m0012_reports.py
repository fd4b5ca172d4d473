"""Version 12: reports and their versions (new tables; archive/reports.py)."""
from __future__ import annotations

import peewee

from dsmpacs.archive.migrations import create_new_tables
from dsmpacs.archive.models import Report, ReportVersion

NEW_MODELS = (Report, ReportVersion)


def up(db: peewee.Database) -> None:
    create_new_tables(db, NEW_MODELS)
