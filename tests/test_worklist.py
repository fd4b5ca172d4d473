"""Orders and the Modality Worklist end to end, against a real `dsmpacs serve`:
orders registered on the web page (a Chinese name) and by CSV import (one bad
line reported), dcmtk `findscu -W` as the modality picking its orders by station
AE and date and by a Chinese name in ISO_IR 192, dcmtk `storescu` pushing images
with the accession number (the order shows in progress and the study linked), a
mismatch shown on the reconciliation page and linked by an administrator,
audited. Domain details: tests/test_orders.py."""
from __future__ import annotations

import re

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep

from dsmpacs.archive.audit import AuditTrail
from dsmpacs.archive.orders import Orders, State
from dsmpacs.archive.peers import Peer, PeerRegistry
from dsmpacs.archive.users import Users
from tests import factories as f
from tests.browser import sign_in
from tests.findscu import findscu
from tests.webclient import WebSession, server_archive

PASSWORD = "correct horse battery"
MWL_KEYS = ["AccessionNumber", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
            "StudyInstanceUID", "RequestedProcedureID", "RequestedProcedureDescription",
            "RequestedProcedurePriority", "RequestingPhysician",
            "(0040,0100)[0].ScheduledStationAETitle", "(0040,0100)[0].ScheduledProcedureStepStartDate",
            "(0040,0100)[0].ScheduledProcedureStepStartTime", "(0040,0100)[0].Modality",
            "(0040,0100)[0].ScheduledProcedureStepID", "(0040,0100)[0].ScheduledProcedureStepStatus"]


def listing_orders(server, accession: str = ""):
    with server_archive(server) as archive:
        return Orders(archive.index).list(text=accession)


def mpps(server, kind: str, uid: str, status: str, accession: str = "") -> int:
    """One N-CREATE or N-SET from a pynetdicom SCU (dcmtk has no MPPS SCU)."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", server.port, ae_title=server.ae_title)
    assert assoc.is_established
    try:
        ds = Dataset()
        ds.PerformedProcedureStepStatus = status
        if kind == "create":
            item = Dataset()
            item.AccessionNumber = accession
            item.ScheduledProcedureStepID = accession
            ds.ScheduledStepAttributesSequence = [item]
            ds.Modality = "CT"
            answer, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, uid)
        else:
            answer, _ = assoc.send_n_set(ds, ModalityPerformedProcedureStep, uid)
        return int(answer.Status)
    finally:
        assoc.release()


def worklist(server, tmp_path, name, *keys, calling_ae="MODALITY"):
    return findscu(server.port, [*MWL_KEYS, *keys], tmp_path / name, model="-W", calling_ae=calling_ae)


@pytest.mark.slow
def test_orders_worklist_arrivals_and_reconciliation(server_factory, database_url, tmp_path, page):
    server = server_factory(database_url=database_url)
    with server_archive(server) as archive:
        users = Users(archive.index)
        for name, role in (("root", "admin"), ("rad1", "radiologist"), ("view1", "viewer")):
            users.add(name, PASSWORD, role)
        PeerRegistry(archive.index).add(Peer(name="ct", ae_title="MODALITY", host="127.0.0.1", port=104))
        PeerRegistry(archive.index).add(Peer(name="ws", ae_title="NOFIND", host="127.0.0.1", port=104,
                                             may_find=False))

    # Registration: the form in a real browser, with a Chinese name, by a radiologist
    # (there is no registrar role yet)
    sign_in(page, server, "rad1", PASSWORD)
    page.click("[data-nav=orders]")
    page.click("a[href='/orders/new']")
    for name, value in (("patient_name", "王^小明"), ("patient_id", "MWL-1"), ("birth_date", "1971-02-03"),
                        ("procedure_description", "脑血管造影"), ("modality", "XA"), ("station_ae", "ANGIO1"),
                        ("scheduled_date", "2026-12-07"), ("scheduled_time", "08:30"),
                        ("requesting_physician", "李^华")):
        page.fill(f"[data-form=order-new] [name={name}]", value)
    page.select_option("[name=sex]", "M")
    page.select_option("[name=priority]", "HIGH")
    page.click("[data-action=create-order]")
    page.wait_for_selector("table[data-table=orders] tr[data-order]")
    assert page.locator("tr[data-order] td").nth(2).text_content() == "王小明"
    assert page.errors == []
    web = WebSession(server)
    web.login("rad1", PASSWORD)
    # CSV import: three orders, the second line bad
    csv_text = ("patient_id,patient_name,procedure_description,scheduled_date,scheduled_time,modality,"
                "station_ae,accession_number\n"
                "CSV-1,Zhang^San,CT head,2026-12-07,09:00,CT,CT1,CSVACC1\n"
                "CSV-2,Li^Si,CT chest,2026-12-32,10:00,CT,CT1,CSVACC2\n"
                "CSV-3,赵^六,CT abdomen,2026-12-08,11:00,CT,CT1,CSVACC3\n")
    web.cookies.set("dsmpacs_lang", "zh-Hans")        # the registrar reads Chinese
    assert web.get("/orders").status_code == 200
    imported = web.post("/orders/import", data={"csrf_token": web.csrf_token},
                        files={"file": ("orders.csv", csv_text.encode("utf-8"), "text/csv")})
    assert imported.status_code == 200
    page = imported.text
    assert 'data-import-created="2"' in page
    errors = re.findall(r'data-import-error-line="(\d+)"', page)
    assert errors == ["3"], page[-3000:]
    assert "第 3 行：日期不是有效日期（YYYY-MM-DD）。" in page
    listing = web.get("/orders").text
    assert "王小明" in listing and "CSVACC3" in listing and "CSVACC2" not in listing
    with server_archive(server) as archive:
        orders = Orders(archive.index)
        angio = next(o for o in orders.list() if o.patient_id == "MWL-1")
    assert angio.state is State.SCHEDULED and angio.priority == "HIGH"

    # The modality asks by its station AE and the day
    by_station = worklist(server, tmp_path, "station", "(0040,0100)[0].ScheduledStationAETitle=ANGIO1",
                          "(0040,0100)[0].ScheduledProcedureStepStartDate=20261207")
    assert by_station.final == "Success" and by_station.pending == ["Pending"]
    assert by_station.values("AccessionNumber") == [angio.accession_number]
    answer = by_station.responses[0]
    assert answer.SpecificCharacterSet == "ISO_IR 192"
    assert str(answer.PatientName) == "王^小明" and answer.RequestedProcedureDescription == "脑血管造影"
    assert answer.StudyInstanceUID == angio.study_instance_uid
    step = answer.ScheduledProcedureStepSequence[0]
    assert (step.Modality, step.ScheduledStationAETitle, step.ScheduledProcedureStepStartTime,
            step.ScheduledProcedureStepStatus) == ("XA", "ANGIO1", "083000", "SCHEDULED")
    day = worklist(server, tmp_path, "day", "(0040,0100)[0].ScheduledProcedureStepStartDate=20261207-20261207",
                   "(0040,0100)[0].Modality=CT")
    assert day.values("AccessionNumber") == ["CSVACC1"]
    # ... and by a Chinese name, the query itself in UTF-8
    by_name = worklist(server, tmp_path, "name", "(0008,0005)=ISO_IR 192", "PatientName=赵*".encode("utf-8"))
    assert by_name.values("AccessionNumber") == ["CSVACC3"]
    assert str(by_name.responses[0].PatientName) == "赵^六"
    # a key the archive does not hold: returned empty, with the warning status
    unsupported = worklist(server, tmp_path, "unsupported", "PatientComments", "PatientWeight",
                           "AccessionNumber=CSVACC3")
    assert unsupported.pending == ["Pending: WarningUnsupportedOptionalKeys"]
    assert unsupported.responses[0].PatientComments == "" and "SpecificCharacterSet" in unsupported.responses[0]
    # same access policy as C-FIND
    refused = worklist(server, tmp_path, "refused", calling_ae="NOFIND")
    assert refused.final.endswith("0x124") and refused.responses == []

    # Images arrive with the accession number: the order is in progress, the study linked
    ds = f.secondary_capture(size=16, accession=angio.accession_number, study_uid=angio.study_instance_uid,
                             patient=f.Patient(name="WANG^XIAOMING", patient_id="MWL-1"), modality="XA")
    sent = server.storescu(f.write(ds, tmp_path / "angio.dcm"))
    assert sent.returncode == 0, sent.stderr
    listing = web.get("/orders").text
    row = re.search(rf'<tr data-order="{angio.accession_number}" data-state="([a-z-]+)"', listing)
    assert row and row.group(1) == "in-progress", listing[-3000:]
    assert angio.study_instance_uid in listing
    in_progress = worklist(server, tmp_path, "started", "(0040,0100)[0].ScheduledStationAETitle=ANGIO1")
    assert in_progress.responses[0].ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus == "STARTED"

    # A mismatch: known accession number, another patient ID; waits for reconciliation
    wrong = f.secondary_capture(size=16, accession="CSVACC1", patient=f.Patient(patient_id="OTHER-9"),
                                modality="CT")
    assert server.storescu(f.write(wrong, tmp_path / "wrong.dcm")).returncode == 0
    assert web.get("/orders/reconcile").status_code == 200
    admin = WebSession(server)
    admin.login("root", PASSWORD)
    page = admin.get("/orders/reconcile").text
    found = re.search(rf'data-arrival="(\d+)" data-study="{wrong.StudyInstanceUID}" '
                      r'data-outcome="patient-differs"', page)
    assert found, page[-3000:]
    # linking is an administrator's decision
    assert web.post_form(f"/orders/reconcile/{found.group(1)}/link",
                         {"accession_number": "CSVACC1"}).status_code == 403
    linked = admin.post_form(f"/orders/reconcile/{found.group(1)}/link", {"accession_number": "CSVACC1"})
    assert linked.status_code == 302
    assert wrong.StudyInstanceUID not in admin.get("/orders/reconcile").text
    # the registrar completes the angiography order: the modality no longer sees it
    assert web.post_form(f"/orders/{angio.id}/state", {"state": "completed"}).status_code == 302
    done = worklist(server, tmp_path, "done", "(0040,0100)[0].ScheduledStationAETitle=ANGIO1")
    assert done.final == "Success" and done.responses == []
    assert 'data-state="completed"' in web.get("/orders", params={"q": angio.accession_number}).text
    # MPPS: the CT modality starts the CSVACC3 procedure, then completes it
    uid = generate_uid(prefix=None)
    csv3 = [o for o in listing_orders(server) if o.accession_number == "CSVACC3"][0]
    assert mpps(server, "create", uid, "IN PROGRESS", "CSVACC3") == 0x0000
    assert listing_orders(server, "CSVACC3")[0].state is State.IN_PROGRESS
    assert mpps(server, "create", uid, "IN PROGRESS", "CSVACC3") == 0x0111      # duplicate
    assert mpps(server, "set", uid, "COMPLETED") == 0x0000
    assert listing_orders(server, "CSVACC3")[0].state is State.COMPLETED
    assert mpps(server, "set", uid, "DISCONTINUED") == 0x0110                    # final
    assert mpps(server, "set", generate_uid(prefix=None), "COMPLETED") == 0x0112  # unknown step
    assert csv3.state is State.SCHEDULED
    # a viewer may not register orders
    viewer = WebSession(server)
    viewer.login("view1", PASSWORD)
    assert viewer.get("/orders").status_code == 403
    with server_archive(server) as archive:
        csv1 = Orders(archive.index).by_accession("CSVACC1")
        trail = AuditTrail(archive.index).recent(limit=200)
    assert csv1.state is State.IN_PROGRESS
    actions = [(e.action, e.actor) for e in trail]
    assert ("order-link", "root") in actions and ("order-create", "rad1") in actions
    assert ("order-import", "rad1") in actions and ("order-state", "rad1") in actions
    queries = [e for e in trail if e.action == "search" and "WORKLIST" in e.detail]
    assert any(e.actor == "ae:MODALITY" and e.patient_name == "赵*" for e in queries), queries
