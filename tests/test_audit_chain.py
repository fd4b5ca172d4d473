"""The audit chain on SQLite and MariaDB: tampering done with SQL behind the archive's
back is found by `dsmpacs audit verify` (a real CLI process) at the right record;
concurrent appends from two processes keep one chain; an index of the previous
schema version is upgraded with its old records marked as predating the chain;
pruning keeps the rest verifiable; the key file stays outside the index."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from datetime import timedelta

import pytest

from dsmpacs.archive import database
from dsmpacs.archive.audit import AuditAction, AuditTrail
from dsmpacs.archive.models import AuditEvent, SchemaVersion, utcnow
from tests.peers import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLUMNS = ("seq", "at", "actor", "role", "action", "event", "outcome", "study_instance_uid", "patient_id",
           "patient_name", "calling_ae", "called_ae", "detail", "address", "key_id", "mac")


def cli(settings, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    """`dsmpacs ...` as its own process, on the test's data directory and database."""
    env = dict(os.environ)
    env.pop("DSMPACS_DATA_DIR", None)
    return subprocess.run([sys.executable, "-m", "dsmpacs", "--data-dir", str(settings.data_dir), "--set",
                           f"database_url={settings.effective_database_url}", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def sql(archive, text: str, *params) -> None:
    """Raw SQL on the index, the way someone with database access would edit it."""
    with archive.index.write():
        archive.db.execute_sql(text.replace("?", archive.db.param), params)


def row(archive, seq: int) -> dict:
    with archive.index.read():
        return AuditEvent.select(*[getattr(AuditEvent, c) for c in COLUMNS]).where(
            AuditEvent.seq == seq).dicts().get()


def reinsert(archive, saved: dict) -> None:
    with archive.index.write():
        AuditEvent.insert(**saved).execute()


def fill(trail: AuditTrail, n: int) -> None:
    for i in range(n):
        trail.record("rad1", AuditAction.SEARCH, role="radiologist", patient_id=f"PAT{i}",
                     patient_name=f"DOE^{i}", address="10.0.0.5", detail=f"search {i}")


def swap(archive, a: int, b: int) -> None:
    sql(archive, "UPDATE audit_event SET seq = ? WHERE seq = ?", -1, a)
    sql(archive, "UPDATE audit_event SET seq = ? WHERE seq = ?", a, b)
    sql(archive, "UPDATE audit_event SET seq = ? WHERE seq = ?", b, -1)


def verify_fails_at(settings, seq: int, words: str) -> None:
    done = cli(settings, "audit", "verify")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"BROKEN at record {seq}:" in done.stdout and words in done.stdout, done.stdout


@pytest.mark.slow
def test_cli_verify_finds_edited_deleted_reordered_and_truncated_records(settings, archive):
    trail = AuditTrail.of(archive)
    fill(trail, 10)
    intact = cli(settings, "audit", "verify")
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "audit trail intact: 10 records (1 to 10)" in intact.stdout
    # the verification is itself a record (11), chained like any other
    assert trail.recent(limit=1)[0].action == "audit-verify"

    # edited: one character of the patient ID of record 3
    sql(archive, "UPDATE audit_event SET patient_id = ? WHERE seq = ?", "PAT9", 3)
    verify_fails_at(settings, 3, "does not match")
    sql(archive, "UPDATE audit_event SET patient_id = ? WHERE seq = ?", "PAT2", 3)
    assert trail.verify().ok

    # deleted: record 7 removed
    saved = row(archive, 7)
    sql(archive, "DELETE FROM audit_event WHERE seq = ?", 7)
    verify_fails_at(settings, 7, "record 7 is missing")
    reinsert(archive, saved)
    assert trail.verify().ok

    # reordered: records 5 and 6 exchange places
    swap(archive, 5, 6)
    verify_fails_at(settings, 5, "written as record 6 (reordered)")
    swap(archive, 5, 6)
    assert trail.verify().ok

    # truncated: the newest records deleted (nothing after them to notice, but the
    # position verified last is remembered outside the index)
    with archive.index.read():
        last = AuditEvent.select().order_by(AuditEvent.seq.desc()).first().seq
    sql(archive, "DELETE FROM audit_event WHERE seq >= ?", last - 2)
    verify_fails_at(settings, last - 2, "missing")


def test_the_key_lives_outside_the_index_and_is_private(settings, archive):
    trail = AuditTrail.of(archive)
    fill(trail, 2)
    key_file = settings.data_dir / "audit.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    secret = key_file.read_text().split()[-1]
    with archive.index.read():
        stored = " ".join(str(v) for r in AuditEvent.select().dicts() for v in r.values())
    assert secret not in stored
    # a forger who can write SQL but not read the key cannot re-sign an edit
    other = settings.data_dir / "forger.key"
    from dsmpacs.archive.auditchain import ChainKeys
    forged = ChainKeys(other)
    record = row(archive, 2)
    record["detail"] = "nothing happened"
    record["key_id"] = forged.current()[0]
    record["mac"] = forged.mac(row(archive, 1)["mac"], record)
    sql(archive, "UPDATE audit_event SET detail = ?, key_id = ?, mac = ? WHERE seq = ?",
        record["detail"], record["key_id"], record["mac"], 2)
    result = trail.verify()
    assert not result.ok and result.broken_at == 2 and result.problem == "unknown-key"


@pytest.mark.slow
def test_rotated_key_signs_new_records_and_old_ones_still_verify(settings, archive):
    trail = AuditTrail.of(archive)
    fill(trail, 3)
    old_key = row(archive, 1)["key_id"]
    done = cli(settings, "audit", "rotate-key")
    assert done.returncode == 0, done.stderr
    fill(trail, 2)
    assert row(archive, 6)["key_id"] != old_key
    assert row(archive, 4)["action"] == "audit-key-rotate"
    assert trail.verify().ok


_APPENDER = """
import sys, time
from pathlib import Path
from dsmpacs.settings import Settings
from dsmpacs.app import build_archive
from dsmpacs.archive.audit import AuditAction, AuditTrail
data_dir, url, name, other, count, go = sys.argv[1:7]
archive = build_archive(Settings.load(data_dir=data_dir, env={}, overrides={"database_url": url}))
trail = AuditTrail.of(archive)
Path(go + "." + name).touch()
while not Path(go).exists():
    time.sleep(0.01)
# Keep appending until the other process has appended half as many: the two really
# race for the same sequence numbers, however the scheduler starts them.
i = 0
deadline = time.monotonic() + 240
while (i < int(count) or trail.count(actor=other) < int(count) // 2) and time.monotonic() < deadline:
    trail.record(name, AuditAction.SEARCH, patient_id=f"{name}-{i}")
    i += 1
archive.close()
"""


def test_two_processes_appending_at_once_keep_one_chain(settings, archive, tmp_path):
    trail = AuditTrail.of(archive)
    fill(trail, 1)                         # the key file exists before the race
    go = tmp_path / "go"
    count = 60
    procs = [subprocess.Popen([sys.executable, "-c", _APPENDER, str(settings.data_dir),
                               settings.effective_database_url, name, other, str(count), str(go)], cwd=ROOT)
             for name, other in (("dicomd", "webd"), ("webd", "dicomd"))]
    wait_until(lambda: all((tmp_path / f"go.{n}").exists() for n in ("dicomd", "webd")), 60, "appenders ready")
    go.touch()
    for proc in procs:
        assert proc.wait(timeout=300) == 0
    result = trail.verify()
    assert result.ok, result.message
    written = trail.count(actor="dicomd") + trail.count(actor="webd")
    assert trail.count(actor="dicomd") >= count and trail.count(actor="webd") >= count
    assert result.checked == 1 + written and result.last_seq == 1 + written
    # both really ran at the same time: their records interleave
    actors = [e.actor for e in reversed(trail.recent(limit=written))]
    switches = sum(1 for a, b in zip(actors, actors[1:]) if a != b)
    assert switches >= 2, actors


def test_pruning_is_recorded_and_the_rest_still_verifies(settings, archive, monkeypatch):
    import dsmpacs.archive.audit as audit_module

    trail = AuditTrail.of(archive)
    then = utcnow() - timedelta(days=40)
    monkeypatch.setattr(audit_module, "utcnow", lambda: then)
    fill(trail, 5)
    monkeypatch.undo()
    fill(trail, 3)
    assert trail.prune(30) == 5
    assert trail.prune(30) == 0
    result = trail.verify()
    assert result.ok, result.message
    assert (result.first_seq, result.last_seq, result.checked) == (6, 9, 4)
    newest = trail.recent(limit=1)[0]
    assert newest.action == "audit-prune" and newest.detail.startswith("pruned through record 5,")
    # without the pruning record nothing accounts for records 1-5
    sql(archive, "DELETE FROM audit_event WHERE seq = ?", 9)
    result = trail.verify()
    assert not result.ok and result.broken_at == 1 and result.problem == "missing"


V1_AUDIT_DDL = {
    "sqlite": "CREATE TABLE audit_event (id INTEGER NOT NULL PRIMARY KEY, at DATETIME NOT NULL, "
              "actor VARCHAR(64) NOT NULL, action VARCHAR(32) NOT NULL, outcome VARCHAR(16) NOT NULL, "
              "study_instance_uid VARCHAR(64) NOT NULL, detail VARCHAR(1024) NOT NULL, "
              "address VARCHAR(64) NOT NULL)",
    "mysql": "CREATE TABLE audit_event (id INTEGER AUTO_INCREMENT NOT NULL PRIMARY KEY, at DATETIME NOT NULL, "
             "actor VARCHAR(64) NOT NULL, action VARCHAR(32) NOT NULL, outcome VARCHAR(16) NOT NULL, "
             "study_instance_uid VARCHAR(64) NOT NULL, detail VARCHAR(1024) NOT NULL, "
             "address VARCHAR(64) NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
}


def test_upgrade_from_version_1_marks_where_the_chain_starts(settings, archive):
    # Make the index a version-1 index: its audit table as released, three records in it.
    kind = "mysql" if database.is_mysql(archive.db) else "sqlite"
    sql(archive, "DROP TABLE audit_event")
    sql(archive, V1_AUDIT_DDL[kind])
    for i in range(3):
        sql(archive, "INSERT INTO audit_event (at, actor, action, outcome, study_instance_uid, detail, address) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)", utcnow(), "old", "view", "ok", f"1.2.{i}", "", "10.0.0.1")
    with archive.index.write():
        SchemaVersion.delete().execute()
        SchemaVersion.create(version=1)

    assert database.upgrade(archive.db) == (1, database.LATEST_VERSION)
    trail = AuditTrail.of(archive)
    assert [e.seq for e in trail.recent(actor="old")] == [3, 2, 1]
    fill(trail, 2)
    result = trail.verify()
    assert result.ok, result.message
    assert (result.unchained, result.chain_start, result.last_seq) == (3, 4, 5)
    done = cli(settings, "audit", "verify")
    assert done.returncode == 0 and "the chain starts at record 4" in done.stdout, done.stdout
    # a record inside the chain cannot be passed off as one from before it
    sql(archive, "UPDATE audit_event SET mac = ?, key_id = ? WHERE seq = ?", "", "", 5)
    result = trail.verify()
    assert not result.ok and result.broken_at == 5 and result.problem == "unchained"


def test_verify_exits_zero_on_an_empty_trail_and_page_status_is_incremental(settings, archive):
    trail = AuditTrail.of(archive)
    done = cli(settings, "audit", "verify")
    assert done.returncode == 0 and "intact: 0 records" in done.stdout, done.stdout + done.stderr
    fill(trail, 30)
    assert trail.status(max_rows=1000).ok                 # short trail: walked whole
    start = time.monotonic()
    fill(trail, 5)
    quick = trail.status(max_rows=10)                     # long trail: only the new records
    assert quick.ok and quick.partial and quick.checked == 5, quick
    assert time.monotonic() - start < 30
    # an edit of an old record is beyond the quick check, but the next full walk finds it
    # and from then on the page reports it too
    sql(archive, "UPDATE audit_event SET detail = ? WHERE seq = ?", "x", 2)
    assert not trail.verify().ok
    shown = trail.status(max_rows=10)
    assert not shown.ok and shown.broken_at == 2
