"""Query/retrieve both ways with Orthanc (Debian package) as the other archive:
Orthanc pulls a study from this archive by C-MOVE, and this archive pulls a
study from Orthanc with `dsmpacs retrieve` (C-MOVE with the daemon running,
C-MOVE through the temporary listener, and C-GET)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom import dcmread

from dsmpacs.archive.retrieve import RetrieveKeys, select_instances
from tests import factories as f
from tests.orthanc import Orthanc, orthanc_available
from tests.peers import free_port, require
from tests.retrieval import open_archive_at, register, run_cli

STUDY = "1.2.826.0.1.3680043.8.498.3001"


@pytest.fixture
def study_files(tmp_path):
    p = f.Patient("CHEN^JING", "PID-ORTH")
    files = [f.write(f.xa_run(frames=4, size=64, patient=p, study_uid=STUDY, instance_number=n),
                     tmp_path / "src" / f"xa{n}.dcm") for n in (1, 2)]
    files.append(f.write(f.ct_slice(size=64, patient=p, study_uid=STUDY, series_number=2),
                         tmp_path / "src" / "ct.dcm"))
    return files


def start_orthanc(tmp_path, modalities) -> Orthanc:
    require(orthanc_available(), "Orthanc not installed (apt-get install orthanc)")
    return Orthanc(tmp_path / "orthanc", modalities=modalities).start()


def same_instance(received: bytes | object, original) -> None:
    """Orthanc re-serialises what it stores with dcmtk, so compare content, not bytes."""
    a = dcmread(io.BytesIO(received) if isinstance(received, bytes) else received)
    b = dcmread(original)
    assert a.SOPInstanceUID == b.SOPInstanceUID and a.SOPClassUID == b.SOPClassUID
    assert a.PatientName == b.PatientName and a.StudyInstanceUID == b.StudyInstanceUID
    assert np.array_equal(a.pixel_array, b.pixel_array)


def test_orthanc_pulls_a_study_by_c_move(server, study_files, tmp_path):
    assert server.storescu(*study_files).returncode == 0
    orthanc = start_orthanc(tmp_path, {"dsmpacs": (server.ae_title, "127.0.0.1", server.port)})
    try:
        register(server, "orthanc", orthanc.ae_title, orthanc.dicom_port, may_retrieve=True)
        try:
            orthanc.post("/modalities/dsmpacs/move", {
                "Level": "Study", "Resources": [{"StudyInstanceUID": STUDY}],
                "TargetAet": orthanc.ae_title, "Synchronous": True})
        except OSError as exc:
            raise AssertionError(f"Orthanc's C-MOVE failed: {exc}\n{diagnostics(server, orthanc)}") from exc
        instances = orthanc.get("/instances")
        assert len(instances) == len(study_files), diagnostics(server, orthanc)
        by_uid = {}
        for oid in instances:
            tags = orthanc.get(f"/instances/{oid}/simplified-tags")
            by_uid[tags["SOPInstanceUID"]] = orthanc.request("GET", f"/instances/{oid}/file")
        for original in study_files:
            same_instance(by_uid[f.read_uid(original)], original)
    finally:
        orthanc.stop()
    assert server.logged(f"C-MOVE from {orthanc.ae_title}")


def diagnostics(server, orthanc: Orthanc) -> str:
    """What to read when an interoperability test fails."""
    orthanc_log = (orthanc.workdir / "orthanc.log").read_text(errors="replace")[-3000:]
    ours = "\n".join(line for line in server.log().splitlines() if "pynetdicom" not in line)[-3000:]
    return f"--- archive log ---\n{ours}\n--- Orthanc log ---\n{orthanc_log}"


def upload(orthanc: Orthanc, files) -> None:
    for path in files:
        orthanc.upload(path)
    assert len(orthanc.get("/instances")) == len(files)


def held(data_dir, sets) -> list:
    arc = open_archive_at(data_dir, sets)
    try:
        return select_instances(arc.index, RetrieveKeys.study(STUDY))
    finally:
        arc.close()


def check_archived(data_dir, sets, study_files) -> None:
    rows = {r.sop_instance_uid: r for r in held(data_dir, sets)}
    assert sorted(rows) == sorted(f.read_uid(p) for p in study_files)
    storage = data_dir / "storage"
    for original in study_files:
        same_instance(storage / rows[f.read_uid(original)].path, original)


def test_retrieve_from_orthanc_into_the_running_daemon(server, study_files, tmp_path):
    orthanc = start_orthanc(tmp_path, {"dsmpacs": (server.ae_title, "127.0.0.1", server.port)})
    try:
        upload(orthanc, study_files)
        # the daemon listens on an ephemeral port in tests; tell the command which
        done = run_cli(server.data_dir, {**server.sets, "dicom_port": server.port}, "retrieve",
                       f"{orthanc.ae_title}@127.0.0.1:{orthanc.dicom_port}", "--study", STUDY)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "received by the running archive daemon" in done.stdout
        assert "3 completed, 0 failed" in done.stdout
        assert "this archive now holds 3 instances" in done.stdout
    finally:
        orthanc.stop()
    check_archived(server.data_dir, server.sets, study_files)
    assert server.log().count("association from ORTHANC") >= 1


def test_retrieve_from_orthanc_with_a_temporary_listener(study_files, tmp_path, database_url):
    """The daemon is not running: the command listens on the archive's port itself."""
    data_dir = tmp_path / "archive"
    port = free_port()
    sets = {"database_url": database_url, "dicom_host": "127.0.0.1", "dicom_port": port, "min_free_mb": 0}
    orthanc = start_orthanc(tmp_path, {"dsmpacs": ("DSMPACS", "127.0.0.1", port)})
    try:
        upload(orthanc, study_files)
        orthanc_peer = f"{orthanc.ae_title}@127.0.0.1:{orthanc.dicom_port}"
        done = run_cli(data_dir, sets, "retrieve", orthanc_peer, "--study", STUDY)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "received by a temporary listener" in done.stdout
        for original in study_files:
            assert f"stored {f.read_uid(original)}" in done.stdout
        check_archived(data_dir, sets, study_files)
        # a second retrieve is answered as duplicates, still success
        again = run_cli(data_dir, sets, "retrieve", orthanc_peer, "--study", STUDY)
        assert again.returncode == 0, again.stdout + again.stderr
    finally:
        orthanc.stop()


def test_retrieve_from_orthanc_by_c_get(study_files, tmp_path, database_url):
    data_dir = tmp_path / "archive"
    sets = {"database_url": database_url, "dicom_host": "127.0.0.1", "dicom_port": free_port(),
            "min_free_mb": 0}
    orthanc = start_orthanc(tmp_path, {"dsmpacs": ("DSMPACS", "127.0.0.1", sets["dicom_port"])})
    try:
        upload(orthanc, study_files)
        ct_series = str(dcmread(study_files[-1], stop_before_pixels=True).SeriesInstanceUID)
        done = run_cli(data_dir, sets, "retrieve", f"{orthanc.ae_title}@127.0.0.1:{orthanc.dicom_port}",
                       "--study", STUDY, "--series", ct_series, "--method", "get")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"stored {f.read_uid(study_files[-1])}" in done.stdout
        assert "this archive now holds 1 instances of the requested series" in done.stdout
        check_archived(data_dir, sets, study_files[-1:])
    finally:
        orthanc.stop()


def test_retrieve_when_the_remote_does_not_know_us(study_files, tmp_path, database_url):
    data_dir = tmp_path / "archive"
    sets = {"database_url": database_url, "dicom_host": "127.0.0.1", "dicom_port": free_port(),
            "min_free_mb": 0, "ae_title": "STRANGER"}
    orthanc = start_orthanc(tmp_path, {"dsmpacs": ("DSMPACS", "127.0.0.1", sets["dicom_port"])})
    try:
        upload(orthanc, study_files)
        done = run_cli(data_dir, sets, "retrieve", f"{orthanc.ae_title}@127.0.0.1:{orthanc.dicom_port}",
                       "--study", STUDY)
        assert done.returncode != 0
        assert "Traceback" not in done.stderr
        assert "does it know this archive's AE title" in done.stderr
    finally:
        orthanc.stop()
