"""The access policy applied by the running archive: at association time, on
C-STORE and on C-FIND, with dcmtk tools as the peers. The registry is edited
with `dsmpacs ae` while the server runs, as the web UI will."""
from __future__ import annotations

import re

from dsmpacs.archive import Archive
from dsmpacs.settings import Settings
from tests import factories as f
from tests.findscu import findscu, register, unregister
from tests.peers import dcmtk

STUDY_QUERY = ["QueryRetrieveLevel=STUDY", "PatientName", "StudyInstanceUID"]


def stored(server, sop_instance_uid: str) -> bool:
    settings = Settings.load(data_dir=server.data_dir, env={}, overrides=dict(server.sets))
    archive = Archive(settings)
    archive.open()
    try:
        return archive.index.find_instance(sop_instance_uid) is not None
    finally:
        archive.close()


def store_as(server, path, calling_ae: str):
    return dcmtk("storescu", "-v", "-aet", calling_ae, "-aec", server.ae_title, "127.0.0.1",
                 str(server.port), str(path))


def store_status(done) -> str:
    found = re.search(r"Received Store Response \(([^)]*)\)", done.stdout + done.stderr)
    assert found, done.stdout + done.stderr
    return found.group(1)


def test_unknown_ae_may_store_but_not_find(server, tmp_path):
    path = f.write(f.secondary_capture(), tmp_path / "sc.dcm")
    done = store_as(server, path, "STRANGER")
    assert store_status(done) == "Success", done.stderr
    assert stored(server, f.read_uid(path))

    refused = findscu(server.port, STUDY_QUERY, tmp_path / "rsp", calling_ae="STRANGER")
    assert refused.responses == []
    assert "0x124" in refused.final                    # Refused: Not authorized
    assert server.logged(re.compile(r"C-FIND refused for STRANGER \(127\.0\.0\.1:\d+\)"))

    # registered while the server runs: the next query is allowed
    register(server, "stranger", "STRANGER")
    allowed = findscu(server.port, STUDY_QUERY, tmp_path / "rsp", calling_ae="STRANGER")
    assert allowed.final == "Success" and len(allowed.responses) == 1


def test_registered_ae_permissions_are_read_at_request_time(server, tmp_path):
    register(server, "viewer", "VIEWER", "--no-find", "--no-store")
    path = f.write(f.secondary_capture(), tmp_path / "sc.dcm")
    done = store_as(server, path, "VIEWER")
    assert store_status(done) == "Unknown Status: 0x124"        # 0x0124 Refused: Not authorized
    assert not stored(server, f.read_uid(path))
    assert server.logged(re.compile(r"refused \S+ from VIEWER \(127\.0\.0\.1:\d+\)"))
    assert "0x124" in findscu(server.port, STUDY_QUERY, tmp_path / "rsp", calling_ae="VIEWER").final

    unregister(server, "viewer")
    register(server, "viewer", "VIEWER")
    assert store_status(store_as(server, path, "VIEWER")) == "Success"
    assert stored(server, f.read_uid(path))
    assert findscu(server.port, STUDY_QUERY, tmp_path / "rsp", calling_ae="VIEWER").final == "Success"


def test_unknown_ae_store_refused_when_disabled(server_factory, database_url, tmp_path):
    server = server_factory(database_url=database_url, unknown_ae_may_store=False)
    path = f.write(f.secondary_capture(), tmp_path / "sc.dcm")
    done = store_as(server, path, "STRANGER")
    assert store_status(done) == "Unknown Status: 0x124"
    assert not stored(server, f.read_uid(path))
    assert server.echoscu().returncode == 0            # echo is still allowed


def test_strict_mode_rejects_unknown_calling_ae_at_association(server_factory, database_url):
    server = server_factory(database_url=database_url, strict_ae_check=True)
    done = dcmtk("echoscu", "-aet", "STRANGER", "-aec", server.ae_title, "127.0.0.1", str(server.port))
    assert done.returncode != 0
    assert "Calling AE Title Not Recognized" in done.stdout + done.stderr
    assert server.logged(re.compile(
        r"association from STRANGER \(127\.0\.0\.1:\d+\) to DSMPACS rejected: .*not registered"))
    register(server, "modality", "MODALITY")
    assert dcmtk("echoscu", "-aet", "MODALITY", "-aec", server.ae_title, "127.0.0.1",
                 str(server.port)).returncode == 0
    assert server.alive()


def test_called_ae_title_check(server_factory, database_url):
    server = server_factory(database_url=database_url, check_called_ae=True)
    done = dcmtk("echoscu", "-aec", "NOTME", "127.0.0.1", str(server.port))
    assert done.returncode != 0
    assert "Called AE Title Not Recognized" in done.stdout + done.stderr
    assert server.logged(re.compile(r"association from ECHOSCU \(127\.0\.0\.1:\d+\) to NOTME rejected"))
    assert server.echoscu().returncode == 0


def test_any_called_ae_title_is_accepted_without_the_check(server):
    assert dcmtk("echoscu", "-aec", "NOTME", "127.0.0.1", str(server.port)).returncode == 0
