"""Issue 12 end to end, on one real `dsmpacs serve` (SQLite): institutions A, B and
C; a registrar of A registers an order on the web form; dcmtk `findscu -W` as A's
modality gets it; dcmtk `storescu` pushes an XA run with its accession number and
the study is A's reading task, matched to the order; a coordinator assigns it to a
radiologist of B, who on a 390x844 phone sees only that study (not A's other one),
takes the UPS-RS workitem IN PROGRESS as PS3.18's examples do (the web worklist
shows the same state), writes from a template with a measurement, signs with TOTP,
amends (version 2, version 1 kept in the history); the SR and the PDF come back
through dcmtk movescu and dicomweb-client with the Chinese text; a user of C gets
nothing; a share link works until revoked, its use audited. Each part is tested
in depth elsewhere (test_worklist, test_tenancy_routes, test_reading_server,
test_reports_browser, test_sharing_browser); this one joins them.

Key screens are saved as PNGs; with DSMPACS_DOC_SHOTS=<dir> also copied there
(docs/img/workflow holds the ones docs/workflow.md shows)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread

from dsmpacs.archive.audit import AuditTrail
from dsmpacs.archive.derived import report_sr
from dsmpacs.archive.institutions import Institutions
from dsmpacs.archive.models import Order as OrderRow
from dsmpacs.archive.orders import Orders, State
from dsmpacs.archive.peers import Peer, PeerRegistry
from dsmpacs.archive.users import Users
from tests import factories as f
from tests.browser import sign_in
from tests.findscu import findscu
from tests.peers import dcmtk, wait_until
from tests.reporting import enrol_totp, measure_then_start_from_template, pdf_text, wait_editor
from tests.retrieval import StoreSCP, register
from tests.test_reading_server import state_body, ups, value
from tests.test_web_totp import code_at
from tests.test_worklist import MWL_KEYS
from tests.webclient import WebSession, server_archive

PW = "correct horse battery"
PHONE = {"width": 390, "height": 844}
FINDING = "左侧颈内动脉后交通段见一囊状动脉瘤。"
IMPRESSION = "左侧后交通动脉瘤。"
AMENDED = "左侧后交通动脉瘤（修订）。"
TRANSACTION = "1.2.826.0.1.3680043.8.498.8911"


# Read once, then taken out of the environment: the server refuses any DSMPACS_*
# variable that is not one of its settings (settings.py), and inherits ours.
DOC_SHOTS = os.environ.get("DSMPACS_DOC_SHOTS", "")


def shot(page, name: str) -> Path:
    """A phone-size PNG of the visible screen; also into DSMPACS_DOC_SHOTS if set."""
    saved = page.shot(name, full_page=False)
    target = DOC_SHOTS
    if target:
        # A 64-colour palette keeps even the noisy test image well under 150 KB in the repository.
        from PIL import Image

        Path(target).mkdir(parents=True, exist_ok=True)
        Image.open(saved).convert("RGB").quantize(colors=64).save(Path(target) / saved.name, optimize=True)
    return saved


@pytest.mark.slow
def test_order_to_signed_shared_report_across_institutions(server_factory, page, tmp_path, monkeypatch):
    monkeypatch.delenv("DSMPACS_DOC_SHOTS", raising=False)
    live = server_factory()
    with server_archive(live) as archive:
        Users(archive.index).add("coord", PW, "admin")
    # The institutions and the modality's binding through the administration page.
    coord = WebSession(live)
    coord.login("coord", PW)
    coord.get("/admin/institutions")
    with server_archive(live) as archive:
        PeerRegistry(archive.index).add(Peer("angio-a", "ANGIO_A", "127.0.0.1", 104))
    for form in ({"op": "create", "code": "a", "name": "Hospital A"}, {"op": "create", "code": "b", "name": "Hospital B"},
                 {"op": "create", "code": "c", "name": "Hospital C"}, {"op": "bind", "peer": "angio-a", "institution": "a"}):
        assert coord.post_form("/admin/institutions", form).status_code == 302, form
    with server_archive(live) as archive:
        inst = Institutions(archive.index)
        a, b, c = (inst.get(code) for code in "abc")
        users = Users(archive.index)
        users.add("reg_a", PW, "radiologist", institution=a.id)
        users.add("rad_b", PW, "radiologist", institution=b.id)
        users.add("carol", PW, "radiologist", institution=c.id)
    assert coord.post_form("/admin/institutions", {"op": "member", "username": "reg_a", "institution": "a",
                                                   "role": "registrar"}).status_code == 302

    # 1. The registrar of A registers the order on the web form; the modality of A finds it.
    reg = WebSession(live)
    reg.login("reg_a", PW)
    reg.get("/orders/new")
    form = {"patient_name": "王^小明", "patient_id": "E2E-1", "birth_date": "1971-02-03", "sex": "M",
            "procedure_description": "脑血管造影", "modality": "XA", "station_ae": "ANGIO_A",
            "scheduled_date": "2026-12-07", "scheduled_time": "08:30", "priority": "HIGH"}
    assert reg.post_form("/orders/new", form).status_code == 302
    with server_archive(live) as archive:
        (order,) = Orders(archive.index).list(text="E2E-1")
        with archive.index.read():
            assert OrderRow.get(OrderRow.accession_number == order.accession_number).institution == a.id
    assert order.state is State.SCHEDULED
    mwl = findscu(live.port, [*MWL_KEYS, "(0040,0100)[0].ScheduledStationAETitle=ANGIO_A"], tmp_path / "mwl",
                  model="-W", calling_ae="ANGIO_A")
    assert mwl.final == "Success" and mwl.values("AccessionNumber") == [order.accession_number]
    assert str(mwl.responses[0].PatientName) == "王^小明"

    # 2. Another study of A first, then the XA run with the order's accession number.
    other = f.secondary_capture(size=16, patient=f.Patient("ALPHA^ANNA", "E2E-2"), study_description="Other A")
    xa = f.xa_run(frames=2, size=128, patient=f.Patient("WANG^XIAOMING", "E2E-1"),
                  study_uid=order.study_instance_uid, accession=order.accession_number)
    xa.StudyDescription = "Cerebral angiography"
    study, other_uid = order.study_instance_uid, str(other.StudyInstanceUID)
    series, sop = str(xa.SeriesInstanceUID), str(xa.SOPInstanceUID)
    sent = live.storescu(f.write(other, tmp_path / "in" / "other.dcm"), f.write(xa, tmp_path / "in" / "xa.dcm"),
                         extra=("-aet", "ANGIO_A"))
    assert sent.returncode == 0, sent.stderr

    def task():
        with server_archive(live) as archive:
            return archive.reading.for_study(study)
    found = wait_until(task, what="the reading task of the XA study")
    assert (found.institution, found.accession_number, found.state) == ("a", order.accession_number, "unread")
    with server_archive(live) as archive:
        linked = Orders(archive.index).by_accession(order.accession_number)
        assert inst_of(archive, study) == inst_of(archive, other_uid) == a.id
    assert linked.state is State.IN_PROGRESS and linked.study_instance_uid == study

    # 3. The coordinator assigns it to B's radiologist, who sees that study and no other of A's.
    reading = coord.get("/reading/").text
    assert order.accession_number in reading
    assert coord.post_form(f"/reading/{found.id}/assign", {"assignee": "rad_b"}).status_code == 302
    rad_b = WebSession(live)
    rad_b.login("rad_b", PW)
    listing = rad_b.get("/studies").text
    assert "WANG" in listing and "ALPHA" not in listing and other_uid not in listing
    assert rad_b.get(f"/viewer/studies/{study}.json").status_code == 200
    assert rad_b.get(f"/viewer/studies/{other_uid}.json").status_code == 404

    # 7. UPS-RS as PS3.18's examples: search, retrieve, change state; the web worklist agrees.
    status, _, items = ups(live, "rad_b", "GET", "/workitems?ProcedureStepState=SCHEDULED&includefield=all")
    assert status == 200 and [value(i, "00080018") for i in items] == [found.ups_uid]
    assert value(items[0], "00404021", "0020000D") == study
    status, _, (item,) = ups(live, "rad_b", "GET", f"/workitems/{found.ups_uid}")
    assert status == 200 and value(item, "00741000") == "SCHEDULED"
    assert ups(live, "rad_b", "PUT", f"/workitems/{found.ups_uid}/state",
               state_body("IN PROGRESS", TRANSACTION))[0] == 200
    sign_in(page, live, "rad_b", PW)
    page.set_viewport_size(PHONE)
    # In the phone's browser too: the study list holds only that study, A's other one answers 404.
    page.goto(live.url("/studies"))
    rows = page.locator(f"[data-study='{study}'], a[href*='{study}']")
    assert rows.count() >= 1 and other_uid not in page.content() and "ALPHA" not in page.content()
    assert page.evaluate("url => fetch(url).then(r => r.status)",
                         live.url(f"/viewer/studies/{other_uid}.json")) == 404
    assert page.evaluate("url => fetch(url).then(r => r.status)", live.url(f"/viewer/studies/{study}.json")) == 200
    page.goto(live.url("/reading/"))
    card = page.locator(f"[data-task='{found.id}']")
    assert card.get_attribute("data-ups-state") == "IN PROGRESS" and card.get_attribute("data-assignee") == "rad_b"
    assert page.locator("[data-task]").count() == 1
    shot(page, "worklist-phone")

    # The report on the phone: template, a measurement, TOTP signature.
    secret, recovery = enrol_totp(live, "rad_b")
    measurement, findings = measure_then_start_from_template(page, live, study, series, sop)
    findings.press("Control+End")
    findings.type("\n" + FINDING)
    page.fill("[data-report-impression]", IMPRESSION)
    page.click(f"[data-insert-measurement='{measurement}']")
    assert findings.input_value().endswith("长度: 12.50 mm")
    wait_editor(page, state="draft", saving="false")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    shot(page, "report-editor-phone")
    page.fill("[data-sign-code]", code_at(secret, 1))
    page.click("[data-action=sign]")
    wait_editor(page, state="final", editable="false")
    v1 = report_of(page, live, study)["current"]
    assert (v1["version"], v1["signer"]) == (1, "rad_b")

    # 5. The amendment: version 2 with its reason; version 1 stays in the history.
    page.fill("[data-amend-reason]", "瘤颈测量更正")
    page.click("[data-action=amend]")
    wait_editor(page, version="2", editable="true")
    page.fill("[data-report-impression]", AMENDED)
    wait_editor(page, saving="false")
    page.fill("[data-sign-code]", recovery[0])
    page.click("[data-action=sign]")
    wait_editor(page, state="amended", editable="false")
    report = report_of(page, live, study)
    v2 = report["current"]
    assert (v2["version"], v2["amendment_reason"]) == (2, "瘤颈测量更正")
    assert [(v["version"], v["state"]) for v in report["history"]] == [(1, "final"), (2, "amended")]
    assert page.locator("[data-report-history] li").count() == 2
    assert page.locator("[data-history-version='1']").get_attribute("data-verified") == "true"
    assert "瘤颈测量更正" in page.locator("[data-history-version='2'] [data-history-reason]").text_content()
    page.locator("[data-report-history]").scroll_into_view_if_needed()
    shot(page, "report-history-phone")
    # the signature completed the workitem; the web worklist says so too
    status, _, (item,) = ups(live, "rad_b", "GET", f"/workitems/{found.ups_uid}")
    assert value(item, "00741000") == "COMPLETED"
    assert task().state == "amended"
    worklist = coord.get("/reading/", params={"state": "amended"}).text
    card = re.search(rf'data-task="{found.id}"[^>]*data-ups-state="([A-Z ]+)"', worklist)
    assert card and card.group(1) == "COMPLETED", worklist[-3000:]

    # 4. The signed report as SR and Encapsulated PDF: dcmtk movescu, then dicomweb-client.
    workstation = StoreSCP(tmp_path / "ws", "WORKSTATION").start()
    try:
        register(live, "mover", "MOVER", 104, may_retrieve=True, is_move_destination=False)
        register(live, "ws", "WORKSTATION", workstation.port)
        moved = dcmtk("movescu", "-S", "-aet", "MOVER", "-aec", live.ae_title, "-aem", "WORKSTATION",
                      "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", "127.0.0.1", live.port)
        assert moved.returncode == 0, moved.stdout + moved.stderr
        received = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in workstation.files()}
    finally:
        workstation.stop()
    assert {v1["sr"], v1["pdf"], v2["sr"], v2["pdf"]} <= set(received)
    assert report_sr.text_of(dcmread(received[v1["sr"]]))["impressions"] == [IMPRESSION]
    assert FINDING in pdf_text(received[v1["pdf"]], tmp_path)
    session = requests.Session()
    session.auth = ("rad_b", PW)
    client = DICOMwebClient(url=live.url("/dicom-web"), session=session)
    placed = {i["00080018"]["Value"][0]: i["0020000E"]["Value"][0]
              for i in client.search_for_instances(study_instance_uid=study)}
    sr2 = client.retrieve_instance(study, placed[v2["sr"]], v2["sr"])
    assert report_sr.text_of(sr2) == {"findings": [v2["findings"], "长度: 12.50 mm"], "impressions": [AMENDED]}
    pdf2 = client.retrieve_instance(study, placed[v2["pdf"]], v2["pdf"])
    pdf2.save_as(tmp_path / "pdf2.dcm", enforce_file_format=True)
    text = pdf_text(tmp_path / "pdf2.dcm", tmp_path)
    assert "修订（第 2 版）：瘤颈测量更正" in text and FINDING in text

    # 6. A user of C gets nothing of the study (every route in depth: test_tenancy_routes).
    carol = WebSession(live)
    carol.login("carol", PW)
    assert "WANG" not in carol.get("/studies").text
    api = requests.Session()
    api.auth = ("carol", PW)
    hidden = {
        "viewer JSON": (carol, f"/viewer/studies/{study}.json"),
        "render": (carol, f"/render/{study}/{series}/{sop}/0.png"),
        "ZIP": (carol, f"/studies/{study}/download.zip"),
        "report": (carol, f"/reports/{study}.json"),
        "WADO-RS": (api, f"/dicom-web/studies/{study}/metadata"),
        "WADO-RS SR": (api, f"/dicom-web/studies/{study}/series/{placed[v2['sr']]}/instances/{v2['sr']}"),
        "WADO-URI": (api, f"/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}"
                          "&contentType=application/dicom"),
    }
    statuses = {what: (s.get(path) if s is carol else s.get(live.web_url + path)).status_code
                for what, (s, path) in hidden.items()}
    assert statuses == {what: 404 for what in hidden}, statuses
    qido = api.get(live.web_url + "/dicom-web/studies", params={"PatientID": "E2E-1"})
    assert qido.status_code == 204 or qido.json() == []

    # 8. A share link for a colleague outside: it opens the viewer until revoked; audited.
    created = rad_b.post_form(f"/studies/{study}/shares", {"days": "2", "label": "Dr Outside"})
    assert created.status_code == 201, created.text[-2000:]
    shown = re.search(r'value="([^"]+)" data-share-link', created.text)      # shares/created.html, shown once
    assert shown and "/s/" in shown.group(1)
    link = shown.group(1)
    guest_context = page.context.browser.new_context(viewport=PHONE)
    guest = guest_context.new_page()
    guest.set_default_timeout(15000)
    guest.shot = lambda name, full_page=False: _guest_shot(guest, tmp_path, name)
    try:
        guest.goto(link)
        guest.wait_for_function(
            """() => { const img = document.querySelector('[data-viewport] [data-image]');
                 return img && img.complete && img.naturalWidth > 0; }""")
        assert study in guest.url and "/s/" not in guest.url
        shot(guest, "share-view-phone")
        with server_archive(live) as archive:
            (share,) = archive_shares(archive, study)
        assert rad_b.post_form(f"/studies/{study}/shares/{share}/revoke", {}).status_code == 302
        assert guest.goto(live.url(f"/viewer?study={study}")).status == 401
        assert guest.goto(link).status == 410
    finally:
        guest_context.close()
    with server_archive(live) as archive:
        rows = AuditTrail(archive.index).recent(limit=300)
    uses = [(r.outcome, r.detail) for r in rows if r.action == "share-use" and r.study_instance_uid == study]
    assert ("ok", f"share {share} opened") in uses and any("revoked" in d for _, d in uses), uses
    seen = {(r.action, r.actor) for r in rows}
    assert {("order-create", "reg_a"), ("reading-assign", "coord"), ("share-create", "rad_b"),
            ("share-revoke", "rad_b")} <= seen
    assert page.errors == []


def inst_of(archive, study_uid: str) -> int:
    return Institutions(archive.index).institution_of(study_uid)


def report_of(page, live, study: str) -> dict:
    return page.evaluate("url => DSM.fetch(url).then(r => r.json())", live.url(f"/reports/{study}.json"))["report"]


def archive_shares(archive, study: str) -> list[int]:
    from dsmpacs.archive.shares import Shares

    return [s.id for s in Shares(archive.index).for_study(study)]


def _guest_shot(guest, tmp_path, name: str) -> Path:
    target = tmp_path / "screenshots" / f"{name}.png"
    target.parent.mkdir(exist_ok=True)
    guest.screenshot(path=str(target), full_page=False)
    return target
