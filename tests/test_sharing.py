"""Share links, referring physicians and notifications (issue 12 items 5 and 6)
over the Flask test client and the real archive (SQLite and MariaDB): a link works
until it expires or is revoked, the access code is required and rate limited,
every use is audited with the client address, and a share session reaches the
viewer of its study and nothing else."""
from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest

from dsmpacs.archive import database
from dsmpacs.archive.ingest import Origin
from dsmpacs.archive.models import (
    Notification,
    NotifyAddress,
    ReadingTask,
    ReferringName,
    Report,
    SchemaVersion,
    StudyShare,
    utcnow,
)
from dsmpacs.archive.referring import Referring, has_final_report
from tests import factories as f
from tests.webclient import client_as, client_csrf, client_login, make_user

HTML = {"Accept": "text/html"}
VERSION_BEFORE = 12           # the schema version before this branch's migration
STUDY_A = "1.2.826.0.1.3680043.8.498.9601"
STUDY_B = "1.2.826.0.1.3680043.8.498.9602"
STUDY_C = "1.2.826.0.1.3680043.8.498.9603"
STUDY_D = "1.2.826.0.1.3680043.8.498.9604"
LINK_RE = re.compile(r'data-share-link[^>]*value="[^"]*/s/([A-Za-z0-9_-]+)"|value="[^"]*/s/([A-Za-z0-9_-]+)"[^>]*data-share-link')


def load(archive, tmp_path, referring: dict[str, str] | None = None) -> dict[str, object]:
    """One small XA run per study; ``referring`` gives a study its Referring Physician's Name."""
    runs = {}
    for n, uid in enumerate((STUDY_A, STUDY_B, STUDY_C, STUDY_D)):
        ds = f.xa_run(frames=2, size=16, patient=f.Patient(f"PAT^{n}", f"P-{n}"), study_uid=uid)
        name = (referring or {}).get(uid, "")
        if not name.isascii():
            ds.SpecificCharacterSet = "ISO_IR 192"
        ds.ReferringPhysicianName = name
        result = archive.ingest.import_file(f.write(ds, tmp_path / "in" / f"{n}.dcm"), Origin("import"))
        assert result.archived
        runs[uid] = ds
    return runs


def text(response) -> str:
    return response.get_data(as_text=True)


def create_share(client, study: str, **form) -> str:
    token = client_csrf(client, f"/studies/{study}")
    made = client.post(f"/studies/{study}/shares", data={"csrf_token": token, "days": "1", **form}, headers=HTML)
    assert made.status_code == 201, made.status_code
    found = LINK_RE.search(text(made))
    return found.group(1) or found.group(2)


def trail(archive):
    from dsmpacs.archive.models import AuditEvent
    with archive.index.read():
        return list(AuditEvent.select().order_by(AuditEvent.id))


def test_share_link_opens_one_study_until_expired_or_revoked(web_app, client, archive, tmp_path):
    runs = load(archive, tmp_path)
    run = runs[STUDY_A]
    client_as(client, archive, "radiologist", "rad1")
    token = create_share(client, STUDY_A, label="Dr Outside")
    assert client.get(f"/studies/{STUDY_A}", headers=HTML).status_code == 200
    assert 'data-state="active"' in text(client.get(f"/studies/{STUDY_A}", headers=HTML))
    with archive.index.read():
        row = StudyShare.get()
        # only the SHA-256 of the token is stored, never the token
        assert row.token_hash != token and len(row.token_hash) == 64 and token not in row.token_hash

    # A radiologist of another institution cannot share a study they cannot see.
    from dsmpacs.archive.institutions import Institutions
    institutions = Institutions(archive.index)
    institutions.create("c", "C hospital")
    outsider = web_app.test_client()
    client_as(outsider, archive, "radiologist", "radc")
    institutions.add_member("radc", "c", "radiologist")
    institutions.remove_member("radc", "default")
    csrf = client_csrf(outsider, "/studies")
    assert outsider.post(f"/studies/{STUDY_A}/shares", data={"csrf_token": csrf, "days": "1"}).status_code == 404
    with archive.index.read():
        assert StudyShare.select().count() == 1

    # A viewer-role user may not make links.
    other = web_app.test_client()
    client_as(other, archive, "viewer", "view1")
    csrf = client_csrf(other, f"/studies/{STUDY_A}")
    assert other.post(f"/studies/{STUDY_A}/shares", data={"csrf_token": csrf, "days": "1"}).status_code == 403

    guest = web_app.test_client()
    opened = guest.get(f"/s/{token}", headers=HTML)
    assert opened.status_code == 302 and opened.headers["Location"].endswith(f"/viewer?study={STUDY_A}")
    assert guest.get(f"/viewer?study={STUDY_A}", headers=HTML).status_code == 200
    detail = guest.get(f"/viewer/studies/{STUDY_A}.json")
    assert detail.status_code == 200 and detail.get_json()["study"] == STUDY_A
    frame = guest.get(f"/render/{STUDY_A}/{run.SeriesInstanceUID}/{run.SOPInstanceUID}/0.png")
    assert frame.status_code == 200 and frame.data[:4] == b"\x89PNG"
    assert guest.get(f"/viewer/info/{STUDY_A}/{run.SeriesInstanceUID}/{run.SOPInstanceUID}.json").status_code == 200
    # Nothing else: other routes 401, other studies 404.
    assert guest.get("/studies", headers=HTML).status_code == 401
    assert guest.get("/", headers=HTML).status_code == 401
    assert guest.get(f"/studies/{STUDY_A}", headers=HTML).status_code == 401
    assert guest.get(f"/studies/{STUDY_A}/download.zip").status_code == 401
    assert guest.get(f"/viewer/studies/{STUDY_B}.json").status_code == 404
    assert guest.get(f"/viewer?study={STUDY_A}&compare={STUDY_B}", headers=HTML).status_code == 404
    assert guest.get(f"/render/{STUDY_B}/{runs[STUDY_B].SeriesInstanceUID}/"
                     f"{runs[STUDY_B].SOPInstanceUID}/0.png").status_code == 404
    assert guest.get("/dicom-web/studies").status_code == 401
    assert guest.get(f"/dicom-web/studies/{STUDY_A}/metadata").status_code == 401
    assert guest.get("/admin/", headers=HTML).status_code == 401
    assert guest.get("/admin/users", headers=HTML).status_code == 401
    assert guest.get("/notifications", headers=HTML).status_code == 401
    put = guest.put(f"/viewer/annotations/{STUDY_A}/{run.SeriesInstanceUID}/{run.SOPInstanceUID}/0.json", json={})
    assert put.status_code in (401, 403)

    # Every use in the trail, with the client's address; the views under the share's name.
    rows = trail(archive)
    uses = [r for r in rows if r.action == "share-use"]
    assert [(r.actor, r.outcome, r.address) for r in uses] == [("share:1", "ok", "127.0.0.1")]
    assert any(r.action == "share-create" and r.actor == "rad1" and r.study_instance_uid == STUDY_A for r in rows)
    assert any(r.action == "view" and r.actor == "share:1" and r.address == "127.0.0.1" for r in rows)
    with archive.index.read():
        assert StudyShare.get().uses == 1

    # Expired: the open session stops at once, the link gives a clear 410 page.
    with archive.index.write():
        StudyShare.update(expires_at=utcnow() - timedelta(seconds=1)).execute()
    assert guest.get(f"/viewer/studies/{STUDY_A}.json").status_code == 401
    gone = guest.get(f"/s/{token}", headers=HTML)
    assert gone.status_code == 410 and 'data-share-gone="expired"' in text(gone)

    # Revoked by the radiologist from the study page: 410 too.
    second = create_share(client, STUDY_A)
    guest2 = web_app.test_client()
    assert guest2.get(f"/s/{second}").status_code == 302
    assert guest2.get(f"/viewer/studies/{STUDY_A}.json").status_code == 200
    with archive.index.read():
        second_id = StudyShare.select().order_by(StudyShare.id.desc()).get().id
    csrf = client_csrf(client, f"/studies/{STUDY_A}")
    assert client.post(f"/studies/{STUDY_A}/shares/{second_id}/revoke", data={"csrf_token": csrf}).status_code == 302
    assert guest2.get(f"/viewer/studies/{STUDY_A}.json").status_code == 401
    revoked = guest2.get(f"/s/{second}", headers=HTML)
    assert revoked.status_code == 410 and 'data-share-gone="revoked"' in text(revoked)
    assert guest.get("/s/" + "x" * 43, headers=HTML).status_code == 404
    actions = [r.action for r in trail(archive)]
    assert "share-revoke" in actions and actions.count("share-use") == 4     # 2 opened, 2 refused (410)


def test_access_code_is_required_and_rate_limited(web_app, client, archive, tmp_path):
    load(archive, tmp_path)
    client_as(client, archive, "admin", "adm1")
    token = create_share(client, STUDY_B, code="4711-open")
    with archive.index.read():
        stored = StudyShare.get().code_hash
    assert stored.startswith("scrypt$") and "4711" not in stored

    guest = web_app.test_client()
    form = guest.get(f"/s/{token}", headers=HTML)
    assert form.status_code == 200 and 'data-form="share-code"' in text(form)
    assert guest.get(f"/viewer/studies/{STUDY_B}.json").status_code == 401       # no session yet
    csrf = client_csrf(guest, f"/s/{token}")
    statuses = [guest.post(f"/s/{token}", data={"csrf_token": csrf, "code": f"wrong-{i}"}).status_code
                for i in range(5)]
    assert statuses == [403] * 5
    # Back-off: now even the right code must wait.
    throttled = guest.post(f"/s/{token}", data={"csrf_token": csrf, "code": "4711-open"})
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
    assert guest.get(f"/viewer/studies/{STUDY_B}.json").status_code == 401

    # From another address the right code opens it at once.
    other = web_app.test_client()
    csrf = client_csrf(other, f"/s/{token}")
    ok = other.post(f"/s/{token}", data={"csrf_token": csrf, "code": "4711-open"},
                    environ_base={"REMOTE_ADDR": "10.9.8.7"})
    assert ok.status_code == 302
    assert other.get(f"/viewer/studies/{STUDY_B}.json", environ_base={"REMOTE_ADDR": "10.9.8.7"}).status_code == 200
    rows = [(r.outcome, r.address) for r in trail(archive) if r.action == "share-use"]
    assert rows == [("failed", "127.0.0.1")] * 5 + [("refused", "127.0.0.1"), ("ok", "10.9.8.7")]


def test_referring_physician_sees_only_final_reports_of_their_patients(web_app, client, archive, tmp_path):
    """A member with the role "referring" (archive/visibility.py) sees, through the
    Scope every route asks, only the finally reported studies of their patients."""
    from dsmpacs.archive.institutions import Institutions

    load(archive, tmp_path, referring={STUDY_A: "SMITH^JOHN", STUDY_B: "SMITH^JOHN=史^约翰",
                                       STUDY_C: "DOE^JANE", STUDY_D: "DOE^JANE"})
    institutions = Institutions(archive.index)
    for name in ("ref1", "ref2"):
        make_user(archive, name, "viewer")
        institutions.add_member(name, "default", "referring")
    referring = archive.referring
    referring.link("ref1", "smith^john", by="adm1")
    archive.grants.grant("ref1", STUDY_D, reason="manual", source="shared", granted_by="adm1")
    assert referring.patients_studies("ref1") == {STUDY_A, STUDY_B, STUDY_D}
    # No report yet: nothing is final.
    assert not has_final_report(archive.index, STUDY_A) and referring.referring_filter("ref1") == set()

    # Reports in each state (archive/reports.py keeps the state on the Report row).
    with archive.index.write():
        for uid, state in ((STUDY_A, "final"), (STUDY_B, "draft"), (STUDY_C, "final"), (STUDY_D, "amended")):
            Report.create(study_instance_uid=uid, state=state, created_by="rad2")
    assert has_final_report(archive.index, STUDY_A) and not has_final_report(archive.index, STUDY_B)
    assert referring.referring_filter("ref1") == {STUDY_A, STUDY_D}

    client_as(client, archive, "viewer", "view9")           # an ordinary member sees all four
    assert len(re.findall(r'<tr data-study="', text(client.get("/studies", headers=HTML)))) == 4
    second = web_app.test_client()
    assert client_login(second, "ref2").status_code == 302     # linked to no name: nothing
    assert re.findall(r'<tr data-study="([^"]+)"', text(second.get("/studies", headers=HTML))) == []
    ref = web_app.test_client()
    assert client_login(ref, "ref1").status_code == 302
    listed = re.findall(r'<tr data-study="([^"]+)"', text(ref.get("/studies", headers=HTML)))
    assert sorted(listed) == [STUDY_A, STUDY_D]
    assert ref.get(f"/viewer/studies/{STUDY_A}.json").status_code == 200
    assert ref.get(f"/viewer?study={STUDY_D}", headers=HTML).status_code == 200
    for uid in (STUDY_B, STUDY_C):                     # draft report; another physician's patient
        assert ref.get(f"/viewer/studies/{uid}.json").status_code == 404
        assert ref.get(f"/studies/{uid}", headers=HTML).status_code == 404
    qido = ref.get("/dicom-web/studies", headers={"Accept": "application/dicom+json"})
    assert qido.status_code == 200
    assert sorted(d["0020000D"]["Value"][0] for d in qido.get_json()) == [STUDY_A, STUDY_D]
    assert ref.get("/admin/", headers=HTML).status_code == 403

    # The administrator links the name on the admin page; it is audited.
    admin = web_app.test_client()
    client_as(admin, archive, "admin", "adm1")
    page = text(admin.get("/admin/referring", headers=HTML))
    assert 'data-user="ref1"' in page and 'data-user="ref2"' in page and 'data-user="view9"' not in page
    csrf = client_csrf(admin, "/admin/referring")
    assert admin.post("/admin/referring", data={"csrf_token": csrf, "username": "ref2",
                                                "dicom_name": "DOE^JANE"}).status_code == 302
    assert referring.referring_filter("ref2") == {STUDY_C, STUDY_D}
    assert sorted(re.findall(r'<tr data-study="([^"]+)"', text(second.get("/studies", headers=HTML)))) == \
        [STUDY_C, STUDY_D]
    with archive.index.read():
        assert ReferringName.select().count() == 2
    assert any(r.action == "user-change" and "ref2" in r.detail for r in trail(archive))


def test_notifications_follow_events_and_overdue_tasks(archive, tmp_path):
    load(archive, tmp_path, referring={STUDY_A: "WANG^MING=王^明"})
    notes = archive.notifications
    Referring(archive.index, archive.grants).link("ref1", "王^明")
    archive.grants.grant("rad2", STUDY_A, reason="assignment", source="task-1")
    archive.events.publish("reading.assigned", study_instance_uid=STUDY_A, username="rad2", task_id=1, by="coord")
    assert [(n.kind, n.study_instance_uid, n.params["by"]) for n in notes.list("rad2")] == \
        [("assigned", STUDY_A, "coord")]
    archive.events.publish("report.state", study_instance_uid=STUDY_A, state="preliminary", username="rad2",
                           report_id=1)
    assert notes.unread_count("ref1") == 1            # a preliminary is meant for the referring physician
    archive.events.publish("report.state", study_instance_uid=STUDY_A, state="in-progress", username="rad2",
                           report_id=1)
    archive.events.publish("report.state", study_instance_uid=STUDY_A, state="final", username="rad2", report_id=1)
    archive.events.publish("report.state", study_instance_uid=STUDY_A, state="amended", username="rad2",
                           report_id=1)
    assert [n.kind for n in notes.list("ref1")] == ["report-amended", "report-final", "report-preliminary"]
    assert [n.kind for n in notes.list("rad2")] == ["assigned"]       # the author is not told of their change

    # Overdue: one notice per task past its due time that is still to be read.
    assert notes.check_overdue() == 0
    with archive.index.write():
        for n, (uid, state, reader, due) in enumerate(((STUDY_A, "assigned", "rad2", "2020-01-01"),
                                                       (STUDY_B, "final", "rad2", "2020-01-01"),
                                                       (STUDY_C, "assigned", "rad3", "2999-01-01"))):
            ReadingTask.create(study_instance_uid=uid, ups_uid=f"2.25.{n + 1}", state=state, assignee=reader,
                               due_at=datetime.fromisoformat(due))
    assert notes.check_overdue() == 1 and notes.check_overdue() == 0
    assert [n.kind for n in notes.list("rad2")] == ["overdue", "assigned"] and notes.unread_count("rad3") == 0
    assert notes.mark_read("rad2", notes.list("rad2")[0].id) == 1 and notes.unread_count("rad2") == 1
    assert notes.mark_read("rad2") == 1 and notes.unread_count("rad2") == 0


def test_the_bell_counts_unread_notices_and_the_page_marks_them_read(client, archive, tmp_path):
    load(archive, tmp_path)
    client_as(client, archive, "radiologist", "rad1")
    assert "data-unread" not in text(client.get("/studies", headers=HTML))
    for uid in (STUDY_A, STUDY_B):
        archive.events.publish("reading.assigned", study_instance_uid=uid, username="rad1", task_id=3, by="coord")
    page = text(client.get("/studies", headers=HTML))
    assert re.search(r'data-unread>2<', page)
    listing = text(client.get("/notifications", headers=HTML))
    assert listing.count('data-read="no"') == 2 and "PAT^1" not in listing and "PAT 1" in listing
    csrf = client_csrf(client, "/notifications")
    assert client.post("/notifications/read", data={"csrf_token": csrf}).status_code == 302
    assert client.post("/notifications/email", data={"csrf_token": csrf, "address": "nope"}).status_code == 302
    assert archive.notifications.address("rad1") == ""
    client.post("/notifications/email", data={"csrf_token": csrf, "address": "rad1@hospital.example"})
    assert archive.notifications.address("rad1") == "rad1@hospital.example"
    assert "data-unread" not in text(client.get("/studies", headers=HTML))
    with archive.index.read():
        assert Notification.select().where(Notification.read_at.is_null(True)).count() == 0


def test_upgrade_creates_the_sharing_tables(archive):
    with archive.index.write():
        for model in (StudyShare, ReferringName, Notification, NotifyAddress):
            archive.db.execute_sql(f"DROP TABLE {model._meta.table_name}")
        SchemaVersion.delete().execute()
        SchemaVersion.create(version=VERSION_BEFORE)
    assert database.upgrade(archive.db) == (VERSION_BEFORE, database.LATEST_VERSION)
    assert archive.notifications.notify("li", "assigned", STUDY_A)
    assert archive.notifications.unread_count("li") == 1


class _Sink:
    """An aiosmtpd handler keeping what it received."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope)
        return "250 OK"


def test_notifications_go_out_by_email_through_a_real_smtp_server(archive, tmp_path):
    import email
    import email.policy
    import socket

    from aiosmtpd.controller import Controller

    from dsmpacs.archive.mailer import Mailer
    from dsmpacs.web.notice_mail import wording
    from tests.peers import wait_until

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = _Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    mailer = Mailer("127.0.0.1", port, sender="pacs@hospital.example", starttls=False)
    try:
        load(archive, tmp_path)
        notes = archive.notifications
        notes.mailer, notes.wording = mailer, wording
        with pytest.raises(ValueError):
            notes.set_address("rad2", "not an address")
        notes.set_address("rad2", "li.rad@hospital.example")
        archive.events.publish("reading.assigned", study_instance_uid=STUDY_A, username="rad2", task_id=5, by="coord")
        archive.events.publish("reading.assigned", study_instance_uid=STUDY_B, username="rad3", task_id=6, by="coord")
        wait_until(lambda: mailer.sent >= 1, 20, "the notification e-mail")
    finally:
        mailer.close()
        controller.stop()
    assert len(sink.messages) == 1 and sink.messages[0].rcpt_tos == ["li.rad@hospital.example"]
    message = email.message_from_bytes(sink.messages[0].original_content, policy=email.policy.default)
    assert message["Subject"] == "DSM PACS: A study of PAT 0 was assigned to you to read (by coord)."
    body = message.get_content()
    assert "coord 将 PAT 0 的检查分配给您阅片。" in body and STUDY_A in body
    assert [n.kind for n in archive.notifications.list("rad3")] == ["assigned"]     # no address: the UI only
