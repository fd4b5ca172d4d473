"""Helpers of the report tests in the browser (test_reports_browser.py and the
workflow's end-to-end test): a second factor, the editor's state, a PDF's text, and
a measurement followed by a template, as a radiologist starts a report."""
from __future__ import annotations

import subprocess

from pydicom import dcmread

from dsmpacs.archive.derived import report_pdf
from tests.peers import tool
from tests.test_web_totp import code_at
from tests.webclient import server_archive

EDITOR = "[data-report-editor]"


def enrol_totp(server, username: str) -> tuple[str, list[str]]:
    """Give the user a second factor as the enrolment page would (tested elsewhere)."""
    from dsmpacs.archive.totp import SecondFactor
    from dsmpacs.archive.users import Users

    with server_archive(server) as archive:
        account = Users(archive.index).by_name(username)
        factor = SecondFactor(archive.index)
        secret = factor.begin(account)
        codes = factor.confirm(account, code_at(secret))
    assert codes
    return secret, codes


def wait_editor(page, **attrs) -> None:
    condition = " && ".join(f"e.getAttribute('data-{k}') === '{v}'" for k, v in attrs.items())
    page.wait_for_function(f"() => {{ const e = document.querySelector('{EDITOR}'); return e && {condition}; }}")


def pdf_text(path, tmp_path) -> str:
    ds = dcmread(path)
    assert (ds.SOPClassUID, ds.MIMETypeOfEncapsulatedDocument) == (report_pdf.ENCAPSULATED_PDF, "application/pdf")
    out = tmp_path / f"{ds.SOPInstanceUID}.pdf"
    out.write_bytes(bytes(ds.EncapsulatedDocument)[:int(ds.EncapsulatedDocumentLength)])
    return subprocess.run([tool("pdftotext"), str(out), "-"], capture_output=True, check=True,
                          timeout=30).stdout.decode("utf-8")


def measure_then_start_from_template(page, server, study: str, series: str, sop: str):
    """On the report page of ``study``: a 12.50 mm length on frame 1 through the
    annotations API, as the viewer makes one, then the cerebral DSA template in
    Chinese. Returns (the measurement's id, the findings field)."""
    page.goto(server.url(f"/reports/{study}"))
    wait_editor(page, state="none")
    stored = page.evaluate("""([url, body]) => DSM.fetch(url, {method: 'PUT', body: JSON.stringify(body),
            headers: {'Content-Type': 'application/json'}}).then(r => r.json())""",
                           [server.url(f"/viewer/annotations/{study}/{series}/{sop}/1.json"),
                            {"annotations": [{"kind": "length", "points": [[10, 10], [60, 10]],
                                              "label": "12.50 mm"}]}])
    page.reload()
    wait_editor(page, state="none")
    page.select_option("[data-report-language]", "zh-Hans")
    page.select_option("[data-report-template]", "cerebral-dsa")
    page.click("[data-action=apply-template]")
    findings = page.locator("[data-report-findings]")
    assert findings.input_value().startswith("技术：经右股动脉入路")          # the template, in Chinese
    return stored["annotations"][0]["id"], findings
