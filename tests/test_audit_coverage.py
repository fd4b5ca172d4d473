"""What the audit trail records, against a real `dsmpacs serve`: searches (study list,
QIDO-RS, C-FIND with dcmtk findscu) with the patient and the user or AE; refusals
(HTTP 401/403, rejected associations, C-FIND and C-STORE refused by the policy);
one record per C-STORE association, not per instance; the audit page's chain state
after SQL tampering; and the auditor role, which reads the trail and nothing else."""
from __future__ import annotations

import pytest
import requests

from dsmpacs.archive.audit import AuditTrail
from dsmpacs.archive.peers import Peer, PeerRegistry
from tests import factories as f
from tests.findscu import findscu
from tests.peers import dcmtk, wait_until
from tests.webclient import WebSession, add_user, client_as, server_archive

PASSWORD = "correct horse battery"


def entries(server, **filters):
    with server_archive(server) as archive:
        return AuditTrail(archive.index).recent(limit=500, **filters)


@pytest.mark.slow
def test_searches_and_refusals_over_every_protocol_are_recorded(server_factory, database_url, tmp_path):
    server = server_factory(database_url=database_url, check_called_ae="true")
    add_user(server, "rad1", "radiologist", PASSWORD)
    add_user(server, "aud1", "auditor", PASSWORD)
    with server_archive(server) as archive:
        registry = PeerRegistry(archive.index)
        registry.add(Peer(name="ws", ae_title="FINDSCU", host="127.0.0.1", port=104))
        registry.add(Peer(name="mod", ae_title="MODALITY", host="127.0.0.1", port=104, may_find=False))
        registry.add(Peer(name="ro", ae_title="NOSTORE", host="127.0.0.1", port=104, may_store=False))

    # QIDO-RS with HTTP Basic
    qido = requests.get(server.url("/dicom-web/studies"), params={"PatientID": "PAT-QIDO"},
                        auth=("rad1", PASSWORD), timeout=30)
    assert qido.status_code == 204
    # the study list in a signed-in browser session
    web = WebSession(server)
    web.login("rad1", PASSWORD)
    assert web.get("/studies", params={"patient_id": "PAT-WEB", "patient_name": "wang"}).status_code == 200
    # C-FIND, allowed and refused
    found = findscu(server.port, ["QueryRetrieveLevel=STUDY", "PatientID=PAT-FIND", "StudyInstanceUID"],
                    tmp_path / "find", calling_ae="FINDSCU")
    assert found.final == "Success"
    refused = findscu(server.port, ["QueryRetrieveLevel=STUDY", "PatientID=PAT-NO"], tmp_path / "refused",
                      calling_ae="MODALITY")
    assert refused.final.endswith("0x124")
    # HTTP 401 and 403
    assert requests.get(server.url("/dicom-web/studies"), timeout=30).status_code == 401
    auditor = WebSession(server)
    auditor.login("aud1", PASSWORD)
    assert auditor.get("/studies", params={"patient_id": "X"}).status_code == 403
    # a rejected association (wrong called AE title)
    echo = dcmtk("echoscu", "-aet", "PROBE", "-aec", "NOTME", "127.0.0.1", server.port, check=False)
    assert echo.returncode != 0
    # C-STORE: three instances in one association, allowed; and refused for NOSTORE
    files = [f.write(f.secondary_capture(), tmp_path / f"{i}.dcm") for i in range(3)]
    server.storescu(*files, extra=("-aet", "MODALITY"))
    server.storescu(*files, extra=("-aet", "NOSTORE"))

    def recorded():
        stores = entries(server, action="store")
        return len(stores) >= 2 and entries(server, action="assoc-rejected")

    wait_until(recorded, 60, "association records")

    qido_rec = entries(server, patient_id="PAT-QIDO")[0]
    assert (qido_rec.actor, qido_rec.role, qido_rec.action, qido_rec.event) == \
        ("rad1", "radiologist", "search", "Query")
    assert qido_rec.address == "127.0.0.1" and "QIDO-RS STUDY" in qido_rec.detail
    web_rec = entries(server, patient_id="PAT-WEB")[0]
    assert web_rec.actor == "rad1" and web_rec.patient_name == "wang*" and "study list" in web_rec.detail
    find_rec = entries(server, patient_id="PAT-FIND")[0]
    assert (find_rec.actor, find_rec.calling_ae, find_rec.called_ae, find_rec.event) == \
        ("ae:FINDSCU", "FINDSCU", "DSMPACS", "Query")
    assert not entries(server, patient_id="PAT-NO")          # refused before it ran
    denied = entries(server, action="access-denied")
    assert any(e.calling_ae == "MODALITY" and e.detail.startswith("C-FIND") and e.outcome == "refused"
               for e in denied)
    assert any(e.actor == "aud1" and e.role == "auditor" and "HTTP 403" in e.detail for e in denied)
    unauth = entries(server, action="auth-required")
    assert any("HTTP 401 GET /dicom-web/studies" in e.detail and e.address == "127.0.0.1" for e in unauth)
    rejected = entries(server, action="assoc-rejected")[0]
    assert (rejected.calling_ae, rejected.called_ae, rejected.outcome) == ("PROBE", "NOTME", "refused")
    assert rejected.event == "Security Alert: Node Authentication"
    stores = {e.calling_ae: e for e in entries(server, action="store")}
    assert len(entries(server, action="store")) == 2         # one per association, not per instance
    assert stores["MODALITY"].outcome == "ok" and "3 completed" in stores["MODALITY"].detail
    assert stores["NOSTORE"].outcome == "refused" and "0 completed" in stores["NOSTORE"].detail

    with server_archive(server) as archive:
        assert AuditTrail.of(archive).verify().ok


@pytest.mark.slow
def test_audit_page_shows_the_chain_broken_after_sql_tampering(server_factory, database_url):
    server = server_factory(database_url=database_url)
    add_user(server, "aud1", "auditor", PASSWORD)
    web = WebSession(server)
    web.login("aud1", PASSWORD)
    for i in range(5):
        requests.get(server.url("/dicom-web/studies"), timeout=30)       # 401s, recorded
        requests.get(server.url(f"/dicom-web/studies?x={i}"), auth=("nobody", "wrong password!"), timeout=30)
    page = web.get("/admin/audit")
    assert page.status_code == 200 and 'data-chain="intact"' in page.text, page.text[:2000]
    with server_archive(server) as archive:
        with archive.index.write():
            archive.db.execute_sql("UPDATE audit_event SET address = '10.9.9.9' WHERE seq = 2")
    page = web.get("/admin/audit")
    assert 'data-chain="broken" data-broken-at="2"' in page.text, page.text[:3000]
    assert 'class="outcome-' in page.text and "broken" in page.text


def test_auditor_reads_the_trail_and_nothing_else(client, archive):
    client_as(client, archive, "auditor", "aud1")
    html = {"Accept": "text/html"}
    page = client.get("/admin/audit", headers=html)
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert 'data-nav="studies"' not in text and 'href="/admin/users"' not in text
    landing = client.get("/", headers=html)
    assert landing.status_code == 302 and landing.headers["Location"].endswith("/admin/audit")
    for path in ("/studies?patient_id=1", "/studies/1.2.3", "/patients/1", "/viewer?study=1.2.3",
                 "/dicom-web/studies", "/dicom-web/studies/1.2.3/metadata", "/wado?requestType=WADO",
                 "/admin/users", "/admin/storage", "/admin/peers", "/admin/policy", "/admin/activity"):
        assert client.get(path, headers=html).status_code == 403, path
    # the refusals are themselves in the trail, with the auditor's name and role
    denied = AuditTrail(archive.index).recent(action="access-denied", actor="aud1")
    assert denied and all(e.role == "auditor" for e in denied)


def test_admin_still_reads_the_trail_and_reading_it_is_recorded(client, archive):
    client_as(client, archive, "admin", "root")
    assert client.get("/admin/audit", headers={"Accept": "text/html"}).status_code == 200
    assert AuditTrail(archive.index).recent(action="audit-read", actor="root")
