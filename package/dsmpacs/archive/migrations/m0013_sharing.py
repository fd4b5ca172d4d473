"""Version 13: share links, referring physicians' linked DICOM names and
notifications with their e-mail addresses (four new tables; archive/shares.py, archive/referring.py,
archive/notifications.py)."""
from __future__ import annotations

import peewee

from dsmpacs.archive.migrations import create_new_tables
from dsmpacs.archive.models import Notification, NotifyAddress, ReferringName, StudyShare

NEW_MODELS = (StudyShare, ReferringName, Notification, NotifyAddress)


def up(db: peewee.Database) -> None:
    create_new_tables(db, NEW_MODELS)
