"""Index writes and look-ups used by ingest, verify and reindex.

Every write is one short transaction; the rows of stored instances arriving at
once share one (archive/commits.py, group commit). On SQLite it takes the write lock up
front (BEGIN IMMEDIATE) so concurrent associations queue instead of failing
to upgrade a read lock; on MariaDB the study row is locked (SELECT ... FOR
UPDATE) so counters and ModalitiesInStudy stay right under concurrent stores.
"""
from __future__ import annotations

import hashlib
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import peewee

from dsmpacs.archive.attributes import Extracted, Level, extracted_columns
from dsmpacs.archive.commits import GroupCommit, RetryLater
from dsmpacs.archive.database import (
    DEFAULT_LOCK_TIMEOUT,
    IndexUnavailable,
    TransientConflict,
    is_mysql,
    is_transient,
    lock_timeout,
    session,
    set_busy_timeout,
)
from dsmpacs.archive.models import Instance, Patient, Quarantine, Series, Study, utcnow
from dsmpacs.archive.visibility import ae_binding, placement

log = logging.getLogger(__name__)
_DB_ERRORS = (peewee.OperationalError, peewee.InterfaceError)
LOOK_UP = object()       # the sending AE's binding is not known yet: query it


class StudyElsewhere(Exception):
    """The instance's study exists in another institution than the one the sender named."""


class _Statements:
    """SQL text of the statements every stored instance runs, built once per database.

    Building these through peewee's query builder cost more than running them
    (about 1.5 ms of Python per instance on a 2-core machine), so the per-instance
    path reuses the text and only binds new parameters.
    """

    def __init__(self, db: peewee.Database, mysql: bool):
        q = lambda name: f"{db.quote[0]}{name}{db.quote[1]}"   # noqa: E731
        p = db.param
        self.study_columns = ("id", "institution") + extracted_columns(Level.STUDY)
        self.series_columns = ("id", "study_id") + extracted_columns(Level.SERIES)
        self.instance_columns = ("series_id", "path", "size", "sha256", "dataset_offset",
                                 "transfer_syntax_uid", "received_at", "calling_ae",
                                 "origin") + extracted_columns(Level.IMAGE)
        cols = lambda names: ", ".join(q(n) for n in names)   # noqa: E731
        self.study_select = (f"SELECT {cols(self.study_columns)} FROM {q('study')} "
                             f"WHERE {q('study_instance_uid')} = {p}" + (" FOR UPDATE" if mysql else ""))
        self.series_select = (f"SELECT {cols(self.series_columns)} FROM {q('series')} "
                              f"WHERE {q('series_instance_uid')} = {p}")
        self.instance_insert = (f"INSERT INTO {q('instance')} ({cols(self.instance_columns)}) "
                                f"VALUES ({', '.join([p] * len(self.instance_columns))})")
        n_series = q("number_of_series_related_instances")
        self.series_bump = (f"UPDATE {q('series')} SET {n_series} = {n_series} + 1, "
                            f"{q('updated_at')} = {p} WHERE {q('id')} = {p}")
        n_inst, n_ser = q("number_of_study_related_instances"), q("number_of_study_related_series")
        self.study_bump = (f"UPDATE {q('study')} SET {n_inst} = {n_inst} + 1, {n_ser} = {n_ser} + {p}, "
                           f"{q('updated_at')} = {p} WHERE {q('id')} = {p}")
        fields = Instance._meta.columns
        self._instance_fields = [fields[c] for c in self.instance_columns]

    def instance_params(self, values: dict[str, object]) -> list[object]:
        return [field.db_value(values[field.column_name]) if field.column_name in values
                else field.db_value(field.default() if callable(field.default) else field.default)
                for field in self._instance_fields]


@contextmanager
def _nothing() -> Iterator[None]:
    yield


class InstanceExists(Exception):
    """The SOP Instance UID is already indexed (another store won the race)."""


@dataclass(frozen=True)
class StoredFile:
    path: str
    size: int
    sha256: str
    dataset_offset: int
    transfer_syntax_uid: str


def patient_key(values: dict[str, object]) -> str:
    pid = str(values.get("patient_id") or "")
    if pid:
        basis = f"id\x1f{values.get('issuer_of_patient_id') or ''}\x1f{pid}"
    else:
        basis = f"name\x1f{values.get('patient_name') or ''}\x1f{values.get('patient_birth_date') or ''}"
    return hashlib.sha256(basis.encode("utf-8")).hexdigest()


# Seconds between two tries for the write lock: the first pause, and the longest
# (_sqlite_begin).
BEGIN_PAUSE = (0.0001, 0.002)


class Index:
    def __init__(self, db: peewee.Database, lock_timeout: float = DEFAULT_LOCK_TIMEOUT):
        self.db = db
        # The whole time one store may wait for locks, retries included: the ingest
        # answers (0xA701) before the sender's DIMSE timeout runs out.
        self.lock_timeout = lock_timeout
        self._mysql = is_mysql(db)
        self._sql = _Statements(db, self._mysql)
        self.commits = GroupCommit(self.write, self.db.atomic)

    @contextmanager
    def read(self) -> Iterator[None]:
        try:
            with session(self.db):
                yield
        except _DB_ERRORS as exc:
            raise IndexUnavailable(f"index database error: {exc}") from exc

    @contextmanager
    def write(self, wait: float | None = None,
              on_busy: Callable[[], None] | None = None) -> Iterator[None]:
        """One write transaction; ``wait``: seconds it may wait for locks, when less
        than the connection's default (a retry spending the rest of a budget).
        ``on_busy``: called once, before waiting, when another connection holds
        SQLite's write lock (the group commit waits for its fsyncs then)."""
        try:
            with session(self.db):
                if self._mysql:
                    with (lock_timeout(self.db, wait, self.lock_timeout) if wait is not None
                          else _nothing()):
                        with self.db.atomic():
                            yield
                elif self.db.in_transaction():
                    # A savepoint in this thread's transaction, which holds the write lock
                    # already: nothing to wait for.
                    with self.db.atomic():
                        yield
                else:
                    with self._sqlite_begin(self.lock_timeout if wait is None else wait, on_busy):
                        yield
        except _DB_ERRORS as exc:
            kind = TransientConflict if is_transient(exc) else IndexUnavailable
            raise kind(f"index database error: {exc}") from exc

    @contextmanager
    def _sqlite_begin(self, budget: float, on_busy: Callable[[], None] | None) -> Iterator[None]:
        """BEGIN IMMEDIATE, trying again after a short sleep while another connection
        (in this process or another) holds the write lock, for up to ``budget`` seconds.

        Not SQLite's busy handler: it sleeps 1, 2, 5, 10 ms... between tries, however
        soon the lock is free, and a write transaction here lasts about a millisecond;
        with the DICOM daemon's receiving processes (dicom/receivers.py) each storing
        at once, those sleeps were a third of the time. Here the first sleep is a tenth
        of a millisecond, doubling to BEGIN_PAUSE[1]. Nor does anything sleep inside
        SQLite holding the connection's mutex: a thread that finalizes one of that
        connection's statements meanwhile (the cyclic garbage collector runs in any
        thread, and a pooled connection serves many threads) would block on it, and
        were that thread the one holding the write lock, both would wait out the whole
        busy timeout (seen under load with concurrent STOW-RS)."""
        deadline = time.monotonic() + budget
        pause = BEGIN_PAUSE[0]
        set_busy_timeout(self.db, 0)
        try:
            while True:
                transaction = self.db.atomic("IMMEDIATE")
                try:
                    transaction.__enter__()
                    break
                except _DB_ERRORS as exc:
                    if not is_transient(exc) or time.monotonic() + pause >= deadline:
                        raise
                if on_busy is not None:
                    on_busy()
                    on_busy = None
                    continue
                time.sleep(pause)
                pause = min(pause * 2, BEGIN_PAUSE[1])
        finally:
            self._restore_busy_timeout()
        try:
            yield
        except BaseException as exc:
            if not transaction.__exit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            transaction.__exit__(None, None, None)

    def _restore_busy_timeout(self) -> None:
        set_busy_timeout(self.db, self.lock_timeout)

    def ping(self) -> None:
        with self.read():
            self.db.execute_sql("SELECT 1")

    # --- look-ups ----------------------------------------------------------
    def find_instance(self, sop_instance_uid: str) -> Instance | None:
        with self.read():
            return Instance.get_or_none(Instance.sop_instance_uid == sop_instance_uid)

    def instance_count(self) -> int:
        with self.read():
            return Instance.select().count()

    def iter_instances(self, batch: int = 1000) -> Iterator[Instance]:
        """Every instance row, in id order, in batches (constant memory)."""
        last = 0
        while True:
            with self.read():
                rows = list(Instance.select().where(Instance.id > last)
                            .order_by(Instance.id).limit(batch))
            if not rows:
                return
            yield from rows
            last = rows[-1].id

    def indexed_paths(self, paths: list[str]) -> set[str]:
        with self.read():
            return {row.path for row in Instance.select(Instance.path).where(Instance.path.in_(paths))}

    # --- writes ------------------------------------------------------------
    def add_instance(self, extracted: Extracted, stored: StoredFile, *, origin: str,
                     calling_ae: str = "", before_commit: Callable[[], None] | None = None,
                     institution: int | None = None, institution_name: str = "",
                     binding: object = LOOK_UP) -> None:
        """Insert the instance and create or update its patient, study and series.

        ``before_commit`` runs inside the transaction after the inserts: the file must
        be durable by then (the ingest fsyncs it before, so this only checks, and a
        pool's fsync may still be under way), and an exception from it rolls the
        instance back. Concurrent stores share
        the transaction and its commit (archive/commits.py). Retries (lock waits,
        races with concurrent stores) stop at ``lock_timeout`` in total:
        IndexUnavailable. ``binding``: the institution the calling AE is bound to
        (None: unbound), when the caller already knows it (once per association)."""
        sop_instance_uid = str(extracted.values[Level.IMAGE].get("sop_instance_uid"))

        def work() -> None:     # in a savepoint of the shared transaction
            try:
                self._add(extracted, stored, origin, calling_ae, institution, institution_name, binding)
            except peewee.IntegrityError as exc:
                if Instance.select(Instance.id).where(Instance.sop_instance_uid == sop_instance_uid).exists():
                    raise InstanceExists(str(exc)) from exc
                # Another process created the same patient, study or series first;
                # the next transaction finds the row.
                raise RetryLater(str(exc)) from exc

        self.commits.run(work, before_commit, time.monotonic() + self.lock_timeout)

    def add_batch(self, items: list[tuple[Extracted, StoredFile]], *, origin: str,
                  calling_ae: str = "") -> None:
        """Index many instances in one transaction, through the same statements as
        ``add_instance`` (an import, or a benchmark filling an index of a million rows).
        No retries: a conflict fails the whole batch, which the caller may repeat."""
        with self.write():
            for extracted, stored in items:
                self._add(extracted, stored, origin, calling_ae)

    def replace_instance(self, existing: Instance, extracted: Extracted, stored: StoredFile, *,
                         origin: str, calling_ae: str = "") -> str:
        """Overwrite policy: drop the old row and add the new one in one transaction.
        Returns the old file's path, which the caller removes after the commit."""
        with self.write():
            old = Instance.get_by_id(existing.id)
            self._forget(old)
            self._add(extracted, stored, origin, calling_ae)
            return old.path

    def repair_instance(self, existing: Instance, relpath: str) -> str:
        """An identical resend took the place of a damaged file: the row points at the
        new file, which was hashed while written (so it counts as verified now), and is
        served again. Returns the damaged file's path, which the caller removes after the
        commit. IndexUnavailable when the row changed since ``existing`` was read."""
        with self.write():
            changed = (Instance.update(path=relpath, corrupt=False, corrupt_reason="",
                                       verified_at=utcnow())
                       .where((Instance.id == existing.id) & (Instance.path == existing.path)
                              & (Instance.sha256 == existing.sha256))
                       .execute())
            if not changed:
                raise IndexUnavailable("instance changed during store")
        return existing.path

    def add_quarantine(self, *, sop_instance_uid: str, sop_class_uid: str, path: str, reason: str,
                       size: int, sha256: str, calling_ae: str, origin: str) -> None:
        with self.write():
            Quarantine.create(sop_instance_uid=sop_instance_uid[:64], sop_class_uid=sop_class_uid[:64],
                              path=path, reason=reason[:255], size=size, sha256=sha256,
                              calling_ae=calling_ae[:16], origin=origin)

    # --- internals (inside a write transaction) ----------------------------
    def _locked(self, query: peewee.ModelSelect) -> peewee.ModelSelect:
        return query.for_update() if self._mysql else query

    def _fetch(self, sql: str, columns: tuple[str, ...], key: object) -> dict[str, object] | None:
        row = self.db.execute_sql(sql, [key]).fetchone()
        return dict(zip(columns, row)) if row else None

    def _add(self, extracted: Extracted, stored: StoredFile, origin: str, calling_ae: str,
             institution: int | None = None, institution_name: str = "",
             binding: object = LOOK_UP) -> None:
        sql, values, now = self._sql, extracted.values, utcnow()
        study_values = values[Level.STUDY]
        study = self._fetch(sql.study_select, sql.study_columns, study_values["study_instance_uid"])
        if study is None:
            patient = self._patient(values[Level.PATIENT])
            # A new study's institution is decided once, in this transaction; later
            # instances join the study where it is (an admin may move it).
            if institution is None:
                institution = (placement(calling_ae, institution_name) if binding is LOOK_UP
                               else placement(calling_ae, institution_name, binding))
            study_id = Study.insert(patient=patient, created_at=now, updated_at=now,
                                    institution=institution, **study_values).execute()
        else:
            if institution is None and origin == "dicom":
                # A modality bound to an institution adds to its own institution's studies
                # only: institutions share the archive without mixing.
                institution = ae_binding(calling_ae) if binding is LOOK_UP else binding
            if institution is not None and study["institution"] != institution:
                # Nor can a sender that names its institution (STOW-RS).
                raise StudyElsewhere(str(study_values["study_instance_uid"]))
            study_id = study["id"]
            self._fill_blanks(Study, study, study_values)

        series_values = values[Level.SERIES]
        series = self._fetch(sql.series_select, sql.series_columns, series_values["series_instance_uid"])
        new_series = series is None
        if new_series:
            series_id = Series.insert(study=study_id, created_at=now, updated_at=now,
                                      **series_values).execute()
        else:
            series_id = series["id"]
            self._fill_blanks(Series, series, series_values)
            if series["study_id"] != study_id:
                log.warning("series %s already belongs to another study; indexed there",
                            series_values["series_instance_uid"])
                study_id = series["study_id"]

        instance_values = dict(values[Level.IMAGE], series_id=series_id, path=stored.path,
                               size=stored.size, sha256=stored.sha256,
                               dataset_offset=stored.dataset_offset,
                               transfer_syntax_uid=stored.transfer_syntax_uid, received_at=now,
                               calling_ae=calling_ae[:16], origin=origin)
        self.db.execute_sql(sql.instance_insert, sql.instance_params(instance_values))
        when = Series.updated_at.db_value(now)
        self.db.execute_sql(sql.series_bump, [when, series_id])
        self.db.execute_sql(sql.study_bump, [1 if new_series else 0, when, study_id])
        if new_series:
            Study.update(modalities_in_study=self._modalities(study_id)).where(Study.id == study_id).execute()

    def _patient(self, patient_values: dict[str, object]) -> Patient:
        key = patient_key(patient_values)
        patient = Patient.get_or_none(Patient.patient_key == key)
        if patient is None:
            patient = Patient.create(patient_key=key, **patient_values)
        return patient

    @staticmethod
    def _fill_blanks(model: type[peewee.Model], row: dict[str, object], values: dict[str, object]) -> None:
        """Later instances may carry attributes the first one lacked; keep the first
        non-empty value of each."""
        changes = {name: value for name, value in values.items()
                   if value not in (None, "") and row.get(name) in (None, "")}
        if changes:
            model.update(changes).where(model.id == row["id"]).execute()

    @staticmethod
    def _modalities(study_id: int) -> str:
        rows = (Series.select(Series.modality).distinct()
                .where((Series.study == study_id) & (Series.modality != "")))
        return "\\".join(sorted({r.modality for r in rows}))[:256]

    def _forget(self, instance: Instance) -> None:
        series = Series.get_by_id(instance.series_id)
        instance.delete_instance()
        Series.update(number_of_series_related_instances=Series.number_of_series_related_instances - 1
                      ).where(Series.id == series.id).execute()
        Study.update(number_of_study_related_instances=Study.number_of_study_related_instances - 1
                     ).where(Study.id == series.study_id).execute()
