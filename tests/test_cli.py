"""The administrator's commands: import, verify, reindex, db, through click's runner."""
from __future__ import annotations

import shutil
import sqlite3
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from dsmpacs.archive import Archive
from dsmpacs.archive.audit import AuditTrail
from dsmpacs.archive.migrations import LATEST_VERSION
from dsmpacs.cli import main
from tests import factories as f
from tests.peers import dcmtk


def run(settings, *args, input=None):
    result = CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), "--set",
                                       f"database_url={settings.effective_database_url}", *args],
                                input=input, catch_exceptions=False)
    return result


@pytest.fixture
def corpus(tmp_path):
    """A folder with nested files, a non-DICOM file, and a zip holding more instances."""
    folder = tmp_path / "cd"
    study = "1.2.826.0.1.3680043.10.7.1"
    files = [f.write(f.secondary_capture(study_uid=study, instance_number=i), folder / "a" / f"{i}.dcm")
             for i in range(3)]
    files.append(f.write(f.csa_non_image(study_uid=study), folder / "b" / "csa"))
    (folder / "notes.txt").write_text("not DICOM")
    zipped = tmp_path / "more.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        for i in range(2):
            src = f.write(f.secondary_capture(study_uid=study), tmp_path / "z" / f"{i}.dcm")
            z.write(src, f"IMG/{i}.dcm")
    return folder, zipped, files


def test_import_folder_and_zip_counts(settings, corpus):
    folder, zipped, files = corpus
    first = run(settings, "import", str(folder), str(zipped))
    assert "stored 6, duplicates 0, rejected 1" in first.output
    assert "notes.txt" in first.output and first.exit_code == 2     # the text file is rejected
    again = run(settings, "import", str(folder))
    assert "stored 0, duplicates 4, rejected 1" in again.output


def test_import_dicomdir_media(settings, tmp_path):
    media = tmp_path / "media"
    names = []
    for i in range(3):
        name = f"IMG{i:05d}"
        f.write(f.ct_slice(size=64, instance_number=i), media / "DICOM" / name)
        names.append(f"DICOM/{name}")
    made = dcmtk("dcmmkdir", "+r", "-Pgp", "--invent", "+id", str(media), "+D", str(media / "DICOMDIR"),
                 *names, timeout=60, cwd=media)   # dcmmkdir leaves a DICOMDIR in its working directory
    assert made.returncode == 0, made.stderr
    assert (media / "DICOMDIR").exists()
    result = run(settings, "import", str(media / "DICOMDIR"))
    assert "stored 3, duplicates 0, rejected 0" in result.output, result.output


def test_verify_reports_altered_and_missing_files(settings, corpus):
    folder, _, _ = corpus
    run(settings, "import", str(folder))
    ok = run(settings, "verify")
    assert ok.exit_code == 0 and "checked 4, missing 0, mismatched 0" in ok.output
    stored = sorted(Path(settings.effective_storage_root).glob("[0-9]*/*/*/*.dcm"))
    with open(stored[0], "r+b") as fh:
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 0xFF]))              # one bit of pixel data flipped
    stored[1].unlink()
    bad = run(settings, "verify")
    assert bad.exit_code == 1
    assert "missing 1, mismatched 1" in bad.output


def test_reindex_rebuilds_the_index_from_files(settings, corpus, archive):
    folder, _, _ = corpus
    run(settings, "import", str(folder))
    before = {(r.sop_instance_uid, r.path, r.sha256) for r in archive.index.iter_instances()}
    # lose the index rows entirely, then rebuild from the files alone
    result = run(settings, "reindex", "--yes")
    assert "indexed 4, unreadable 0" in result.output
    after = {(r.sop_instance_uid, r.path, r.sha256) for r in archive.index.iter_instances()}
    assert after == before
    assert run(settings, "verify").exit_code == 0


def test_db_check_upgrade_and_backup(settings, corpus, tmp_path):
    folder, _, _ = corpus
    assert f"version 0 -> {LATEST_VERSION}" in run(settings, "db", "upgrade").output
    assert "up to date" in run(settings, "db", "upgrade").output
    run(settings, "import", str(folder))
    check = run(settings, "db", "check")
    assert check.exit_code == 0 and "4 instances" in check.output
    out = tmp_path / "backup.out"
    backup = run(settings, "db", "backup", "-o", str(out))
    assert backup.exit_code == 0, backup.output
    if settings.effective_database_url.startswith("sqlite"):
        with sqlite3.connect(out) as conn:
            assert conn.execute("select count(*) from instance").fetchone()[0] == 4
    else:
        text = out.read_text()
        assert "CREATE TABLE `instance`" in text and text.count("INSERT INTO `instance`") >= 1
    # the administrative commands are in the audit trail, with who ran them
    archive = Archive(settings)
    try:
        actions = [e.action for e in AuditTrail(archive.index).recent()]
        assert actions[:2] == ["db-backup", "import"] and actions[-1] == "db-upgrade"
        assert all(e.actor.startswith("cli") for e in AuditTrail(archive.index).recent())
    finally:
        archive.close()


def test_echo_and_send_against_a_running_archive(server, tmp_path):
    target = f"DSMPACS@127.0.0.1:{server.port}"
    runner = CliRunner()
    echo = runner.invoke(main, ["--data-dir", str(tmp_path / "cli"), "echo", target])
    assert echo.exit_code == 0 and "status 0x0000" in echo.output
    paths = [f.write(f.secondary_capture(), tmp_path / "out" / f"{i}.dcm") for i in range(3)]
    shutil.copy(f.write(f.jpeg_baseline(), tmp_path / "j.dcm"), tmp_path / "out" / "j.dcm")
    sent = runner.invoke(main, ["--data-dir", str(tmp_path / "cli"), "send", target, str(tmp_path / "out")])
    assert sent.exit_code == 0, sent.output
    assert "sent 4, failed 0" in sent.output
    assert len(list(server.storage.glob("[0-9]*/*/*/*.dcm"))) == 4
    assert len(paths) == 3
