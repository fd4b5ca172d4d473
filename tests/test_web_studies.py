"""The study browser and the viewer's endpoints over HTTP (Flask test client over the
real archive, SQLite and MariaDB): search, pages, thumbnails, rendering, ZIP, send,
delete, and who may do what."""
from __future__ import annotations

import io
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from dsmpacs.archive.audit import AuditTrail
from dsmpacs.archive.browse import study_files
from dsmpacs.archive.ingest import Origin
from dsmpacs.archive.peers import Peer, PeerRegistry
from tests import factories as f
from tests.webclient import client_as, client_csrf

HTML = {"Accept": "text/html"}
XA_STUDY = "1.2.826.0.1.3680043.8.498.7001"
CN_STUDY = "1.2.826.0.1.3680043.8.498.7002"
OLD_STUDY = "1.2.826.0.1.3680043.8.498.7003"


def load(archive, tmp_path):
    """A Chinese name stored in GB18030, a patient with two XA studies (one a 2-instance run)."""
    chinese = f.Patient(name="王^小明", patient_id="CN-18030", charset="GB18030")
    ivr = f.Patient(name="LI^NA", patient_id="IR-1")
    datasets = [
        f.secondary_capture(patient=chinese, study_uid=CN_STUDY, accession="ACC-CN", study_date="20230301",
                            study_description="Head follow-up"),
        f.xa_run(frames=6, size=32, patient=ivr, study_uid=XA_STUDY, accession="ACC-XA", study_date="20240610",
                 study_description="Hepatic embolisation", series_number=1),
        f.xa_run(frames=4, size=32, patient=ivr, study_uid=XA_STUDY, accession="ACC-XA", study_date="20240610",
                 study_description="Hepatic embolisation", series_number=2),
        f.xa_run(frames=3, size=32, patient=ivr, study_uid=OLD_STUDY, accession="ACC-OLD", study_date="20190105",
                 study_description="Hepatic angiography"),
    ]
    for i, ds in enumerate(datasets):
        result = archive.ingest.import_file(f.write(ds, tmp_path / "in" / f"{i}.dcm"), Origin("import"))
        assert result.archived
    return datasets


def text(response) -> str:
    return response.get_data(as_text=True)


def study_rows(response) -> list[str]:
    import re
    return re.findall(r'<tr data-study="([^"]+)"', text(response))


def test_search_by_every_field_including_a_gb18030_name(client, archive, tmp_path, monkeypatch):
    load(archive, tmp_path)
    client_as(client, archive, "viewer")
    # the latest study date first, whatever order they arrived in
    assert study_rows(client.get("/studies", headers=HTML)) == [XA_STUDY, CN_STUDY, OLD_STUDY]
    found = client.get("/studies?patient_name=王", headers=HTML)
    assert found.status_code == 200 and study_rows(found) == [CN_STUDY]
    assert "王小明" in text(found)
    assert study_rows(client.get("/studies?patient_name=li", headers=HTML)) == [XA_STUDY, OLD_STUDY]
    assert study_rows(client.get("/studies?patient_id=CN-18030", headers=HTML)) == [CN_STUDY]
    assert study_rows(client.get("/studies?accession=ACC-XA", headers=HTML)) == [XA_STUDY]
    assert study_rows(client.get("/studies?date_from=2020-01-01&date_to=2024-12-31", headers=HTML)) == \
        [XA_STUDY, CN_STUDY]
    assert study_rows(client.get("/studies?modality=xa", headers=HTML)) == [XA_STUDY, OLD_STUDY]
    assert study_rows(client.get("/studies?description=embol", headers=HTML)) == [XA_STUDY]
    assert study_rows(client.get("/studies?patient_name=nobody", headers=HTML)) == []
    bad = client.get("/studies?date_from=yesterday", headers=HTML)
    assert bad.status_code == 400 and 'aria-invalid="true"' in text(bad)

    from dsmpacs.web.browse import search
    monkeypatch.setattr(search, "PER_PAGE", 2)
    first = client.get("/studies", headers=HTML)
    assert study_rows(first) == [XA_STUDY, CN_STUDY] and 'rel="next"' in text(first)
    second = client.get("/studies?page=2", headers=HTML)
    assert study_rows(second) == [OLD_STUDY] and 'rel="next"' not in text(second)


def test_names_match_as_the_list_shows_them(client, archive, tmp_path):
    """The list shows 王^小明 as 王小明 and LI^NA as LI NA: typed that way, in any case
    or width, they find the patient; a different given name does not."""
    load(archive, tmp_path)
    client_as(client, archive, "viewer")
    for typed, expected in (("王小明", [CN_STUDY]), ("王小", [CN_STUDY]), ("王 小明", [CN_STUDY]),
                            ("Li Na", [XA_STUDY, OLD_STUDY]), ("ｌｉ　ｎａ", [XA_STUDY, OLD_STUDY]),
                            ("LI^NA", [XA_STUDY, OLD_STUDY]), ("Li Nb", []), ("王小红", [])):
        found = client.get("/studies", query_string={"patient_name": typed}, headers=HTML)
        assert found.status_code == 200 and study_rows(found) == expected, typed


def test_study_page_patient_timeline_and_thumbnails(client, archive, tmp_path):
    load(archive, tmp_path)
    client_as(client, archive, "viewer")
    page = client.get(f"/studies/{XA_STUDY}", headers=HTML)
    body = text(page)
    assert page.status_code == 200
    assert body.count("data-series=") == 2 and ">6</td>" in body and ">4</td>" in body   # frame counts
    assert "Explicit VR Little Endian" in body
    assert 'data-action="download"' not in body and 'data-action="delete"' not in body   # viewer role
    assert 'data-form="send"' not in body

    patient_link = body.split('href="/patients/')[1].split('"')[0]
    timeline = text(client.get(f"/patients/{patient_link}", headers=HTML))
    assert timeline.index(OLD_STUDY) < timeline.index(XA_STUDY)         # by study date, oldest first
    assert CN_STUDY not in timeline

    series_uid = study_files(archive.index, XA_STUDY)[0].series_instance_uid
    thumb = client.get(f"/studies/{XA_STUDY}/series/{series_uid}/thumbnail")
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.data)).size == (32, 32)
    assert "max-age" in thumb.headers["Cache-Control"] and thumb.headers["ETag"]
    again = client.get(f"/studies/{XA_STUDY}/series/{series_uid}/thumbnail",
                       headers={"If-None-Match": thumb.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""
    assert client.get(f"/studies/{XA_STUDY}/series/1.2.3.4/thumbnail").status_code == 404
    assert client.get("/studies/1.2.3.999", headers=HTML).status_code == 404


def test_render_endpoint_window_and_subtraction(client, archive, tmp_path):
    datasets = load(archive, tmp_path)
    client_as(client, archive, "viewer")
    xa = datasets[1]
    base = f"/render/{XA_STUDY}/{xa.SeriesInstanceUID}/{xa.SOPInstanceUID}"
    plain = client.get(f"{base}/3.png")
    assert plain.status_code == 200 and plain.mimetype == "image/png"
    expected = np.asarray(Image.open(io.BytesIO(plain.data)))
    stored = xa.pixel_array[3].astype(float)             # window 2048/4096 from the file
    np.testing.assert_allclose(expected, np.clip(np.rint((stored - 0) / 4095 * 255), 0, 255), atol=1)
    narrow = client.get(f"{base}/3.png?wc=2048&ww=100")
    assert narrow.data != plain.data
    same = np.asarray(Image.open(io.BytesIO(client.get(f"{base}/3.png?mask=3").data)))
    assert same.min() == same.max()                      # a frame minus itself: flat
    other = np.asarray(Image.open(io.BytesIO(client.get(f"{base}/3.png?mask=0").data)))
    assert other.std() > 5
    assert client.get(f"{base}/3.jpeg").mimetype == "image/jpeg"
    assert client.get(f"{base}/6.png").status_code == 404
    assert client.get(f"{base}/3.png?mask=9").status_code == 404
    assert client.get(f"{base}/3.png?wc=a&ww=1").status_code == 400
    assert client.get(f"{base}/3.gif").status_code == 404
    info = client.get(f"/viewer/info/{XA_STUDY}/{xa.SeriesInstanceUID}/{xa.SOPInstanceUID}.json").get_json()
    assert info["frames"] == 6 and info["frame_rate"] == 15 and info["subtraction"] is True
    assert info["presets"] == [{"center": 2048.0, "width": 4096.0, "name": ""}]
    study = client.get(f"/viewer/studies/{XA_STUDY}.json").get_json()
    assert [s["frames"] for s in study["series"]] == [6, 4]
    viewer = client.get(f"/viewer?study={XA_STUDY}&compare={OLD_STUDY}", headers=HTML)
    assert viewer.status_code == 200 and text(viewer).count("data-viewport ") == 2
    views = AuditTrail(archive.index).recent(action="view", study_instance_uid=XA_STUDY)
    assert len(views) == 1                                 # many requests, one audit row


def test_roles_viewer_cannot_export_send_or_delete(client, archive, tmp_path):
    load(archive, tmp_path)
    client_as(client, archive, "viewer")
    token = client_csrf(client, "/studies")
    assert client.get(f"/studies/{XA_STUDY}/download.zip").status_code == 403
    assert client.post(f"/studies/{XA_STUDY}/send", data={"peer": "x", "csrf_token": token}).status_code == 403
    assert client.get(f"/studies/{XA_STUDY}/delete", headers=HTML).status_code == 403
    assert client.post(f"/studies/{XA_STUDY}/delete", data={"confirm": "yes", "csrf_token": token}).status_code == 403
    assert client.get(f"/studies/{XA_STUDY}", headers=HTML).status_code == 200


def test_radiologist_downloads_the_stored_files_unchanged(client, archive, tmp_path):
    load(archive, tmp_path)
    client_as(client, archive, "radiologist")
    assert client.post(f"/studies/{XA_STUDY}/delete", data={"confirm": "yes",
                       "csrf_token": client_csrf(client, "/studies")}).status_code == 403
    response = client.get(f"/studies/{XA_STUDY}/download.zip")
    assert response.status_code == 200 and response.mimetype == "application/zip"
    assert "attachment" in response.headers["Content-Disposition"]
    members = zipfile.ZipFile(io.BytesIO(response.data))
    names = members.namelist()
    files = study_files(archive.index, XA_STUDY)
    assert len(names) == len(files) == 2 and all(n.endswith(".dcm") and ".." not in n for n in names)
    for name, stored in zip(names, files):
        assert members.read(name) == archive.storage.path(stored.path).read_bytes()
    exports = AuditTrail(archive.index).recent(action="export")
    assert exports[0].study_instance_uid == XA_STUDY and exports[0].actor == "radiologist1"


def test_admin_deletes_after_confirmation_with_csrf(client, archive, tmp_path):
    load(archive, tmp_path)
    client_as(client, archive, "admin")
    paths = [archive.storage.path(x.path) for x in study_files(archive.index, XA_STUDY)]
    assert all(p.exists() for p in paths)
    confirm = client.get(f"/studies/{XA_STUDY}/delete", headers=HTML)
    assert confirm.status_code == 200 and 'name="confirm" value="yes"' in text(confirm)
    assert client.post(f"/studies/{XA_STUDY}/delete", data={"confirm": "yes"}).status_code == 403   # no CSRF
    token = client_csrf(client, "/studies")
    assert client.post(f"/studies/{XA_STUDY}/delete", data={"csrf_token": token}).status_code == 400
    assert all(p.exists() for p in paths)
    done = client.post(f"/studies/{XA_STUDY}/delete", data={"confirm": "yes", "csrf_token": token})
    assert done.status_code == 302
    assert not any(p.exists() for p in paths)
    assert study_files(archive.index, XA_STUDY) == []
    assert client.get(f"/studies/{XA_STUDY}", headers=HTML).status_code == 404
    assert study_rows(client.get("/studies", headers=HTML)) == [CN_STUDY, OLD_STUDY]   # the patient stays
    deleted = AuditTrail(archive.index).recent(action="delete")
    assert deleted[0].study_instance_uid == XA_STUDY and "2 instances" in deleted[0].detail


def test_anonymous_is_sent_to_sign_in(client, archive, tmp_path):
    load(archive, tmp_path)
    for path in ("/studies", f"/studies/{XA_STUDY}", f"/viewer?study={XA_STUDY}",
                 f"/studies/{XA_STUDY}/download.zip"):
        page = client.get(path, headers=HTML)
        assert page.status_code == 401 and 'data-login-form' in text(page), path
    assert client.get(f"/viewer/studies/{XA_STUDY}.json").status_code == 401


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_radiologist_sends_a_study_with_progress(client, archive, tmp_path):
    from tests.retrieval import StoreSCP

    datasets = load(archive, tmp_path)
    ws = StoreSCP(tmp_path / "ws", "WS3D", "+xa").start()
    try:
        PeerRegistry(archive.index).add(Peer("ws3d", "WS3D", "127.0.0.1", ws.port))
        PeerRegistry(archive.index).add(Peer("store-only", "NOPE", "127.0.0.1", 9, is_move_destination=False))
        client_as(client, archive, "radiologist")
        page = text(client.get(f"/studies/{XA_STUDY}", headers=HTML))
        assert 'value="ws3d"' in page and "store-only" not in page
        token = client_csrf(client, f"/studies/{XA_STUDY}")
        assert client.post(f"/studies/{XA_STUDY}/send", data={"peer": "store-only", "csrf_token": token}
                           ).status_code == 400
        started = client.post(f"/studies/{XA_STUDY}/send", data={"peer": "ws3d", "csrf_token": token})
        assert started.status_code == 202
        job = started.get_json()
        deadline = time.monotonic() + 30
        while job["state"] == "running" and time.monotonic() < deadline:
            time.sleep(0.05)
            job = client.get(f"/transfers/{job['id']}").get_json()
        assert job["state"] == "done" and job["sent"] == job["total"] == 2, job
        received = sorted(f.read_uid(p) for p in ws.files())
        assert received == sorted([datasets[1].SOPInstanceUID, datasets[2].SOPInstanceUID])
        sends = AuditTrail(archive.index).recent(action="send")
        assert {s.outcome for s in sends} == {"started", "ok"}
    finally:
        ws.stop()
