"""Version 14: UPS-RS subscriptions (one new table; archive/ups_subscriptions.py)."""
from __future__ import annotations

import peewee

from dsmpacs.archive.migrations import create_new_tables
from dsmpacs.archive.models import UpsSubscription


def up(db: peewee.Database) -> None:
    create_new_tables(db, (UpsSubscription,))
