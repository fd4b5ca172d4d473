"""Version 3: server-side web sessions, TOTP credentials and recovery codes (new tables)."""
from __future__ import annotations

import peewee

from dsmpacs.archive.migrations import create_new_tables
from dsmpacs.archive.models import RecoveryCode, TotpCredential, WebSession

NEW_MODELS = (WebSession, TotpCredential, RecoveryCode)


def up(db: peewee.Database) -> None:
    create_new_tables(db, NEW_MODELS)
