"""Version 9: study grants, access to single studies beyond a user's institutions
(a new table; archive/grants.py)."""
from __future__ import annotations

import peewee

from dsmpacs.archive.migrations import create_new_tables
from dsmpacs.archive.models import StudyGrant

NEW_MODELS = (StudyGrant,)


def up(db: peewee.Database) -> None:
    create_new_tables(db, NEW_MODELS)
