"""Follow-ups of the reading workflow (docs/workflow.md), in process: a preliminary
report issued, seen by the referring physician as preliminary, then signed final;
an order's priority reaching the study's reading task whichever comes first; and a
study moved to another institution taking its reading task along. The parts that
need the two real processes (a rule's assignment made by the DICOM daemon reaching
the bell, the periodic overdue check, destinations bound to another institution)
are tests/test_workflow_followups_server.py."""
from __future__ import annotations

import re
import subprocess

import pytest
from pydicom import dcmread

from dsmpacs.archive.audit import AuditTrail
from dsmpacs.archive.browse import study_files
from dsmpacs.archive.derived import report_sr
from dsmpacs.archive.derived.reporting import objects_for_signature
from dsmpacs.archive.ingest import Origin
from dsmpacs.archive.institutions import Institutions
from dsmpacs.archive.orders import OrderInput, Orders
from dsmpacs.archive.reconcile import Reconciler
from dsmpacs.archive.reports import Content, ReportError, ReportLocked, Reports
from tests import factories as f
from tests.peers import tool
from tests.webclient import client_as, client_csrf, client_login, make_user

PW = "correct horse battery"
STUDY = "1.2.826.0.1.3680043.8.498.9711"


def arrive(archive, tmp_path, uid: str, *, accession: str, patient_id: str, modality: str = "CT",
           referring: str = "REFERRER^A"):
    """A study arriving as a modality's C-STORE would (origin dicom: the hooks run)."""
    ds = f.ct_slice(size=16, patient=f.Patient("ZHAO^LEI", patient_id), study_uid=uid)
    ds.AccessionNumber, ds.Modality, ds.ReferringPhysicianName = accession, modality, referring
    assert archive.ingest.import_file(f.write(ds, tmp_path / f"{uid}.dcm"), Origin("dicom", "CT1")).archived
    return ds


# --- preliminary reports ------------------------------------------------------------

@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_preliminary_report_is_seen_as_such_then_signed_final(web_app, archive, tmp_path):
    tool("dsrdump")
    arrive(archive, tmp_path, STUDY, accession="", patient_id="PRE-1", referring="SMITH^JOHN")
    make_user(archive, "ref1", "viewer")
    Institutions(archive.index).add_member("ref1", "default", "referring")
    archive.referring.link("ref1", "SMITH^JOHN", by="adm1")
    url = f"/reports/{STUDY}"
    rad = web_app.test_client()
    client_as(rad, archive, "radiologist", "rad1")
    headers = {"X-CSRF-Token": client_csrf(rad, "/studies")}
    body = {"template": "ct-head", "language": "en", "findings": "Hyperdense MCA sign.", "impression": "Stroke?"}
    assert rad.put(url + "/draft", json=body, headers=headers).status_code == 200
    ref = web_app.test_client()
    assert client_login(ref, "ref1").status_code == 302
    assert ref.get(url + ".json").status_code == 404             # a draft shows the referrer nothing

    # Issued preliminary: the same proof of identity as a signature.
    wrong = rad.post(url + "/sign", json={"password": "no", "preliminary": True}, headers=headers)
    assert wrong.status_code == 401
    issued = rad.post(url + "/sign", json={"password": PW, "preliminary": True}, headers=headers)
    assert issued.status_code == 200, issued.data
    report = issued.json["report"]
    assert (report["state"], report["current"]["state"], report["current"]["signer"]) == ("preliminary", "preliminary", "rad1")
    assert report["current"]["sr"] and report["current"]["pdf"] == "" and issued.json["verified"] == [True]
    assert archive.reading.for_study(STUDY).state == "preliminary"
    assert archive.reading.for_study(STUDY).ups_state == "IN PROGRESS"
    files = {x.sop_instance_uid: x for x in study_files(archive.index, STUDY)}
    path = archive.storage.path(files[report["current"]["sr"]].path)
    sr = dcmread(path)
    assert (sr.PreliminaryFlag, sr.CompletionFlag, sr.VerificationFlag) == ("PRELIMINARY", "PARTIAL", "UNVERIFIED")
    assert "VerifyingObserverSequence" not in sr and sr.AuthorObserverSequence[0].PersonName == "rad1"
    dump = subprocess.run(["dsrdump", "+U8", str(path)], capture_output=True, timeout=30)
    assert dump.returncode == 0 and b"PARTIAL" in dump.stdout and b"UNVERIFIED" in dump.stdout, dump.stderr

    # The referring physician sees the study, the report marked preliminary, and a notice.
    seen = ref.get(url + ".json")
    assert seen.status_code == 200 and seen.json["report"]["state"] == "preliminary"
    assert [n.kind for n in archive.notifications.list("ref1")] == ["report-preliminary"]
    page = ref.get("/notifications").get_data(as_text=True)
    assert "A preliminary report on" in page
    # Not amended, not issued twice.
    assert rad.post(url + "/amend", json={"reason": "x"}, headers=headers).status_code == 400

    # Signed final (re-authenticated again): the content becomes version 2.
    final = rad.post(url + "/sign", json={"password": PW}, headers=headers)
    assert final.status_code == 200, final.data
    report = final.json["report"]
    assert report["state"] == "final" and final.json["verified"] == [True, True]
    assert [(v["version"], v["state"]) for v in report["history"]] == [(1, "preliminary"), (2, "final")]
    assert report["current"]["findings"] == body["findings"] and report["current"]["pdf"]
    files = {x.sop_instance_uid: x for x in study_files(archive.index, STUDY)}
    sr2 = dcmread(archive.storage.path(files[report["current"]["sr"]].path))
    assert (sr2.PreliminaryFlag, sr2.CompletionFlag, sr2.VerificationFlag) == ("FINAL", "COMPLETE", "VERIFIED")
    predecessor = sr2.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == report["history"][0]["sr"]
    assert archive.reading.for_study(STUDY).state == "final"
    assert [n.kind for n in archive.notifications.list("ref1")] == ["report-final", "report-preliminary"]
    again = rad.post(url + "/sign", json={"password": PW, "preliminary": True}, headers=headers)
    assert again.status_code == 409
    signs = [e.detail for e in AuditTrail(archive.index).recent(actor="rad1", action="report-sign", limit=10)]
    assert any(" v1 preliminary " in d for d in signs) and any(" v2 final " in d for d in signs)


# The report rows are written by the same queries on either index (tests/test_reports.py runs both).
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_editing_after_a_preliminary_opens_the_next_version(archive, tmp_path):
    ds = arrive(archive, tmp_path, STUDY, accession="", patient_id="PRE-2")
    events = []
    reports = Reports(archive.index, lambda name, **kw: events.append(kw["state"]))
    make = objects_for_signature(archive.index, archive.ingest)
    reports.save_draft(STUDY, "rad1", Content(findings="Preliminary: bleed?"))
    reports.sign(STUDY, "rad1", make, preliminary=True)
    with pytest.raises(ReportError):
        reports.amend(STUDY, "rad1", "why")
    edited = reports.save_draft(STUDY, "rad2", Content(findings="Subarachnoid haemorrhage.", impression="SAH."))
    assert (edited.state, edited.current.version, edited.current.state) == ("preliminary", 2, "draft")
    assert edited.history[0].content.findings == "Preliminary: bleed?"       # the preliminary stays as issued
    final = reports.sign(STUDY, "rad2", make)
    assert (final.state, [v.state for v in final.history]) == ("final", ["preliminary", "final"])
    with pytest.raises(ReportLocked):
        reports.sign(STUDY, "rad2", make, preliminary=True)
    sr = dcmread(archive.storage.path(next(x.path for x in study_files(archive.index, STUDY)
                                           if x.sop_instance_uid == final.current.sr_sop_instance_uid)))
    assert report_sr.text_of(sr)["impressions"] == ["SAH."] and str(sr.PatientID) == str(ds.PatientID)
    assert events == ["in-progress", "preliminary", "final"]


# --- an order's priority ------------------------------------------------------------

def order(accession: str, patient_id: str, priority: str) -> OrderInput:
    return OrderInput(patient_id=patient_id, patient_name="ZHAO^LEI", accession_number=accession,
                      procedure_description="CT head", scheduled_date="2026-12-07", priority=priority,
                      modality="CT")


def test_an_orders_priority_reaches_the_reading_task_whichever_comes_first(archive, tmp_path):
    orders, uid = Orders(archive.index), "1.2.826.0.1.3680043.8.498.9720."
    # Order first, then the images.
    orders.create(order("ORD-1", "P1", "STAT"))
    arrive(archive, tmp_path, uid + "1", accession="ORD-1", patient_id="P1")
    assert archive.reading.for_study(uid + "1").priority == "HIGH"
    # Images first (unknown order), then the order is registered.
    arrive(archive, tmp_path, uid + "2", accession="ORD-2", patient_id="P2")
    assert archive.reading.for_study(uid + "2").priority == "MEDIUM"
    orders.create(order("ORD-2", "P2", "HIGH"))
    assert archive.reading.for_study(uid + "2").priority == "HIGH"
    # Images with another patient ID, then linked on the reconciliation page.
    orders.create(order("ORD-3", "P3", "STAT"))
    arrive(archive, tmp_path, uid + "3", accession="ORD-3", patient_id="P3-TYPO")
    assert archive.reading.for_study(uid + "3").priority == "MEDIUM"
    arrival = next(a for a in Reconciler(archive.index).arrivals() if a.study_instance_uid == uid + "3")
    Reconciler(archive.index).link(arrival.id, "ORD-3", actor="adm1")
    assert archive.reading.for_study(uid + "3").priority == "HIGH"
    # A rule's HIGH is not lowered by an order's LOW; the UPS-RS priority is the task's.
    archive.reading.rules.add(name="mr-urgent", modality="MR", priority="HIGH")
    orders.create(order("ORD-4", "P4", "LOW"))
    arrive(archive, tmp_path, uid + "4", accession="ORD-4", patient_id="P4", modality="MR")
    assert archive.reading.for_study(uid + "4").priority == "HIGH"
    orders.create(order("ORD-5", "P5", "LOW"))
    arrive(archive, tmp_path, uid + "5", accession="ORD-5", patient_id="P5")
    assert archive.reading.for_study(uid + "5").priority == "MEDIUM"     # the rule-less default stays


# --- moving a study -----------------------------------------------------------------

@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_moved_study_takes_its_reading_task_along(web_app, archive, tmp_path):
    east = Institutions(archive.index).create("east", "East Hospital")
    arrive(archive, tmp_path, STUDY, accession="", patient_id="MV-1")
    task = archive.reading.for_study(STUDY)
    assert task.institution == "default"
    from dsmpacs.archive.users import Users
    Users(archive.index).add("rad_east", PW, "radiologist", institution=east.id)
    Users(archive.index).add("rad_home", PW, "radiologist")
    readers = {}
    for name in ("rad_east", "rad_home"):
        readers[name] = web_app.test_client()
        assert client_login(readers[name], name).status_code == 302

    def listed(name):
        return re.findall(r'data-task="(\d+)"', readers[name].get("/reading/").get_data(as_text=True))

    assert (listed("rad_home"), listed("rad_east")) == ([str(task.id)], [])
    admin = web_app.test_client()
    client_as(admin, archive, "admin", "adm1")
    token = client_csrf(admin, "/admin/institutions")
    moved = admin.post("/admin/institutions", data={"op": "move", "study_instance_uid": STUDY,
                                                    "institution": "east", "csrf_token": token})
    assert moved.status_code == 302
    assert archive.reading.for_study(STUDY).institution == "east"
    assert (listed("rad_home"), listed("rad_east")) == ([], [str(task.id)])
    assert [t.id for t in archive.reading.tasks(institution="east")] == [task.id]
    trail = AuditTrail(archive.index).recent(actor="adm1", limit=20)
    assert any(e.action == "study-move" for e in trail)
    assert any(e.action == "reading-state" and e.study_instance_uid == STUDY
               and f"task {task.id} moved to institution east" in e.detail for e in trail)
