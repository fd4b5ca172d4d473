"""Version 7: orders for the Modality Worklist, their arrivals and the performed
procedure steps modalities report (new tables)."""
from __future__ import annotations

import peewee

from dsmpacs.archive.migrations import create_new_tables
from dsmpacs.archive.models import Order, OrderArrival, PerformedStep

NEW_MODELS = (Order, OrderArrival, PerformedStep)


def up(db: peewee.Database) -> None:
    create_new_tables(db, NEW_MODELS)
