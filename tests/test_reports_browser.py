"""A report from start to finish against a real `dsmpacs serve`, in headless Chromium
on a 390x844 phone: a radiologist writes from the cerebral DSA template in Chinese,
inserts a measurement made through the annotations API and a key image, signs with
a TOTP code (a wrong one is refused first), then amends with a reason and signs
version 2 with a recovery code. dcmtk movescu and dicomweb-client retrieve the SR
and the PDF; the SR's text and the PDF's (pdftotext) carry the Chinese. Then, at
1440x900, the viewer's Report button opens the editor beside the images with
both versions in its history."""
from __future__ import annotations

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread

from dsmpacs.archive.derived import report_sr
from tests import factories as f
from tests.browser import sign_in
from tests.peers import dcmtk
from tests.reporting import EDITOR, enrol_totp, measure_then_start_from_template, pdf_text, wait_editor
from tests.retrieval import StoreSCP, register
from tests.test_web_totp import code_at
from tests.webclient import add_user

STUDY = "1.2.826.0.1.3680043.8.498.9701"
ADDED = "左侧颈内动脉后交通段见一囊状动脉瘤，瘤颈宽约 3 mm。"
IMPRESSION = "左侧后交通动脉瘤。"
AMENDED = "左侧后交通动脉瘤（修订：瘤颈 3.5 mm）。"


def report_json(page, server) -> dict:
    return page.evaluate("url => DSM.fetch(url).then(r => r.json())", server.url(f"/reports/{STUDY}.json"))


def test_write_sign_amend_and_retrieve_a_chinese_report(server_factory, page, tmp_path):
    server = server_factory()
    xa = f.xa_run(frames=2, size=128, patient=f.Patient("LI^NA", "RPT-WEB"), study_uid=STUDY)
    xa.StudyDescription = "Cerebral angiography"
    assert server.storescu(f.write(xa, tmp_path / "in" / "xa.dcm")).returncode == 0
    series, sop = str(xa.SeriesInstanceUID), str(xa.SOPInstanceUID)
    password = add_user(server, "rad1", "radiologist")
    sign_in(page, server, "rad1", password)
    page.set_viewport_size({"width": 390, "height": 844})
    secret, recovery = enrol_totp(server, "rad1")

    measurement_id, findings = measure_then_start_from_template(page, server, STUDY, series, sop)
    findings.press("End")
    findings.press("Control+End")
    findings.type("\n" + ADDED)
    page.fill("[data-report-impression]", IMPRESSION)
    page.click(f"[data-insert-measurement='{measurement_id}']")
    assert findings.input_value().endswith("长度: 12.50 mm")
    page.click(f"[data-add-key-image='{series}|{sop}|1']")
    wait_editor(page, state="draft", saving="false")
    saved = report_json(page, server)["report"]["current"]
    assert ADDED in saved["findings"] and saved["impression"] == IMPRESSION
    assert [m["label"] for m in saved["measurements"]] == ["长度: 12.50 mm"]
    assert saved["key_images"] == [{"series": series, "sop": sop, "frame": 1}]
    width = page.evaluate("() => [document.documentElement.scrollWidth, "
                          "document.querySelector('[data-report-editor]').getBoundingClientRect().right]")
    assert max(width) <= 390                                                  # nothing wider than the phone
    page.shot("report-draft-390", full_page=True)

    # A wrong code is refused and the draft stays a draft; the right one signs.
    good = code_at(secret, 1)
    page.fill("[data-sign-code]", "000000" if good != "000000" else "111111")
    page.click("[data-action=sign]")
    page.wait_for_function("() => !document.querySelector('[data-report-error]').hidden")
    assert page.locator(EDITOR).get_attribute("data-state") == "draft"
    page.fill("[data-sign-code]", good)
    page.click("[data-action=sign]")
    wait_editor(page, state="final", editable="false")
    v1 = report_json(page, server)["report"]["current"]
    assert (v1["version"], v1["signer"], len(v1["content_hash"])) == (1, "rad1", 64)
    assert page.locator("[data-report-findings]").is_disabled()

    # Amend: version 2 with its reason, signed with a recovery code.
    page.fill("[data-amend-reason]", "瘤颈测量更正")
    page.click("[data-action=amend]")
    wait_editor(page, version="2", editable="true")
    page.fill("[data-report-impression]", AMENDED)
    wait_editor(page, saving="false")
    page.fill("[data-sign-code]", recovery[0])
    page.click("[data-action=sign]")
    wait_editor(page, state="amended", editable="false")
    report = report_json(page, server)["report"]
    v2 = report["current"]
    assert (v2["version"], v2["amendment_reason"], v2["impression"]) == (2, "瘤颈测量更正", AMENDED)
    assert [(v["version"], v["state"]) for v in report["history"]] == [(1, "final"), (2, "amended")]
    assert report["history"][0]["content_hash"] == v1["content_hash"]
    history = page.locator("[data-report-history] li")
    assert history.count() == 2
    assert "瘤颈测量更正" in page.locator("[data-history-version='2'] [data-history-reason]").text_content()
    assert v1["content_hash"] in page.locator("[data-history-version='1'] [data-history-hash]").text_content()
    assert page.locator("[data-history-version='1']").get_attribute("data-verified") == "true"
    pdf_link = page.locator("[data-history-version='1'] [data-history-pdf]").get_attribute("href")
    fetched = page.evaluate("url => fetch(url).then(r => r.arrayBuffer().then(b => [r.headers.get('content-type'), "
                            "new TextDecoder('latin1').decode(b.slice(0, 5))]))", pdf_link)
    assert fetched == ["application/pdf", "%PDF-"]

    # dcmtk movescu brings the SRs and PDFs to a workstation.
    workstation = StoreSCP(tmp_path / "ws", "WORKSTATION").start()
    try:
        register(server, "mover", "MOVER", 104, may_retrieve=True, is_move_destination=False)
        register(server, "ws", "WORKSTATION", workstation.port)
        done = dcmtk("movescu", "-S", "-aet", "MOVER", "-aec", server.ae_title, "-aem", "WORKSTATION",
                     "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY}", "127.0.0.1", server.port)
        assert done.returncode == 0, done.stdout + done.stderr
        received = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in workstation.files()}
    finally:
        workstation.stop()
    assert {v1["sr"], v1["pdf"], v2["sr"], v2["pdf"]} <= set(received)
    sr2 = dcmread(received[v2["sr"]])
    assert report_sr.text_of(sr2) == {"findings": [v2["findings"], "长度: 12.50 mm"], "impressions": [AMENDED]}
    assert ADDED in v2["findings"]
    assert sr2.VerifyingObserverSequence[0].VerifyingObserverName == "rad1"
    assert (sr2.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
            .ReferencedSOPInstanceUID) == v1["sr"]
    assert ADDED in pdf_text(received[v1["pdf"]], tmp_path)

    # dicomweb-client (WADO-RS) retrieves the same objects.
    session = requests.Session()
    session.auth = ("rad1", password)
    client = DICOMwebClient(url=server.url("/dicom-web"), session=session)
    found = {i["00080018"]["Value"][0]: i["0020000E"]["Value"][0]
             for i in client.search_for_instances(study_instance_uid=STUDY)}
    sr1 = client.retrieve_instance(STUDY, found[v1["sr"]], v1["sr"])
    assert report_sr.text_of(sr1) == {"findings": [v1["findings"], "长度: 12.50 mm"], "impressions": [IMPRESSION]}
    pdf2 = client.retrieve_instance(STUDY, found[v2["pdf"]], v2["pdf"])
    pdf2.save_as(tmp_path / "pdf2.dcm", enforce_file_format=True)
    text = pdf_text(tmp_path / "pdf2.dcm", tmp_path)
    assert "修订（第 2 版）：瘤颈测量更正" in text and "全脑血管造影" in text

    # On the phone the viewer's Report button opens the report page (no room for a panel).
    page.goto(server.url(f"/viewer?study={STUDY}"))
    page.click("[data-action=report]")
    page.wait_for_url(f"**/reports/{STUDY}")
    wait_editor(page, state="amended")
    page.shot("report-signed-390", full_page=True)

    # Beside the viewer at 1440x900: the Report button opens the panel with the history.
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto(server.url(f"/viewer?study={STUDY}"))
    page.wait_for_selector("[data-viewport] img[data-image]")
    page.click("[data-action=report]")
    page.wait_for_function("() => document.querySelectorAll('[data-report-panel] [data-history-version]').length === 2")
    panel = page.locator("[data-report-panel]").bounding_box()
    viewports = page.locator("[data-viewports]").bounding_box()
    assert panel["x"] >= viewports["x"] + viewports["width"] - 1 and viewports["width"] > 700
    assert panel["x"] + panel["width"] <= 1440
    page.shot("report-beside-viewer-1440", full_page=False)
    assert page.errors == []
