"""Version 8: patients carry the pinyin of a Chinese name and its initials
(``patient_name_pinyin``, ``patient_name_initials``; archive/names) so the study list
finds 王^小明 when a reader types ``wang xiaoming`` or ``wxm``. The columns are added
with their database default (no table rebuild) and indexed, then filled for the
existing patients from their stored names, in batches: only names with Chinese
characters get a value."""
from __future__ import annotations

import peewee
from playhouse.migrate import MySQLMigrator, SqliteMigrator, migrate

from dsmpacs.archive.database import is_mysql
from dsmpacs.archive.migrations import missing_columns, missing_indexes
from dsmpacs.archive.models import Patient, pinyin_columns
from dsmpacs.archive.names import initials_search_form, pinyin_search_form

BATCH = 1000
INDEXES = ("patient_patient_name_pinyin", "patient_patient_name_initials")


def up(db: peewee.Database) -> None:
    migrator = MySQLMigrator(db) if is_mysql(db) else SqliteMigrator(db)
    columns = pinyin_columns()
    migrate(*(migrator.add_column("patient", name, columns[name], allow_not_null=True)
              for name in missing_columns(db, "patient", columns)))
    migrate(*(migrator.add_index("patient", (name.removeprefix("patient_"),), False)
              for name in missing_indexes(db, "patient", INDEXES)))
    fill(db)


def fill(db: peewee.Database) -> int:
    """Compute the pinyin of every patient name that has none yet; returns how many
    were set. Runs again safely over what an interrupted run did."""
    done, last = 0, 0
    while True:
        rows = list(Patient.select(Patient.id, Patient.patient_name)
                    .where((Patient.id > last) & (Patient.patient_name_pinyin == ""))
                    .order_by(Patient.id).limit(BATCH).tuples())
        if not rows:
            return done
        last = rows[-1][0]
        for row_id, name in rows:
            form = pinyin_search_form(name or "")
            if form:
                Patient.update(patient_name_pinyin=form, patient_name_initials=initials_search_form(name)
                               ).where(Patient.id == row_id).execute()
                done += 1
