"""Reports (archive/reports.py) on SQLite and MariaDB: drafts saved in place, the
signature's content hash, a signed version read only, an amendment as version 2
that keeps version 1, the history, the report.state events, the migration; and
the SR and PDF the signature stores, checked by dcmtk dsrdump and pdftotext."""
from __future__ import annotations

import hashlib
import json
import subprocess

import pytest
from pydicom import dcmread

from dsmpacs.archive import database
from dsmpacs.archive.browse import study_files
from dsmpacs.archive.derived import report_pdf, report_sr
from dsmpacs.archive.derived.reporting import objects_for_signature
from dsmpacs.archive.ingest import Origin
from dsmpacs.archive.models import Report, ReportVersion, SchemaVersion
from dsmpacs.archive.reports import (
    Content,
    ReportError,
    ReportLocked,
    Reports,
    canonical_content,
    templates,
)
from tests import factories as f
from tests.peers import tool

VERSION_BEFORE = 11          # the schema version before reports (one edit when renumbered)
STUDY = "1.2.826.0.1.3680043.8.498.9601"
FINDINGS = "左侧大脑中动脉M1段见一囊状动脉瘤，大小约 5 mm。"


@pytest.fixture
def study(archive, tmp_path):
    ds = f.xa_run(frames=3, size=64, patient=f.Patient("王^小明", "RPT-1"), study_uid=STUDY)
    ds.SpecificCharacterSet = "ISO_IR 192"
    assert archive.ingest.import_file(f.write(ds, tmp_path / "xa.dcm"), Origin("import")).archived
    return ds


def reports_of(archive, seen=None):
    return Reports(archive.index, lambda name, **fields: seen.append((name, fields)) if seen is not None else None)


def content(ds, **kw) -> Content:
    data = {"template": "cerebral-dsa", "language": "zh-Hans", "findings": FINDINGS, "impression": "左MCA动脉瘤。",
            "measurements": [{"id": 1, "kind": "length", "label": "长度 5.00 mm", "series": str(ds.SeriesInstanceUID),
                              "sop": str(ds.SOPInstanceUID), "frame": 1}],
            "key_images": [{"series": str(ds.SeriesInstanceUID), "sop": str(ds.SOPInstanceUID), "frame": 1}]}
    data.update(kw)
    return Content.parse(data)


def test_templates_cover_the_procedures_in_both_languages():
    found = templates()
    assert list(found) == ["cerebral-dsa", "coil-embolisation", "ct-head"]
    for template in found.values():
        assert template.title["en"] and template.title["zh-Hans"] != template.title["en"]
        assert template.findings["zh-Hans"]
    assert "前循环" in found["cerebral-dsa"].as_dict("zh-Hans")["findings"]


def test_draft_sign_amend_history_and_events(archive, study):
    seen = []
    reports = reports_of(archive, seen)
    first = reports.save_draft(STUDY, "rad1", content(study, findings="draft one"))
    again = reports.save_draft(STUDY, "rad1", content(study))           # autosave: same row, new text
    assert (first.id, again.current.version, again.state) == (again.id, 1, "draft")
    assert again.current.content.findings == FINDINGS
    with archive.index.read():
        assert ReportVersion.select().count() == 1
    assert [e[1]["state"] for e in seen] == ["in-progress"]              # once, not per save

    # A save arriving while the objects are made: the signature would not cover it.
    def late_save(view, version):
        reports.save_draft(STUDY, "rad1", content(study, findings="typed while signing"))
        return "", ""

    with pytest.raises(ReportLocked):
        reports.sign(STUDY, "rad2", late_save)
    reports.save_draft(STUDY, "rad1", content(study))
    signed = reports.sign(STUDY, "rad2")
    v1 = signed.current
    assert (signed.state, v1.state, v1.signer, v1.author) == ("final", "final", "rad2", "rad1")
    expected = hashlib.sha256(canonical_content(STUDY, 1, v1.content, author="rad1", signer="rad2",
                                                signed_at=v1.signed_at, amendment_reason="")).hexdigest()
    assert v1.content_hash == expected and Reports.verify(signed, v1)
    assert json.loads(canonical_content(STUDY, 1, v1.content, author="rad1", signer="rad2",
                                        signed_at=v1.signed_at, amendment_reason=""))["findings"] == FINDINGS
    with pytest.raises(ReportLocked):
        reports.save_draft(STUDY, "rad1", content(study, findings="changed after signing"))
    with pytest.raises(ReportLocked):
        reports.sign(STUDY, "rad2")
    assert reports.get(STUDY).current.content.findings == FINDINGS

    with pytest.raises(ReportError):
        reports.amend(STUDY, "rad2", "   ")
    amended = reports.amend(STUDY, "rad2", "测量值更正")
    assert (amended.current.version, amended.current.state, amended.state) == (2, "draft", "final")
    reports.save_draft(STUDY, "rad2", content(study, impression="左MCA动脉瘤，6 mm。"))
    done = reports.sign(STUDY, "rad2")
    assert (done.state, done.current.version, done.current.amendment_reason) == ("amended", 2, "测量值更正")
    assert [(v.version, v.state, v.content.impression) for v in done.history] == [
        (1, "final", "左MCA动脉瘤。"), (2, "amended", "左MCA动脉瘤，6 mm。")]
    assert done.history[0].content_hash == v1.content_hash                # version 1 untouched
    assert [e[1]["state"] for e in seen] == ["in-progress", "final", "in-progress", "amended"]
    assert {e[1]["report_id"] for e in seen} == {done.id}
    # Tampering with signed content shows.
    with archive.index.write():
        ReportVersion.update(findings="forged").where(ReportVersion.version == 1).execute()
    assert not Reports.verify(done, reports.get(STUDY).history[0])


def test_bad_content_is_refused(archive, study):
    reports = reports_of(archive)
    for bad in ({"template": "knee"}, {"language": "fr"}, {"findings": 5},
                {"measurements": [{"series": "x", "sop": "1.2", "frame": 0}]},
                {"key_images": [{"series": "1.2", "sop": "1.2", "frame": -1}]}):
        with pytest.raises(ReportError):
            content(study, **bad)
    with pytest.raises(ReportError):
        reports.sign(STUDY, "rad1")                                        # nothing to sign
    reports.save_draft(STUDY, "rad1", Content())
    with pytest.raises(ReportError):
        reports.sign(STUDY, "rad1")                                        # empty


def test_upgrade_creates_the_report_tables(archive, study):
    with archive.index.write():
        for model in (ReportVersion, Report):
            archive.db.execute_sql(f"DROP TABLE {model._meta.table_name}")
        SchemaVersion.delete().execute()
        SchemaVersion.create(version=VERSION_BEFORE)
    assert database.upgrade(archive.db) == (VERSION_BEFORE, database.LATEST_VERSION)
    assert reports_of(archive).save_draft(STUDY, "rad1", content(study)).current.version == 1


def test_signing_stores_an_sr_and_a_pdf_that_dcmtk_and_poppler_read(archive, study, tmp_path):
    tool("dsrdump")
    reports = reports_of(archive)
    reports.save_draft(STUDY, "rad1", content(study))
    make = objects_for_signature(archive.index, archive.ingest)
    v1 = reports.sign(STUDY, "rad1", make).current
    reports.amend(STUDY, "rad1", "更正")
    v2 = reports.sign(STUDY, "rad1", make).current
    files = {x.sop_instance_uid: x for x in study_files(archive.index, STUDY)}
    assert {v1.sr_sop_instance_uid, v1.pdf_sop_instance_uid, v2.sr_sop_instance_uid} <= set(files)

    sr_path = archive.storage.path(files[v2.sr_sop_instance_uid].path)
    sr = dcmread(sr_path)
    assert (sr.SOPClassUID, sr.SpecificCharacterSet) == (report_sr.BASIC_TEXT_SR, "ISO_IR 192")
    assert (sr.CompletionFlag, sr.VerificationFlag) == ("COMPLETE", "VERIFIED")
    assert sr.VerifyingObserverSequence[0].VerifyingObserverName == "rad1"
    assert report_sr.text_of(sr) == {"findings": [FINDINGS, "长度 5.00 mm"], "impressions": ["左MCA动脉瘤。"]}
    measured = sr.ContentSequence[2].ContentSequence[1]
    assert measured.TextValue == "长度 5.00 mm" and measured.ContentSequence[0].RelationshipType == "INFERRED FROM"
    assert measured.ContentSequence[0].ReferencedSOPSequence[0].ReferencedFrameNumber == 2
    predecessor = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == v1.sr_sop_instance_uid
    # Strict: no option relaxes the checks of content items and relationships.
    dump = subprocess.run(["dsrdump", "+U8", "+Pl", str(sr_path)], capture_output=True, timeout=30)
    out = dump.stdout.decode("utf-8", errors="replace")
    # dcmtk's VR checker cannot check UTF-8 text and says so: the only message allowed.
    complaints = [line for line in dump.stderr.decode("utf-8", "replace").splitlines()
                  if "VR checker does not support this Specific Character Set" not in line]
    assert dump.returncode == 0 and complaints == []
    assert "Basic Text SR Document" in out and FINDINGS in out and "VERIFIED" in out

    pdf = dcmread(archive.storage.path(files[v1.pdf_sop_instance_uid].path))
    assert (pdf.SOPClassUID, pdf.MIMETypeOfEncapsulatedDocument) == (report_pdf.ENCAPSULATED_PDF, "application/pdf")
    assert pdf.DocumentTitle == "全脑血管造影（DSA）报告" and pdf.ConceptNameCodeSequence[0].CodeValue == "18748-4"
    body = bytes(pdf.EncapsulatedDocument)[:pdf.EncapsulatedDocumentLength]
    (tmp_path / "r.pdf").write_bytes(body)
    text = subprocess.run(["pdftotext", str(tmp_path / "r.pdf"), "-"], capture_output=True, timeout=30,
                          check=True).stdout.decode("utf-8")
    assert "左侧大脑中动脉" in text and "诊断意见" in text and v1.content_hash in text.replace("\n", "")


# The web adapter is the same over either index; its storage is tested above on both.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_web_roles_password_signature_and_refusals(web_app, archive, study):
    """Over the Flask adapter: a viewer reads but cannot write, an auditor cannot read,
    a radiologist without a second factor signs with the password (a wrong one is
    refused and counted), and a study that is not there answers 404."""
    from dsmpacs.archive.audit import AuditTrail
    from tests.webclient import client_as, client_csrf

    url = f"/reports/{STUDY}"
    body = {"template": "ct-head", "language": "en", "findings": "No bleed.", "impression": "Normal."}
    client = web_app.test_client()
    client_as(client, archive, "viewer", "view1")
    token = client_csrf(client, "/studies")
    assert client.get(url + ".json").json["report"] is None
    assert client.put(url + "/draft", json=body, headers={"X-CSRF-Token": token}).status_code == 403
    assert client.get(url).status_code == 200                                     # the page, read only
    assert f'href="/reports/{STUDY}" data-action="report"' in client.get(f"/studies/{STUDY}").get_data(as_text=True)
    auditor = web_app.test_client()
    client_as(auditor, archive, "auditor", "aud1")
    assert auditor.get(url + ".json").status_code == 403

    client = web_app.test_client()
    client_as(client, archive, "radiologist", "rad1")
    token = client_csrf(client, "/studies")
    headers = {"X-CSRF-Token": token}
    assert client.put(url + "/draft", json=body).status_code == 403                    # no CSRF token
    saved = client.put(url + "/draft", json=body, headers=headers)
    assert saved.status_code == 200 and saved.json["report"]["state"] == "draft"
    assert client.put(url + "/draft", json={**body, "template": "knee"}, headers=headers).status_code == 400
    assert client.get("/reports/1.2.3.4.json").status_code == 404
    assert client.post(url + "/sign", json={}, headers=headers).json["reason"] == "password"
    wrong = client.post(url + "/sign", json={"password": "not it"}, headers=headers)
    assert (wrong.status_code, wrong.json["reason"]) == (401, "wrong")
    signed = client.post(url + "/sign", json={"password": "correct horse battery"}, headers=headers)
    assert signed.status_code == 200, signed.data
    report = signed.json["report"]
    assert (report["state"], report["current"]["signer"], signed.json["verified"]) == ("final", "rad1", [True])
    assert report["current"]["sr"] and report["current"]["pdf"]
    locked = client.put(url + "/draft", json=body, headers=headers)
    assert locked.status_code == 409 and locked.json["error"] == "locked"
    assert client.post(url + "/amend", json={"reason": ""}, headers=headers).status_code == 400
    actions = [e.action for e in AuditTrail(archive.index).recent(actor="rad1", limit=50)]
    assert {"report-start", "report-sign", "login-failed"} <= set(actions)


# The web adapter is the same over either index; its storage is tested above on both.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_report_outside_the_users_institutions_does_not_exist(web_app, archive, study):
    """Tenancy (archive/visibility.py): a radiologist of another institution gets 404
    on every report route of a study of the default institution, never 403."""
    from dsmpacs.archive.institutions import Institutions
    from dsmpacs.archive.users import Users
    from tests.webclient import client_as, client_csrf, client_login

    owner = web_app.test_client()
    client_as(owner, archive, "radiologist", "rad1")
    headers = {"X-CSRF-Token": client_csrf(owner, "/studies")}
    body = {"findings": "在范围内。"}
    assert owner.put(f"/reports/{STUDY}/draft", json=body, headers=headers).status_code == 200
    signed = owner.post(f"/reports/{STUDY}/sign", json={"password": "correct horse battery"}, headers=headers)
    assert signed.status_code == 200 and owner.get(f"/reports/{STUDY}/v1.pdf").status_code == 200

    other = Institutions(archive.index).create("c", "Hospital C")
    Users(archive.index).add("carol", "correct horse battery", "radiologist", institution=other.id)
    carol = web_app.test_client()
    assert client_login(carol, "carol").status_code == 302
    headers = {"X-CSRF-Token": client_csrf(carol, "/studies")}
    assert [carol.get(f"/reports/{STUDY}{tail}").status_code for tail in ("", ".json", "/v1.pdf")] == [404] * 3
    assert carol.put(f"/reports/{STUDY}/draft", json=body, headers=headers).status_code == 404
    assert carol.post(f"/reports/{STUDY}/amend", json={"reason": "x"}, headers=headers).status_code == 404
    # A grant (a reading assignment) opens exactly that study's report.
    archive.grants.grant("carol", STUDY, reason="assignment", source="task-1")
    assert carol.get(f"/reports/{STUDY}.json").json["report"]["state"] == "final"
