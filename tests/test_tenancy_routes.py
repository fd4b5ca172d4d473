"""Institutions on every route of a real `dsmpacs serve`: a user of institution C
and a workstation bound to C get nothing of institution A's study anywhere (web
pages and JSON 404, DICOMweb 404 or empty, C-FIND no match, C-MOVE/C-GET no
sub-operation, worklist only C's orders), and after a grant the same user sees exactly that one study."""
from __future__ import annotations

import requests

from dsmpacs.archive.institutions import Institutions
from dsmpacs.archive.models import Patient, Series, Study
from dsmpacs.archive.orders import OrderInput, Orders
from dsmpacs.archive.peers import Peer, PeerRegistry
from dsmpacs.archive.users import Users
from tests import factories as f
from tests.findscu import findscu
from tests.peers import dcmtk
from tests.retrieval import StoreSCP
from tests.test_dicomweb_http import stow_body
from tests.webclient import WebSession, server_archive

PASSWORD = "correct horse battery"


def _study(tmp_path, name: str, patient_id: str, accession: str):
    ds = f.secondary_capture(size=16, patient=f.Patient(name=name, patient_id=patient_id), accession=accession)
    return f.write(ds, tmp_path / f"{accession}.dcm"), ds


def test_institution_c_sees_nothing_of_a_until_granted(server_factory, tmp_path):
    server = server_factory()
    ws_c = StoreSCP(tmp_path / "ws", "WS_C", "-d").start()
    try:
        _scenario(server, ws_c, tmp_path)
    finally:
        ws_c.stop()


def _scenario(server, ws_c, tmp_path):
    with server_archive(server) as archive:
        inst = Institutions(archive.index)
        a, c = inst.create("a", "Hospital A"), inst.create("c", "Hospital C")
        peers = PeerRegistry(archive.index)
        peers.add(Peer("angio-a", "ANGIO_A", "127.0.0.1", 104))
        peers.add(Peer("ws-c", "WS_C", "127.0.0.1", ws_c.port))
        inst.bind_ae("angio-a", "a")
        inst.bind_ae("ws-c", "c")
        Users(archive.index).add("carol", PASSWORD, "radiologist", institution=c.id)
        orders = Orders(archive.index)
        for accession, institution in (("ORD-A", a.id), ("ORD-C", c.id)):
            orders.create(OrderInput(patient_id=f"P-{accession}", patient_name="DOE^JANE",
                                     procedure_description="DSA", scheduled_date="20261206", modality="XA",
                                     accession_number=accession), actor="reg", institution=institution)

    file_a, ds_a = _study(tmp_path, "ALPHA^ANNA", "PA-1", "ACC-A1")
    file_a2, ds_a2 = _study(tmp_path, "ALPHA^ANNA", "PA-1", "ACC-A2")
    file_c, ds_c = _study(tmp_path, "CHARLIE^CARL", "PC-1", "ACC-C1")
    for path, ae in ((file_a, "ANGIO_A"), (file_a2, "ANGIO_A"), (file_c, "WS_C")):
        done = server.storescu(path, extra=("-aet", ae))
        assert done.returncode == 0, done.stderr
    uid_a, uid_a2, uid_c = (str(d.StudyInstanceUID) for d in (ds_a, ds_a2, ds_c))
    series_a, sop_a = str(ds_a.SeriesInstanceUID), str(ds_a.SOPInstanceUID)
    with server_archive(server) as archive:
        with archive.index.read():
            placed = {s.study_instance_uid: s.institution for s in Study.select()}
            patient_a = Patient.get(Patient.patient_id == "PA-1").id
            assert Series.select().count() == 3
    assert placed == {uid_a: a.id, uid_a2: a.id, uid_c: c.id}

    web = WebSession(server)
    web.login("carol", PASSWORD)
    api = requests.Session()
    api.auth = ("carol", PASSWORD)
    base = server.web_url

    # --- web pages and JSON: 404, never 403 --------------------------------------
    listing = web.get("/studies")
    assert listing.status_code == 200 and uid_c in listing.text or "CHARLIE" in listing.text
    assert "ALPHA" not in listing.text and uid_a not in listing.text
    search = web.get("/studies", params={"patient_id": "PA-1"})
    assert "ALPHA" not in search.text
    hidden = {
        "patient timeline": f"/patients/{patient_a}",
        "study page": f"/studies/{uid_a}",
        "viewer page": f"/viewer?study={uid_a}",
        "viewer compare": f"/viewer?study={uid_c}&compare={uid_a}",
        "viewer JSON": f"/viewer/studies/{uid_a}.json",
        "info": f"/viewer/info/{uid_a}/{series_a}/{sop_a}.json",
        "render": f"/render/{uid_a}/{series_a}/{sop_a}/0.png",
        "thumbnail": f"/studies/{uid_a}/series/{series_a}/thumbnail",
        "annotations": f"/viewer/annotations/{uid_a}.json",
        "ROI": f"/viewer/roi/{uid_a}/{series_a}/{sop_a}/0.json",
        "MPR page": f"/viewer/mpr?study={uid_a}&series={series_a}",
        "MPR volume": f"/viewer/mpr/{uid_a}/{series_a}/volume.json",
        "MPR plane": f"/viewer/mpr/{uid_a}/{series_a}/axial.png",
        "ZIP": f"/studies/{uid_a}/download.zip",
        # C's own study in the path does not open A's instance under it.
        "render, mixed UIDs": f"/render/{uid_c}/{series_a}/{sop_a}/0.png",
        "info, mixed UIDs": f"/viewer/info/{uid_c}/{series_a}/{sop_a}.json",
    }
    statuses = {what: web.get(path).status_code for what, path in hidden.items()}
    assert statuses == {what: 404 for what in hidden}, statuses
    send = web.post_form(f"/studies/{uid_a}/send", {"peer": "ws-c"})
    assert send.status_code == 404
    # The same pages of C's own study answer.
    assert web.get(f"/viewer/studies/{uid_c}.json").status_code == 200
    assert web.get(f"/studies/{uid_c}").status_code == 200

    # --- DICOMweb ---------------------------------------------------------------------
    qido = api.get(f"{base}/dicom-web/studies", headers={"Accept": "application/dicom+json"})
    assert qido.status_code == 200
    assert {s["0020000D"]["Value"][0] for s in qido.json()} == {uid_c}
    by_uid = api.get(f"{base}/dicom-web/studies", params={"StudyInstanceUID": uid_a})
    assert by_uid.status_code == 204 or by_uid.json() == []
    by_patient = api.get(f"{base}/dicom-web/instances", params={"PatientID": "PA-1"})
    assert by_patient.status_code == 204 or by_patient.json() == []
    dicomweb = {
        "QIDO series of study": f"/dicom-web/studies/{uid_a}/series",
        "WADO-RS study": f"/dicom-web/studies/{uid_a}",
        "WADO-RS metadata": f"/dicom-web/studies/{uid_a}/metadata",
        "WADO-RS instance": f"/dicom-web/studies/{uid_a}/series/{series_a}/instances/{sop_a}",
        "WADO-RS frames": f"/dicom-web/studies/{uid_a}/series/{series_a}/instances/{sop_a}/frames/1",
        "WADO-RS rendered": f"/dicom-web/studies/{uid_a}/rendered",
        "WADO-URI": f"/wado?requestType=WADO&studyUID={uid_a}&seriesUID={series_a}&objectUID={sop_a}"
                    "&contentType=application/dicom",
        "WADO-RS, mixed UIDs": f"/dicom-web/studies/{uid_c}/series/{series_a}/instances/{sop_a}",
        "WADO-URI, mixed UIDs": f"/wado?requestType=WADO&studyUID={uid_c}&seriesUID={series_a}&objectUID={sop_a}",
    }
    statuses = {what: api.get(base + path).status_code for what, path in dicomweb.items()}
    assert statuses == {what: 404 for what in dicomweb}, statuses
    # STOW-RS: into A's study refused (404 by URL, a failed instance without it);
    # a new study lands in C.
    intruder = f.secondary_capture(size=8, study_uid=uid_a, patient=f.Patient(name="ALPHA^ANNA", patient_id="PA-1"))
    body, ctype = stow_body([f.write(intruder, tmp_path / "intruder.dcm")])
    assert api.post(f"{base}/dicom-web/studies/{uid_a}", data=body, headers={"Content-Type": ctype}
                    ).status_code == 404
    refused = api.post(f"{base}/dicom-web/studies", data=body, headers={"Content-Type": ctype})
    assert refused.status_code == 409, refused.text
    new = f.secondary_capture(size=8)
    body, ctype = stow_body([f.write(new, tmp_path / "new.dcm")])
    assert api.post(f"{base}/dicom-web/studies", data=body, headers={"Content-Type": ctype}).status_code == 200
    with server_archive(server) as archive:
        assert Institutions(archive.index).institution_of(str(new.StudyInstanceUID)) == c.id
        with archive.index.read():
            assert Study.get(Study.study_instance_uid == uid_a).number_of_study_related_instances == 1

    # --- DICOM: the workstation bound to C ----------------------------------------------
    found = findscu(server.port, ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientID"],
                    tmp_path / "find", calling_ae="WS_C", called_ae=server.ae_title)
    assert found.final == "Success", found.output[-2000:]
    assert set(found.values("StudyInstanceUID")) == {uid_c, str(new.StudyInstanceUID)}
    by_uid = findscu(server.port, ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={uid_a}"],
                     tmp_path / "find2", calling_ae="WS_C", called_ae=server.ae_title)
    assert by_uid.responses == [] and by_uid.final == "Success"
    patients = findscu(server.port, ["QueryRetrieveLevel=PATIENT", "PatientID"], tmp_path / "find3",
                       model="-P", calling_ae="WS_C", called_ae=server.ae_title)
    assert "PA-1" not in patients.values("PatientID") and "PC-1" in patients.values("PatientID")
    mwl = findscu(server.port, ["AccessionNumber", "PatientID", "(0040,0100)[0].Modality"], tmp_path / "mwl",
                  model="-W", calling_ae="WS_C", called_ae=server.ae_title)
    assert mwl.final == "Success" and mwl.values("AccessionNumber") == ["ORD-C"]
    moved = dcmtk("movescu", "-v", "-S", "-aet", "WS_C", "-aec", server.ae_title, "-aem", "WS_C",
                  "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uid_a}", "127.0.0.1", server.port)
    out = moved.stdout + moved.stderr
    assert moved.returncode == 0, out
    assert ws_c.files() == [], "nothing of A may reach C's workstation"
    assert server.logged("nothing matched")
    got_dir = tmp_path / "got"
    got_dir.mkdir()
    got = dcmtk("getscu", "-v", "-S", "-aet", "WS_C", "-aec", server.ae_title, "-od", str(got_dir),
                "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uid_a}", "127.0.0.1", server.port)
    assert got.returncode == 0, got.stdout + got.stderr
    assert list(got_dir.iterdir()) == []
    # C's own study moves as before.
    moved = dcmtk("movescu", "-v", "-S", "-aet", "WS_C", "-aec", server.ae_title, "-aem", "WS_C",
                  "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uid_c}", "127.0.0.1", server.port)
    assert moved.returncode == 0 and len(ws_c.files()) == 1

    # --- a grant: exactly that study ---------------------------------------------------
    with server_archive(server) as archive:
        archive.grants.grant("carol", uid_a, reason="manual", granted_by="admin")
    assert web.get(f"/viewer/studies/{uid_a}.json").status_code == 200
    assert web.get(f"/render/{uid_a}/{series_a}/{sop_a}/0.png").status_code == 200
    assert web.get(f"/viewer/studies/{uid_a2}.json").status_code == 404
    qido = api.get(f"{base}/dicom-web/studies", headers={"Accept": "application/dicom+json"})
    assert {s["0020000D"]["Value"][0] for s in qido.json()} == {uid_c, str(new.StudyInstanceUID), uid_a}
    assert api.get(f"{base}/dicom-web/studies/{uid_a}/metadata").status_code == 200
    assert api.get(f"{base}/dicom-web/studies/{uid_a2}/metadata").status_code == 404
    timeline = web.get(f"/patients/{patient_a}")
    assert timeline.status_code == 200 and uid_a in timeline.text and uid_a2 not in timeline.text
