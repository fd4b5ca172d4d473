"""Version 13: share links, referring physicians' linked DICOM names and
notifications with their e-mail addresses (four new tables; archive/shares.py, archive/referring.py,
archive/notifications.py)."""
from __future__ import annotations

import peewee

from dsmpacs.archive.models import Notification, NotifyAddress, ReferringName, StudyShare

NEW_MODELS = (StudyShare, ReferringName, Notification, NotifyAddress)


def up(db: peewee.Database) -> None:
    # Same table options as a fresh schema (binary collation on MariaDB); safe=True
    # lets a migration cut short run again.
    from dsmpacs.archive.database import _MYSQL_TABLE_SETTINGS, is_mysql

    for model in NEW_MODELS:
        model._meta.table_settings = list(_MYSQL_TABLE_SETTINGS) if is_mysql(db) else []
    try:
        db.create_tables(NEW_MODELS, safe=True)
    finally:
        for model in NEW_MODELS:
            model._meta.table_settings = []
