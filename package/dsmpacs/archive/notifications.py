"""Notifications: what a user should know without looking for it.

Kinds and who gets them:

- ``assigned``: a reading was assigned to the user (event ``reading.assigned``).
- ``overdue``: a reading task assigned to the user is past its due time
  (``check_overdue``, run periodically; one notice per task).
- ``report-preliminary`` / ``report-final`` / ``report-amended``: a report of a
  study was issued preliminary, signed or amended (event ``report.state``): the
  study's referring physicians (by linked
  DICOM name, archive/referring.py) and, for an amendment, everyone holding a
  grant on the study, except whoever made the change.

Only names and parameters are stored; the web layer words them in the reader's
language. A user who gave an e-mail address also gets each notice by e-mail when
an SMTP server is configured (archive/mailer.py); ``wording`` turns a notice into
the message's subject and body and is installed by the composition root
(dsmpacs/app.py) from the UI catalogs, so mail and page say the same. Nothing
here speaks HTTP.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

import peewee

from dsmpacs.archive.events import Events
from dsmpacs.archive.index import Index
from dsmpacs.archive.mailer import Mailer, valid_address
from dsmpacs.archive.models import (
    Notification,
    NotifyAddress,
    ReadingTask,
    ReferringName,
    Study,
    StudyGrant,
    utcnow,
)
from dsmpacs.archive.referring import names_match

log = logging.getLogger(__name__)

KINDS = ("assigned", "overdue", "report-preliminary", "report-final", "report-amended")
OPEN_TASK_STATES = ("assigned", "in-progress", "preliminary")


@dataclass(frozen=True)
class Note:
    id: int
    username: str
    kind: str
    study_instance_uid: str
    params: dict
    created_at: datetime
    read_at: datetime | None


def _note(row: Notification) -> Note:
    try:
        params = json.loads(row.params or "{}")
    except ValueError:
        params = {}
    return Note(row.id, row.username, row.kind, row.study_instance_uid, params, row.created_at, row.read_at)


class Notifications:
    def __init__(self, index: Index, mailer: Mailer | None = None):
        self.index = index
        self.mailer = mailer
        self.wording: Callable[[Note], tuple[str, str]] | None = None

    # --- e-mail addresses ----------------------------------------------------------
    def set_address(self, username: str, address: str) -> None:
        """The address ``username`` wants notices sent to; empty: none. ValueError if malformed."""
        address = address.strip()
        if address and not valid_address(address):
            raise ValueError("not an e-mail address")
        with self.index.write():
            NotifyAddress.delete().where(NotifyAddress.username == username).execute()
            if address:
                NotifyAddress.create(username=username, address=address)

    def address(self, username: str) -> str:
        with self.index.read():
            row = NotifyAddress.get_or_none(NotifyAddress.username == username)
        return row.address if row else ""

    def _mail(self, row: Notification) -> None:
        if self.mailer is None or self.wording is None:
            return
        to = self.address(row.username)
        if to:
            subject, body = self.wording(_note(row))
            self.mailer.send(to, subject, body)

    # --- writing ---------------------------------------------------------------
    def notify(self, username: str, kind: str, study_instance_uid: str = "", *, dedup_key: str | None = None,
               **params) -> bool:
        """Add a notice; False when ``dedup_key`` was already used (nothing added)."""
        if kind not in KINDS or not username:
            raise ValueError(f"unknown notification kind {kind!r} or no user")
        try:
            with self.index.write():
                row = Notification.create(username=username, kind=kind, study_instance_uid=study_instance_uid,
                                          params=json.dumps(params, ensure_ascii=False), dedup_key=dedup_key)
        except peewee.IntegrityError:
            return False
        self._mail(row)
        return True

    def subscribe(self, events: Events) -> None:
        events.subscribe("reading.assigned", self._on_assigned)
        events.subscribe("report.state", self._on_report_state)

    def _on_assigned(self, *, study_instance_uid: str, username: str, task_id=None, by: str = "", **_):
        if username and username != by:
            self.notify(username, "assigned", study_instance_uid, task=str(task_id or ""), by=by,
                        patient=self._patient_name(study_instance_uid))

    def _on_report_state(self, *, study_instance_uid: str, state: str, username: str = "", **_):
        if state not in ("preliminary", "final", "amended"):
            return
        kind = f"report-{state}"
        recipients = self.referring_physicians_of(study_instance_uid)
        if state == "amended":
            recipients |= self._grant_holders(study_instance_uid)
        for name in sorted(recipients - {username}):
            self.notify(name, kind, study_instance_uid, by=username,
                        patient=self._patient_name(study_instance_uid))

    def check_overdue(self, now: datetime | None = None) -> int:
        """A notice to the assignee of each open reading task (archive/reading.py) past
        its due time, once per task."""
        now = now or utcnow()
        with self.index.read():
            rows = list(ReadingTask.select(ReadingTask.id, ReadingTask.study_instance_uid, ReadingTask.assignee,
                                           ReadingTask.due_at)
                        .where(ReadingTask.due_at.is_null(False), ReadingTask.due_at < now,
                               ReadingTask.assignee != "", ReadingTask.state.in_(OPEN_TASK_STATES)))
        added = 0
        for task in rows:
            added += self.notify(task.assignee, "overdue", task.study_instance_uid, dedup_key=f"overdue-{task.id}",
                                 task=str(task.id), due=str(task.due_at)[:16],
                                 patient=self._patient_name(task.study_instance_uid))
        return added

    # --- reading -----------------------------------------------------------------
    def unread_count(self, username: str) -> int:
        with self.index.read():
            return Notification.select().where(Notification.username == username,
                                               Notification.read_at.is_null(True)).count()

    def list(self, username: str, limit: int = 100) -> list[Note]:
        with self.index.read():
            rows = (Notification.select().where(Notification.username == username)
                    .order_by(Notification.id.desc()).limit(limit))
            return [_note(r) for r in rows]

    def mark_read(self, username: str, note_id: int | None = None) -> int:
        """Mark one notice (or, without an id, all) of ``username`` read; how many changed."""
        query = Notification.update(read_at=utcnow()).where(Notification.username == username,
                                                             Notification.read_at.is_null(True))
        if note_id is not None:
            query = query.where(Notification.id == note_id)
        with self.index.write():
            return query.execute()

    # --- helpers -----------------------------------------------------------------
    def referring_physicians_of(self, study_instance_uid: str) -> set[str]:
        with self.index.read():
            study = Study.get_or_none(Study.study_instance_uid == study_instance_uid)
            if study is None or not study.referring_physician_name:
                return set()
            return {r.username for r in ReferringName.select()
                    if names_match(r.dicom_name, study.referring_physician_name)}

    def _grant_holders(self, study_instance_uid: str) -> set[str]:
        now = utcnow()
        with self.index.read():
            rows = StudyGrant.select(StudyGrant.username).where(
                StudyGrant.study_instance_uid == study_instance_uid, StudyGrant.revoked_at.is_null(True),
                StudyGrant.expires_at.is_null(True) | (StudyGrant.expires_at > now))
            return {r.username for r in rows}

    def _patient_name(self, study_instance_uid: str) -> str:
        with self.index.read():
            study = Study.get_or_none(Study.study_instance_uid == study_instance_uid)
            return (study.patient.patient_name or "") if study is not None else ""
