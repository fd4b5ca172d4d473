"""Corruption is never served as good: one byte of a stored file flipped, then every
retrieve path asked for it, over real sockets to a real `dsmpacs serve`, with dcmtk
getscu, movescu and storescp as the peers, and HTTP for DICOMweb and the web UI."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pydicom
import pytest
import requests

from dsmpacs.archive.ingest import Origin
from dsmpacs.archive.integrity import corrupt_instances
from tests import factories as f
from tests.peers import ServerProcess, dcmtk, wait_until
from tests.retrieval import StoreSCP, register, run_cli, stored_path
from tests.test_move_get import dimse_responses
from tests.test_verification import flip_last_byte
from tests.webclient import WebSession, add_user, server_archive

STUDY = "1.2.826.0.1.3680043.10.88.1"
OTHER_STUDY = "1.2.826.0.1.3680043.10.88.2"


def uids(path: Path) -> tuple[str, str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def corrupt_uids(server) -> set[str]:
    with server_archive(server) as archive:
        return {c.sop_instance_uid for c in corrupt_instances(archive.index)}


@pytest.fixture(scope="module")
def env(tmp_path_factory, module_database_url):
    """A study of an XA run (its own series) and two CT slices; the XA file altered by
    one byte and found by `dsmpacs verify`, which also meets a planted orphan file.
    Background verification is off here: only verify has looked."""
    root = tmp_path_factory.mktemp("corruption")
    server = ServerProcess(root / "server", {"database_url": module_database_url,
                                             "verify_period_days": 0}).start()
    try:
        p = f.Patient("ZHAO^LEI", "CORRUPT1")
        ct_series = "1.2.826.0.1.3680043.10.88.3"
        files = {
            "xa": f.write(f.xa_run(frames=2, size=32, patient=p, study_uid=STUDY, series_number=1),
                          root / "xa.dcm"),
            "ct1": f.write(f.ct_slice(size=32, patient=p, study_uid=STUDY, series_uid=ct_series,
                                      series_number=2, instance_number=1), root / "ct1.dcm"),
            "ct2": f.write(f.ct_slice(size=32, patient=p, study_uid=STUDY, series_uid=ct_series,
                                      series_number=2, instance_number=2), root / "ct2.dcm"),
            "lone": f.write(f.secondary_capture(size=16, patient=p, study_uid=OTHER_STUDY), root / "lone.dcm"),
        }
        with server_archive(server) as archive:
            for path in files.values():
                assert archive.ingest.import_file(path, Origin("import")).archived
        flip_last_byte(stored_path(server, uids(files["xa"])[2]))
        orphan = server.storage / "2020" / "01" / "02" / ("ab" * 16 + ".dcm")
        orphan.parent.mkdir(parents=True)
        shutil.copyfile(files["lone"], orphan)
        verify = run_cli(server.data_dir, server.sets, "verify")
        users = {"rad": ("rad1", add_user(server, "rad1", "radiologist")),
                 "admin": ("admin1", add_user(server, "admin1", "admin"))}
        yield {"server": server, "files": files, "verify": verify, "orphan": orphan, "users": users,
               "ct_series": ct_series}
    finally:
        server.stop()


def get(env, path, role="rad", **kw):
    return requests.get(env["server"].url(path), auth=env["users"][role], timeout=30, **kw)


def instance_url(path: Path) -> str:
    study, series, sop = uids(path)
    return f"/dicom-web/studies/{study}/series/{series}/instances/{sop}"


# --- verify ------------------------------------------------------------------------

def test_verify_marks_the_altered_instance_and_reports_the_orphan(env):
    done, xa = env["verify"], uids(env["files"]["xa"])[2]
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"checksum mismatch: {xa}" in done.stdout
    relpath = env["orphan"].relative_to(env["server"].storage).as_posix()
    assert f"orphan file (in storage, not in the index; left in place): {relpath}" in done.stdout
    assert "checked 4, missing 0, mismatched 1, orphans 1" in done.stdout
    assert env["orphan"].exists()                    # reported, never deleted
    assert xa in corrupt_uids(env["server"])
    assert uids(env["files"]["ct1"])[2] not in corrupt_uids(env["server"])


# --- DIMSE ------------------------------------------------------------------------

def test_getscu_does_not_receive_the_corrupt_instance(env, tmp_path):
    server = env["server"]
    register(server, "getter", "GETTER", 104, may_retrieve=True, is_move_destination=False)
    out = tmp_path / "got"
    out.mkdir()
    done = dcmtk("getscu", "-d", "-aet", "GETTER", "-aec", server.ae_title, "-od", str(out), "+B",
                 "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY}", "127.0.0.1", server.port)
    output = done.stdout + done.stderr
    xa = uids(env["files"]["xa"])[2]
    received = {f.read_uid(p) for p in out.iterdir()}
    assert received == {uids(env["files"][k])[2] for k in ("ct1", "ct2")}
    final = dimse_responses(output)[-1]
    assert final["Status"].startswith("0xb000") and (final["Completed"], final["Failed"]) == ("2", "1")
    # getscu prints no identifier of the final response; the server log names the failure.
    assert server.logged(f"not sending {xa}: instance {xa} is corrupt in storage")
    failure = (r"C-GET from GETTER \(127\.0\.0\.1:\d+\): failed to send " + re.escape(xa)
               + r": status not sent instance .* is corrupt in storage")
    wait_until(lambda: re.search(failure, server.log()), timeout=10, what="the failed sub-operation logged")


def test_movescu_to_storescp_does_not_deliver_it(env, tmp_path):
    server = env["server"]
    workstation = StoreSCP(tmp_path / "ws", "WS1", "+xa", "-pm").start()
    try:
        register(server, "mover", "MOVER", 104, may_retrieve=True, is_move_destination=False)
        register(server, "ws1", "WS1", workstation.port)
        xa = uids(env["files"]["xa"])[2]
        # Only the corrupt instance: every sub-operation fails, 0xA702 (PS3.4 C.4.2.3.1).
        done = dcmtk("movescu", "-d", "-aet", "MOVER", "-aec", server.ae_title, "-aem", "WS1",
                     "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={STUDY}",
                     "-k", f"SeriesInstanceUID={uids(env['files']['xa'])[1]}", "127.0.0.1", server.port)
        final = dimse_responses(done.stdout + done.stderr)[-1]
        assert final["Status"].startswith("0xa702") and (final["Completed"], final["Failed"]) == ("0", "1")
        # The whole study: the two good slices arrive, 0xB000 names the corrupt one.
        done = dcmtk("movescu", "-d", "-aet", "MOVER", "-aec", server.ae_title, "-aem", "WS1",
                     "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY}", "127.0.0.1", server.port)
        output = done.stdout + done.stderr
        final = dimse_responses(output)[-1]
        assert final["Status"].startswith("0xb000") and (final["Completed"], final["Failed"]) == ("2", "1")
        assert re.search(r"\(0008,0058\) UI \[" + re.escape(xa), output), output
        assert xa not in {f.read_uid(p) for p in workstation.files()} and len(workstation.files()) == 2
    finally:
        workstation.stop()


# --- DICOMweb -----------------------------------------------------------------------

def test_wado_rs_refuses_the_instance_its_frames_bulk_data_and_metadata(env):
    xa = env["files"]["xa"]
    base = instance_url(xa)
    for path, accept in ((base, 'multipart/related; type="application/dicom"; transfer-syntax=*'),
                         (f"{base}/frames/1", 'multipart/related; type="application/octet-stream"'),
                         (f"{base}/bulkdata/7FE00010", "application/octet-stream"),
                         (f"{base}/metadata", "application/dicom+json"),
                         (f"{base}/rendered", "image/jpeg")):
        response = get(env, path, headers={"Accept": accept})
        assert response.status_code == 410, (path, response.status_code)
        assert "corrupt in storage" in response.json()["detail"]
    # The good slices are served as ever.
    assert get(env, instance_url(env["files"]["ct1"]),
               headers={"Accept": 'multipart/related; type="application/dicom"'}).status_code == 200


def test_wado_rs_study_is_partial_content_without_the_corrupt_instance(env):
    xa = uids(env["files"]["xa"])[2]
    response = get(env, f"/dicom-web/studies/{STUDY}",
                   headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    assert response.status_code == 206
    assert xa in response.headers["Warning"] and "corrupt in storage" in response.headers["Warning"]
    served = {ds.SOPInstanceUID for ds in _datasets(response)}
    assert served == {uids(env["files"][k])[2] for k in ("ct1", "ct2")}
    metadata = get(env, f"/dicom-web/studies/{STUDY}/metadata", headers={"Accept": "application/dicom+json"})
    assert metadata.status_code == 206
    assert {item["00080018"]["Value"][0] for item in metadata.json()} == served


def _datasets(response) -> list[pydicom.Dataset]:
    from io import BytesIO

    boundary = response.headers["Content-Type"].split("boundary=")[1].split(";")[0].strip('"').encode()
    out = []
    for chunk in response.content.split(b"--" + boundary)[1:-1]:
        body = chunk.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]
        out.append(pydicom.dcmread(BytesIO(body), stop_before_pixels=True))
    return out


def test_wado_uri_refuses_it(env):
    study, series, sop = uids(env["files"]["xa"])
    for content_type in ("application/dicom", "image/jpeg"):
        response = get(env, "/wado", params={"requestType": "WADO", "studyUID": study, "seriesUID": series,
                                             "objectUID": sop, "contentType": content_type})
        assert response.status_code == 410 and "corrupt in storage" in response.json()["detail"]


def test_a_truncated_file_is_caught_on_read_and_marked(env):
    """No re-hash has looked at it: the size check on read finds it."""
    lone = env["files"]["lone"]
    path = stored_path(env["server"], uids(lone)[2])
    path.write_bytes(path.read_bytes()[:-10])
    response = get(env, instance_url(lone), headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert response.status_code == 410 and "bytes" in response.json()["detail"]
    assert uids(lone)[2] in corrupt_uids(env["server"])


# --- web UI ----------------------------------------------------------------------------

def test_zip_and_rendering_refuse_it_and_the_admin_pages_raise_the_alert(env):
    server = env["server"]
    web = WebSession(server)
    web.login(*env["users"]["admin"])
    study, series, sop = uids(env["files"]["xa"])
    for path in (f"/studies/{study}/download.zip", f"/render/{study}/{series}/{sop}/0.png",
                 f"/studies/{study}/series/{series}/thumbnail"):
        response = web.get(path, allow_redirects=False)
        assert response.status_code == 410, (path, response.status_code)
        assert "Damaged in storage" in response.text
    # one or more instances (the module's tests mark more as they go): the plural form fits the count
    assert re.search(r"\d+ instances? of this study (is|are) damaged in storage and",
                     web.get(f"/studies/{study}").text)
    # A series with intact instances still shows its thumbnail.
    assert web.get(f"/studies/{study}/series/{env['ct_series']}/thumbnail").headers["Content-Type"] == "image/jpeg"

    for page in ("/admin/storage", "/admin/users"):
        body = web.get(page).text
        assert "data-corrupt-alert" in body and re.search(r"stored instances? (is|are) corrupt", body), page
    storage_page = web.get("/admin/storage").text
    listed = storage_page[storage_page.index("data-corrupt-list"):]
    assert sop in listed and "no longer matches its checksum" in listed
    web.post_form("/language", {"lang": "zh-Hans", "next": "/admin/storage"})
    assert "个已存储实例已损坏" in web.get("/admin/storage").text


# --- the background job ------------------------------------------------------------------

@pytest.mark.slow
def test_background_job_finds_it_without_verify(server_factory, database_url, tmp_path):
    """A tiny period and no throttle: the DICOM daemon's job re-hashes on its own, marks
    the altered instance, and C-GET then refuses it; on stop it releases its lease."""
    server = server_factory(database_url=database_url, verify_period_days=2e-5, verify_mb_per_s=0)
    files = [f.write(f.ct_slice(size=32, study_uid=STUDY, instance_number=n), tmp_path / f"{n}.dcm")
             for n in range(3)]
    assert server.storescu(*files).returncode == 0
    altered = f.read_uid(files[1])
    flip_last_byte(stored_path(server, altered))
    wait_until(lambda: corrupt_uids(server) == {altered}, timeout=120, what="the job to mark the instance")
    assert server.logged(f"instance {altered} is corrupt and will not be served")

    register(server, "getter", "GETTER", 104, may_retrieve=True, is_move_destination=False)
    out = tmp_path / "got"
    out.mkdir()
    done = dcmtk("getscu", "-d", "-aet", "GETTER", "-aec", server.ae_title, "-od", str(out),
                 "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY}", "127.0.0.1", server.port)
    final = dimse_responses(done.stdout + done.stderr)[-1]
    assert (final["Completed"], final["Failed"]) == ("2", "1") and final["Status"].startswith("0xb000")
    assert altered not in {f.read_uid(p) for p in out.iterdir()}

    server.stop()
    from dsmpacs.archive.models import JobLease
    with server_archive(server) as archive, archive.index.read():
        lease = JobLease.get(JobLease.name == "verify")
    assert lease.owner == "" and lease.cycle_finished_at is not None
