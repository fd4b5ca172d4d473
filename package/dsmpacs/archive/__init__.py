"""The domain: storage, index and the single ingest path. No protocol lives here."""
from __future__ import annotations

import logging

import pydicom.config

from dsmpacs.archive import database, inflate, reading, reconcile, referring
from dsmpacs.archive.events import Events
from dsmpacs.archive.grants import Grants
from dsmpacs.archive.index import Index
from dsmpacs.archive.ingest import Ingest
from dsmpacs.archive.mailer import Mailer
from dsmpacs.archive.notifications import Notifications
from dsmpacs.archive.storage import Storage
from dsmpacs.settings import Settings

log = logging.getLogger(__name__)


class Archive:
    """Storage, index and ingest for one process, built from Settings."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.storage = Storage(settings.effective_storage_root, settings.min_free_mb * 2**20)
        self.db = database.open_database(settings.effective_database_url,
                                         max_connections=settings.max_associations * 2 + 8,
                                         lock_timeout=settings.effective_index_timeout)
        database.bind(self.db)
        self.index = Index(self.db, settings.effective_index_timeout)
        self.ingest = Ingest(self.storage, self.index, settings.duplicate_policy)
        # What one part of the domain tells the others (archive/events.py), and the
        # single studies users may see beyond their institutions (archive/grants.py).
        self.events = Events()
        self.grants = Grants(self.index)
        # Notices to users on those events (archive/notifications.py).
        self.notifications = Notifications(self.index, Mailer.from_settings(settings))
        self.notifications.subscribe(self.events)
        # What a referring member of an institution sees there (archive/referring.py).
        self.referring = referring.install(self.index, self.grants)
        # Arrived studies matched to their orders (archive/reconcile.py).
        self.ingest.observers.append(reconcile.hook(self.index))
        # The reading worklist: a task per arrived study, following its report
        # (archive/reading.py).
        self.reading = reading.Reading(self.index, self.grants, self.events,
                                       grace_hours=settings.reading_grace_hours, record=self._record)
        self.ingest.observers.append(reading.hook(self.reading))
        # The archive validates what it needs itself and keeps bytes unchanged;
        # pydicom's per-value warnings would only flood the log with sender quirks.
        pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
        inflate.set_limit(settings.max_inflated_mb * 2**20)

    def _record(self, actor: str, action: str, **fields) -> None:
        """An audit row for what the domain does by itself (a rule's assignment at
        ingest, a task following its report); the web layer audits what users do."""
        from dsmpacs.archive.audit import AuditTrail
        try:
            AuditTrail.of(self).record(actor, action, **fields)
        except Exception:      # noqa: BLE001 - the change happened; a lost audit row is logged
            log.exception("could not audit %s by %s", action, actor)

    def open(self, *, upgrade: bool = False, create_storage: bool = True) -> None:
        """Prepare storage and check (or bring forward) the index schema."""
        self.storage.prepare(create=create_storage)
        if upgrade:
            database.upgrade(self.db, backup_dir=self.settings.data_dir / "backups")
        else:
            database.check(self.db)

    def refusal(self, instance, by: str = "retrieve") -> str | None:
        """Why ``instance`` (a StoredInstance or InstanceFile) must not be served, or None.
        The one question every retrieve path asks before reading a stored file
        (archive/integrity.py)."""
        from dsmpacs.archive.integrity import refusal
        return refusal(self.index, self.storage, instance, by)

    def recover(self) -> None:
        """Crash recovery; only before any listener accepts work."""
        from dsmpacs.archive.maintenance import quarantine_orphans
        self.storage.clean_tmp()
        quarantine_orphans(self, newest_days=2)

    def close(self) -> None:
        self.db.close_all() if hasattr(self.db, "close_all") else self.db.close()
