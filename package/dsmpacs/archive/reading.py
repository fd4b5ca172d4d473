"""The reading worklist: one task per arrived study, assigned to a radiologist.

A task is created when the first instance of a study arrives over DICOM or
STOW-RS (``hook``; imports and derived objects are history or our own output,
not studies to read, as in archive/reconcile.py). The first matching rule
(archive/reading_rules.py) gives it an assignee or leaves it in the pool, a
priority and a due time. A coordinator assigns by hand, a radiologist claims
and releases. An assignment grants the assignee the study (and, when the rule
says so, the patient's prior studies) through archive/grants.py with source
``task-<id>``; a release revokes those grants; a final report ends them
``reading_grace_hours`` later. Reports tell the worklist their state through the
``report.state`` event (archive/events.py); the worklist publishes
``reading.assigned`` and ``reading.released``.

Each task is also a UPS workitem (PS3.4 Annex CC, served by
web/dicomweb/ups.py): its Procedure Step State is derived from the task state
(``UPS_STATE``), and the performer who set it IN PROGRESS holds it by its
Transaction UID. Nothing here speaks HTTP; the web layer audits what users do,
and automatic changes (a rule at ingest, a report's state) are audited here
through the ``record`` callback.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Iterable

import peewee
from pydicom.uid import generate_uid

from dsmpacs.archive.attributes import Level
from dsmpacs.archive.database import IndexUnavailable
from dsmpacs.archive.events import Events
from dsmpacs.archive.grants import Grants
from dsmpacs.archive.index import Index
from dsmpacs.archive.models import Institution, Patient, ReadingTask, Study, utcnow
from dsmpacs.archive.reading_rules import PRIORITIES, Rules, more_urgent, normal_priority, order_priority
from dsmpacs.archive.recent import RecentKeys
from dsmpacs.archive.uids import is_valid_uid

log = logging.getLogger(__name__)

UNREAD, ASSIGNED, IN_PROGRESS = "unread", "assigned", "in-progress"
PRELIMINARY, FINAL, AMENDED, CANCELED = "preliminary", "final", "amended", "canceled"
STATES = (UNREAD, ASSIGNED, IN_PROGRESS, PRELIMINARY, FINAL, AMENDED, CANCELED)
OPEN = (UNREAD, ASSIGNED, IN_PROGRESS, PRELIMINARY)
# PS3.4 CC.1.1: the four UPS states a task's state shows as.
UPS_STATE = {UNREAD: "SCHEDULED", ASSIGNED: "SCHEDULED", IN_PROGRESS: "IN PROGRESS",
             PRELIMINARY: "IN PROGRESS", FINAL: "COMPLETED", AMENDED: "COMPLETED", CANCELED: "CANCELED"}
# What a report's state (the report.state event) makes of the task.
REPORT_STATES = {"in-progress": IN_PROGRESS, "preliminary": PRELIMINARY, "final": FINAL, "amended": AMENDED}
ARRIVING = frozenset({"dicom", "stow"})
_REMEMBERED = 4096

AUDIT_ASSIGN = "reading-assign"
AUDIT_CLAIM = "reading-claim"
AUDIT_RELEASE = "reading-release"
AUDIT_STATE = "reading-state"
AUDIT_CREATE = "reading-create"
AUDIT_RULE = "reading-rule"

Recorder = Callable[..., None]      # (actor, action, study_instance_uid=, detail=, patient_id=, patient_name=)


class ReadingError(ValueError):
    """A change the worklist refuses; ``code`` says which kind (the web and UPS-RS
    layers map it to their statuses): not_found, conflict, invalid, transaction."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Task:
    id: int
    study_instance_uid: str
    ups_uid: str
    institution: str
    state: str
    priority: str
    due_at: datetime | None
    assignee: str
    rule: str
    include_priors: bool
    patient_id: str
    patient_name: str
    accession_number: str
    modality: str
    description: str
    transaction_uid: str
    created_at: datetime
    updated_at: datetime

    @property
    def ups_state(self) -> str:
        return UPS_STATE[self.state]

    @property
    def source(self) -> str:
        """The grant source of this task's assignment (archive/grants.py)."""
        return f"task-{self.id}"

    @property
    def overdue(self) -> bool:
        return self.state in OPEN and self.due_at is not None and self.due_at < utcnow()


def _task(row: ReadingTask) -> Task:
    return Task(row.id, row.study_instance_uid, row.ups_uid, row.institution, row.state, row.priority,
                row.due_at, row.assignee, row.rule, bool(row.include_priors), row.patient_id,
                row.patient_name, row.accession_number, row.modality, row.description,
                row.transaction_uid, row.created_at, row.updated_at)


def institution_of(study_instance_uid: str) -> str:
    """The code of the study's institution (archive/visibility.py); '' for a study
    not (yet) in the index, such as one a UPS-RS client schedules before it arrives."""
    row = (Study.select(Institution.code)
           .join(Institution, on=(Study.institution == Institution.id))
           .where(Study.study_instance_uid == study_instance_uid).tuples().first())
    return str(row[0]) if row else ""


class Reading:
    def __init__(self, index: Index, grants: Grants, events: Events, *, grace_hours: int = 72,
                 record: Recorder | None = None):
        self.index = index
        self.grants = grants
        self.events = events
        self.grace_hours = grace_hours
        self.record = record or (lambda *a, **k: None)
        self.rules = Rules(index)
        self._seen = RecentKeys(_REMEMBERED)
        events.subscribe("report.state", self.report_state)

    # --- reading ------------------------------------------------------------------
    def get(self, task_id: int) -> Task:
        with self.index.read():
            row = ReadingTask.get_or_none(ReadingTask.id == task_id)
        if row is None:
            raise ReadingError("not_found", f"no reading task {task_id}")
        return _task(row)

    def by_ups(self, ups_uid: str) -> Task:
        with self.index.read():
            row = ReadingTask.get_or_none(ReadingTask.ups_uid == ups_uid)
        if row is None:
            raise ReadingError("not_found", "no such workitem")
        return _task(row)

    def for_study(self, study_instance_uid: str) -> Task | None:
        with self.index.read():
            row = ReadingTask.get_or_none(ReadingTask.study_instance_uid == study_instance_uid)
        return _task(row) if row is not None else None

    def tasks(self, *, states: Iterable[str] = (), priority: str = "", institution: str = "",
              assignee: str | None = None, visible: Callable[[Task], bool] | None = None,
              limit: int = 200) -> list[Task]:
        """Most urgent first (priority, then due time). ``visible`` filters what the
        caller may see (web: the user's Scope or the assignee)."""
        query = ReadingTask.select()
        states = tuple(states)
        if states:
            query = query.where(ReadingTask.state.in_(states))
        if priority:
            query = query.where(ReadingTask.priority == priority)
        if institution:
            query = query.where(ReadingTask.institution == institution)
        if assignee is not None:
            query = query.where(ReadingTask.assignee == assignee)
        order = peewee.Case(ReadingTask.priority, [(p, i) for i, p in enumerate(PRIORITIES)], len(PRIORITIES))
        query = query.order_by(order, ReadingTask.due_at.asc(nulls="LAST"), ReadingTask.id)
        out: list[Task] = []
        with self.index.read():
            for row in query.iterator():
                task = _task(row)
                if visible is None or visible(task):
                    out.append(task)
                    if len(out) >= limit:
                        break
        return out

    # --- creation -----------------------------------------------------------------
    def study_arrived(self, values: dict) -> Task | None:
        """The ingest hook's work: a task for a study seen for the first time."""
        study = values[Level.STUDY]
        uid = str(study.get("study_instance_uid") or "")
        if not uid or uid in self._seen:
            return None
        patient, series = values[Level.PATIENT], values.get(Level.SERIES, {})
        task = self.create(uid, patient_id=str(patient.get("patient_id") or ""),
                           patient_name=str(patient.get("patient_name") or ""),
                           accession_number=str(study.get("accession_number") or ""),
                           modality=str(series.get("modality") or ""),
                           description=str(study.get("study_description") or ""), by_rule=True)
        self._seen.add(uid)
        return task

    def create(self, study_instance_uid: str, *, ups_uid: str = "", priority: str = "", due_at=None,
               patient_id: str = "", patient_name: str = "", accession_number: str = "",
               modality: str = "", description: str = "", by_rule: bool = False,
               actor: str = "") -> Task | None:
        """A new task for the study (None when it already has one and ``by_rule``,
        else ReadingError conflict). With ``by_rule`` the first matching rule decides
        priority, due time and assignee."""
        if not is_valid_uid(study_instance_uid) or (ups_uid and not is_valid_uid(ups_uid)):
            raise ReadingError("invalid", "a reading task needs valid UIDs")
        now = utcnow()
        with self.index.write():
            institution = institution_of(study_instance_uid)
            rule = self.rules.matching(institution, modality, description) if by_rule else None
            if priority:
                priority = normal_priority(priority)
            else:
                priority = rule.priority if rule else "MEDIUM"
                if by_rule:
                    # The order the study was matched to (the reconcile hook ran first
                    # for this instance) may be more urgent than the rule says.
                    ordered = order_priority(study_instance_uid)
                    priority = more_urgent(priority, ordered) if ordered else priority
            fields = dict(study_instance_uid=study_instance_uid, ups_uid=ups_uid or generate_uid(prefix=None),
                          institution=institution, state=UNREAD, priority=priority,
                          due_at=due_at or (now + timedelta(hours=rule.due_hours) if rule else None),
                          rule=rule.name if rule else "", include_priors=bool(rule and rule.include_priors),
                          patient_id=patient_id[:64], patient_name=patient_name[:256],
                          accession_number=accession_number[:64], modality=modality[:16],
                          description=description[:128], created_at=now, updated_at=now)
            try:
                row = ReadingTask.create(**fields)
            except peewee.IntegrityError:
                if by_rule:
                    return None
                raise ReadingError("conflict", "the study or workitem already has a reading task") from None
        task = _task(row)
        self.record(actor or (f"rule:{rule.name}" if rule else "system"), AUDIT_CREATE,
                    study_instance_uid=study_instance_uid, patient_id=patient_id, patient_name=patient_name,
                    detail=f"task {task.id} ({task.priority}) {modality} {description}".strip())
        if rule is not None and rule.assignee:
            task = self.assign(task.id, rule.assignee, by=f"rule:{rule.name}")
            self.record(f"rule:{rule.name}", AUDIT_ASSIGN, study_instance_uid=study_instance_uid,
                        patient_id=patient_id, patient_name=patient_name,
                        detail=f"task {task.id} assigned to {rule.assignee} by rule {rule.name}")
        return task

    # --- assignment ---------------------------------------------------------------
    def assign(self, task_id: int, assignee: str, *, by: str) -> Task:
        """Give the task (and its grants) to ``assignee``; a task held by someone
        else is taken from them (their grants revoked)."""
        if not assignee:
            raise ReadingError("invalid", "an assignment needs a reader")
        task = self.get(task_id)
        if task.state not in (UNREAD, ASSIGNED):
            raise ReadingError("conflict", f"task {task_id} is {task.state}; only unread or assigned "
                                           "tasks can be assigned")
        if task.assignee and task.assignee != assignee:
            self.grants.revoke(source=task.source, username=task.assignee)
        self._update(task_id, assignee=assignee, state=ASSIGNED)
        self._grant(task, assignee, by)
        self.events.publish("reading.assigned", study_instance_uid=task.study_instance_uid,
                            username=assignee, task_id=task_id, by=by)
        return self.get(task_id)

    def claim(self, task_id: int, username: str) -> Task:
        """A radiologist takes an unassigned task (or one already theirs)."""
        task = self.get(task_id)
        if task.assignee not in ("", username):
            raise ReadingError("conflict", f"task {task_id} is assigned to {task.assignee}")
        return self.assign(task_id, username, by=username)

    def release(self, task_id: int, *, by: str) -> Task:
        """Back to the pool: the assignee's grants end now."""
        task = self.get(task_id)
        if task.state not in (ASSIGNED, IN_PROGRESS) or not task.assignee:
            raise ReadingError("conflict", f"task {task_id} is {task.state}; nothing to release")
        self.grants.revoke(source=task.source)
        self._update(task_id, assignee="", state=UNREAD, transaction_uid="")
        self.events.publish("reading.released", study_instance_uid=task.study_instance_uid,
                            username=task.assignee, task_id=task_id, by=by)
        return self.get(task_id)

    def _grant(self, task: Task, assignee: str, by: str) -> None:
        self.grants.grant(assignee, task.study_instance_uid, reason="assignment", source=task.source,
                          granted_by=by)
        if task.include_priors:
            for uid in self.priors(task):
                self.grants.grant(assignee, uid, reason="prior", source=task.source, granted_by=by)

    def priors(self, task: Task) -> list[str]:
        """The patient's other studies (same Patient ID), for comparison."""
        if not task.patient_id:
            return []
        with self.index.read():
            rows = (Study.select(Study.study_instance_uid).join(Patient)
                    .where(Patient.patient_id == task.patient_id,
                           Study.study_instance_uid != task.study_instance_uid))
            return [r.study_instance_uid for r in rows]

    # --- UPS state changes (PS3.4 CC.1.1) ----------------------------------------------
    def start(self, task_id: int, username: str, transaction_uid: str) -> Task:
        """SCHEDULED -> IN PROGRESS: ``username`` performs it, holding it by the
        Transaction UID it chose."""
        if not is_valid_uid(transaction_uid):
            raise ReadingError("transaction", "IN PROGRESS needs a valid Transaction UID")
        task = self.get(task_id)
        if task.ups_state != "SCHEDULED":
            raise ReadingError("conflict", f"the workitem is {task.ups_state}, not SCHEDULED")
        if task.assignee != username:
            task = self.claim(task_id, username)
        self._update(task_id, state=IN_PROGRESS, transaction_uid=transaction_uid)
        return self.get(task_id)

    def finish(self, task_id: int, transaction_uid: str, ups_state: str) -> Task:
        """IN PROGRESS -> COMPLETED or CANCELED by the performer holding it."""
        task = self.get(task_id)
        if task.ups_state != "IN PROGRESS":
            raise ReadingError("conflict", f"the workitem is {task.ups_state}, not IN PROGRESS")
        if not transaction_uid or transaction_uid != task.transaction_uid:
            raise ReadingError("transaction", "the Transaction UID does not match the performer's")
        if ups_state == "COMPLETED":
            return self._set_state(task, FINAL)
        self.grants.revoke(source=task.source)
        self._update(task_id, state=CANCELED)
        return self.get(task_id)

    def cancel_scheduled(self, task_id: int) -> Task:
        """A cancellation request for a SCHEDULED workitem: nobody performs it yet."""
        task = self.get(task_id)
        if task.ups_state != "SCHEDULED":
            raise ReadingError("conflict", f"the workitem is {task.ups_state}")
        self.grants.revoke(source=task.source)
        self._update(task_id, state=CANCELED)
        return self.get(task_id)

    # --- reports ------------------------------------------------------------------
    def report_state(self, *, study_instance_uid: str, state: str, username: str = "", report_id=None,
                     **_ignored) -> None:
        """The ``report.state`` handler: the task follows its report."""
        target = REPORT_STATES.get(state)
        task = self.for_study(study_instance_uid)
        if target is None or task is None or task.state == CANCELED:
            return
        task = self._set_state(task, target)
        self.record(username or "system", AUDIT_STATE, study_instance_uid=study_instance_uid,
                    patient_id=task.patient_id, patient_name=task.patient_name,
                    detail=f"task {task.id} {target} (report {report_id})")

    def _set_state(self, task: Task, state: str) -> Task:
        self._update(task.id, state=state)
        if state in (FINAL, AMENDED):
            # The reader keeps the studies a while after signing (questions, amendments).
            self.grants.expire(source=task.source, at=utcnow() + timedelta(hours=self.grace_hours))
        return self.get(task.id)

    def _update(self, task_id: int, **fields) -> None:
        with self.index.write():
            ReadingTask.update(updated_at=utcnow(), **fields).where(ReadingTask.id == task_id).execute()



def hook(reading: Reading):
    """The ingest's observer: a reading problem never fails a store."""
    def observe(values: dict, origin) -> None:
        if origin.kind not in ARRIVING:
            return
        try:
            reading.study_arrived(values)
        except (IndexUnavailable, peewee.PeeweeException, ReadingError) as exc:
            log.error("could not create the reading task of an arrived study: %s", exc)
    return observe
