"""Follow-ups of the reading workflow against a real `dsmpacs serve` (two processes):
a rule's assignment made by the DICOM daemon when dcmtk storescu delivers the study
reaches the assignee's bell in the web process, and the study's STAT order makes
the task (and its UPS-RS workitem) High; the web process's periodic check
tells the assignee the read is overdue without anyone loading a page; and a
destination bound to another institution receives nothing, by C-MOVE (dcmtk
movescu, 0x0124) or by the web's "send study" (403), until it is bound to the
study's own institution. The in-process parts: tests/test_workflow_followups.py."""
from __future__ import annotations

import re
import subprocess
import sys
from datetime import timedelta

import requests

from dsmpacs.archive.audit import AuditTrail
from dsmpacs.archive.institutions import Institutions
from dsmpacs.archive.models import ReadingTask, utcnow
from dsmpacs.archive.orders import OrderInput, Orders
from dsmpacs.archive.users import Users
from tests import factories as f
from tests.browser import sign_in
from tests.peers import dcmtk, wait_until
from tests.reporting import wait_editor
from tests.retrieval import StoreSCP, register
from tests.webclient import WebSession, add_user, server_archive

PW = "correct horse battery"
STUDY = "1.2.826.0.1.3680043.8.498.9731"


def notes(live, username):
    with server_archive(live) as archive:
        return [n.kind for n in archive.notifications.list(username)]


def test_dicom_arrivals_notify_overdue_is_periodic_and_bound_destinations_refuse(server_factory, tmp_path):
    live = server_factory(overdue_check_seconds=0.3)
    with server_archive(live) as archive:
        east = Institutions(archive.index).create("east", "East Hospital")
        Users(archive.index).add("rad1", PW, "radiologist", institution=east.id)   # reads for the default one
        Users(archive.index).add("adm1", PW, "admin")
        archive.reading.rules.add(name="ct-remote", modality="CT", assignee="rad1", due_hours=1)
        # A STAT order for it: the task (and its UPS workitem) is High, the rule says Medium.
        Orders(archive.index).create(OrderInput(patient_id="P-NOTE", patient_name="SUN^LI", accession_number="ORD-N",
                                                procedure_description="CT head", scheduled_date="2026-12-07",
                                                priority="STAT", modality="CT"))
    ct = f.ct_slice(size=16, patient=f.Patient("SUN^LI", "P-NOTE"), study_uid=STUDY, study_description="CT head")
    ct.AccessionNumber = "ORD-N"
    assert live.storescu(f.write(ct, tmp_path / "ct.dcm")).returncode == 0

    # The DICOM process made the task, assigned it by rule, and told rad1: the bell shows it.
    assert wait_until(lambda: notes(live, "rad1"), what="rad1's notification") == ["assigned"]
    rad1 = WebSession(live)
    assert rad1.login("rad1", PW).status_code == 302
    home = rad1.get("/reading/")
    assert re.search(r'data-unread>1<', home.text), home.text[:2000]
    listing = rad1.get("/notifications").text
    assert 'data-kind="assigned"' in listing and f"/viewer?study={STUDY}" in listing.replace("&amp;", "&")
    with server_archive(live) as archive:
        task = archive.reading.for_study(STUDY)
    assert (task.assignee, task.priority) == ("rad1", "HIGH")
    workitem = requests.get(live.url(f"/dicom-web/workitems/{task.ups_uid}"), auth=("rad1", PW), timeout=30,
                            headers={"Accept": "application/dicom+json"})
    assert workitem.status_code == 200 and workitem.json()[0]["00741200"]["Value"] == ["HIGH"]
    # The task falls due; nobody loads a page; the web process's periodic check tells rad1.
    with server_archive(live) as archive:
        with archive.index.write():
            ReadingTask.update(due_at=utcnow() - timedelta(minutes=5)).where(
                ReadingTask.study_instance_uid == STUDY).execute()
    assert wait_until(lambda: "overdue" in notes(live, "rad1"), timeout=15, what="the overdue notice")
    assert notes(live, "rad1") == ["overdue", "assigned"]

    # A workstation bound to East may not receive a study of the default institution.
    ws = StoreSCP(tmp_path / "ws", "WS_EAST").start()
    try:
        register(live, "ws-east", "WS_EAST", ws.port)
        register(live, "adminws", "ADMINWS", 104, is_move_destination=False)
        with server_archive(live) as archive:
            Institutions(archive.index).bind_ae("ws-east", "east")

        def move():
            return dcmtk("movescu", "-v", "-S", "-aet", "ADMINWS", "-aec", live.ae_title, "-aem", "WS_EAST",
                         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY}", "127.0.0.1",
                         live.port)

        refused = move()
        out = refused.stdout + refused.stderr
        assert "Final Move Response (Unknown Status: 0x124)" in out, out[-2000:]
        assert live.logged("destination WS_EAST is bound to institution east") and ws.files() == []
        admin = WebSession(live)
        assert admin.login("adm1", PW).status_code == 302
        admin.get(f"/studies/{STUDY}")
        sent = admin.post_form(f"/studies/{STUDY}/send", {"peer": "ws-east"})
        assert sent.status_code == 403 and "bound to institution east" in sent.json()["message"]
        assert ws.files() == []
        with server_archive(live) as archive:
            denied = [e for e in AuditTrail(archive.index).recent(limit=100) if e.action == "access-denied"]
        assert any("C-MOVE to WS_EAST" in e.detail and "belongs to default" in e.detail for e in denied)
        assert any(e.actor == "adm1" and "bound to institution east" in e.detail for e in denied)

        # Bound to the study's own institution, the same destination receives it.
        with server_archive(live) as archive:
            Institutions(archive.index).bind_ae("ws-east", "default")
        moved = move()
        assert moved.returncode == 0 and len(ws.files()) == 1, moved.stdout + moved.stderr
        assert admin.post_form(f"/studies/{STUDY}/send", {"peer": "ws-east"}).status_code == 202
    finally:
        ws.stop()


def test_the_dicom_process_raises_notices_without_loading_flask():
    """The DICOM daemon builds the same Archive (its Notifications listen to its events)
    and the mail wording, but Flask stays out of it until a mail is worded."""
    probe = ("import sys; from dsmpacs import app; from dsmpacs.dicom import server; "
             "from dsmpacs.archive import Archive, verification; "
             "print('flask' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stdout + done.stderr


def test_issue_preliminary_then_sign_final_on_a_phone(server_factory, page, tmp_path):
    """The editor at 390x844: *Issue preliminary* with the password, the report shown
    preliminary (still editable, not amendable), then *Sign report* makes version 2
    final; the history lists both."""
    study = "1.2.826.0.1.3680043.8.498.9732"
    live = server_factory()
    ct = f.ct_slice(size=16, patient=f.Patient("QIAN^YU", "P-PRE"), study_uid=study)
    assert live.storescu(f.write(ct, tmp_path / "ct.dcm")).returncode == 0
    password = add_user(live, "rad2", "radiologist")
    sign_in(page, live, "rad2", password)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(live.url(f"/reports/{study}"))
    wait_editor(page, state="none")
    assert page.locator("[data-action=sign-preliminary]").is_visible()
    page.fill("[data-report-findings]", "Hyperdense left MCA.")
    wait_editor(page, state="draft", saving="false")
    page.fill("[data-sign-password]", password)
    page.click("[data-action=sign-preliminary]")
    wait_editor(page, state="preliminary", editable="true")
    assert page.locator("[data-report-state]").text_content() == "Preliminary"
    assert page.locator("[data-report-amend]").is_hidden()
    assert page.locator("[data-action=sign-preliminary]").is_hidden()           # once per version
    assert page.locator("[data-history-version='1']").get_attribute("data-history-state") == "preliminary"
    assert "issued by rad2" in page.locator("[data-history-version='1']").text_content()
    page.shot("report-preliminary-390", full_page=True)
    page.fill("[data-sign-password]", password)
    page.click("[data-action=sign]")
    wait_editor(page, state="final", editable="false")
    states = page.eval_on_selector_all("[data-report-history] li",
                                       "items => items.map(i => i.getAttribute('data-history-state'))")
    assert sorted(states) == ["final", "preliminary"]
    assert page.locator("[data-action=sign-preliminary]").is_hidden()
    with server_archive(live) as archive:
        assert archive.reading.for_study(study).state == "final"
    assert page.errors == []
