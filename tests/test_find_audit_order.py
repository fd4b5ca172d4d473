"""A C-FIND's audit record is durable before anything of its answer leaves
(dicom/find.py, dicom/auditing.py). The record is written on another thread while
the first matches are read; when it cannot be written, the peer gets 0xA700 and no
match, though the search itself would have found one. The index refuses the record
for real: a trigger on the audit table, in SQLite and in MariaDB."""
from __future__ import annotations

import sqlite3
from contextlib import closing

from dsmpacs.archive import Archive
from dsmpacs.archive.models import AuditEvent
from dsmpacs.settings import Settings
from tests import factories as f
from tests.findscu import findscu, register
from tests.peers import mariadb_connection

REFUSAL = "audit refused by the test"


def _execute(database_url: str, statement: str) -> None:
    if database_url.startswith("sqlite:///"):
        with closing(sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=30)) as db:
            db.execute(statement)
            db.commit()
        return
    with closing(mariadb_connection(database=database_url.rsplit("/", 1)[1])) as db, db.cursor() as cur:
        cur.execute(statement)


def refuse_audit_records(database_url: str) -> None:
    if database_url.startswith("sqlite:///"):
        _execute(database_url, "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_event "
                               f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END")
    else:
        _execute(database_url, "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_event FOR EACH ROW "
                               f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{REFUSAL}'")


def searches_recorded(server, database_url: str, patient_id: str) -> int:
    settings = Settings.load(data_dir=server.data_dir, env={}, overrides={"database_url": database_url})
    archive = Archive(settings)
    archive.open()
    try:
        with archive.index.read():
            return (AuditEvent.select()
                    .where(AuditEvent.calling_ae == "FINDSCU", AuditEvent.detail.contains(patient_id))
                    .count())
    finally:
        archive.close()


def test_no_match_leaves_before_the_query_is_recorded(server_factory, database_url, tmp_path):
    server = server_factory(database_url=database_url)
    ds = f.secondary_capture(patient=f.Patient(name="AUDIT^ORDER", patient_id="PAT-AUDIT-ORDER"))
    assert server.storescu(f.write(ds, tmp_path / "one.dcm")).returncode == 0
    register(server, "workstation", "FINDSCU")
    keys = ["QueryRetrieveLevel=STUDY", "PatientID=PAT-AUDIT-ORDER", "StudyInstanceUID"]

    refuse_audit_records(database_url)
    try:
        refused = findscu(server.port, keys, tmp_path / "refused")
    finally:
        _execute(database_url, "DROP TRIGGER refuse_audit")
    assert refused.responses == [] and refused.pending == [], refused.output[-2000:]
    assert refused.final == "Refused: OutOfResources"       # 0xA700
    assert searches_recorded(server, database_url, "PAT-AUDIT-ORDER") == 0
    assert server.logged("cannot be audited")

    found = findscu(server.port, keys, tmp_path / "found")
    assert found.final == "Success"
    assert found.values("StudyInstanceUID") == [str(ds.StudyInstanceUID)]
    assert searches_recorded(server, database_url, "PAT-AUDIT-ORDER") == 1
