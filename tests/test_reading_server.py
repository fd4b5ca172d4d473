"""The reading worklist against a real `dsmpacs serve`, in one scenario: studies
stored by dcmtk storescu become tasks; a rule added on the page assigns the MR by
modality; the coordinator assigns the CT by hand to a radiologist of another
institution, who then gets it through the viewer JSON and WADO-RS (the grant) and
loses it on release; claim; UPS-RS search, retrieve, create, change state and
request cancellation as raw HTTP requests shaped like PS3.18's examples; the
worklist page in headless Chromium at 390x844 showing the same states; a
report.state "final" event moving the task and setting the grants' expiry; and
the audit rows of all of it."""
from __future__ import annotations

import base64
import http.client
import json
from datetime import timedelta

from dsmpacs.archive.audit import AuditTrail
from dsmpacs.archive.institutions import Institutions
from dsmpacs.archive.models import utcnow
from dsmpacs.archive.users import Users
from dsmpacs.archive.visibility import Scope
from tests import factories as f
from tests.browser import sign_in
from tests.peers import wait_until
from tests.webclient import WebSession, server_archive

PW = "correct horse battery"
CT, MR = "1.2.826.0.1.3680043.8.498.8101", "1.2.826.0.1.3680043.8.498.8102"
SCHEDULED_STUDY = "1.2.826.0.1.3680043.8.498.8103"
NEW_WORKITEM = "1.2.826.0.1.3680043.8.498.8199"
T_RAD1, T_RAD2, T_WRONG = "1.2.826.0.1.3680043.8.498.8901", "1.2.826.0.1.3680043.8.498.8902", "1.2.3.999"


def ups(live, user: str, method: str, path: str, body=None, headers=None):
    """One request as a PS3.18 client sends it: http.client, HTTP Basic, DICOM JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", live.web_port, timeout=30)
    head = {"Authorization": "Basic " + base64.b64encode(f"{user}:{PW}".encode()).decode(),
            "Accept": "application/dicom+json", **(headers or {})}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        head["Content-Type"] = "application/dicom+json"
    conn.request(method, "/dicom-web" + path, body=data, headers=head)
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    parsed = json.loads(raw) if raw and response.getheader("Content-Type", "").startswith("application/dicom+json") else raw
    return response.status, {k.lower(): v for k, v in response.getheaders()}, parsed


def value(item: dict, *tags: str):
    """The first value at a tag path of a DICOM JSON dataset."""
    for tag in tags[:-1]:
        item = item[tag]["Value"][0]
    return item[tags[-1]].get("Value", [None])[0]


def state_body(state: str, transaction: str | None) -> list[dict]:
    body = {"00741000": {"vr": "CS", "Value": [state]}}
    if transaction:
        body["00081195"] = {"vr": "UI", "Value": [transaction]}
    return [body]


def tasks_of(live):
    with server_archive(live) as archive:
        return {t.study_instance_uid: t for t in archive.reading.tasks(limit=50)}


def test_the_reading_workflow_from_storescu_to_final(server_factory, page, tmp_path):
    live = server_factory()
    with server_archive(live) as archive:
        other = Institutions(archive.index).create("east", "East Hospital")
        users = Users(archive.index)
        users.add("coord", PW, "admin")
        users.add("rad1", PW, "radiologist", institution=other.id)      # reads for another hospital
        users.add("rad2", PW, "radiologist")                            # the default institution's own
    coord = WebSession(live)
    assert coord.login("coord", PW).status_code == 302

    # A rule by modality, added on the page (refused without the CSRF token).
    rule = {"name": "mr-fast", "modality": "MR", "assignee": "rad2", "priority": "HIGH", "due_hours": "2"}
    assert coord.post_form("/reading/rules", rule, token=False).status_code == 403
    assert coord.post_form("/reading/rules", rule).status_code == 302

    ct = f.ct_slice(size=32, patient=f.Patient("LI^LEI", "P-CT"), study_uid=CT, study_description="CT head")
    mr = f.secondary_capture(size=16, modality="MR", patient=f.Patient("WANG^FANG", "P-MR"), study_uid=MR,
                             study_description="MR brain")
    assert live.storescu(f.write(ct, tmp_path / "ct.dcm"), f.write(mr, tmp_path / "mr.dcm")).returncode == 0
    tasks = wait_until(lambda: (lambda t: t if len(t) == 2 else None)(tasks_of(live)), what="two reading tasks")
    assert (tasks[MR].state, tasks[MR].assignee, tasks[MR].rule, tasks[MR].priority) == ("assigned", "rad2", "mr-fast", "HIGH")
    assert timedelta(hours=1, minutes=59) < tasks[MR].due_at - tasks[MR].created_at <= timedelta(hours=2)
    assert (tasks[CT].state, tasks[CT].assignee, tasks[CT].institution) == ("unread", "", "default")
    ct_item = tasks[CT].ups_uid

    # rad1 (East) sees none of the default institution's tasks, nor the study.
    rad1 = WebSession(live)
    rad1.login("rad1", PW)
    assert ups(live, "rad1", "GET", "/workitems")[0] == 204
    assert ups(live, "rad1", "GET", f"/workitems/{ct_item}")[0] == 404
    assert rad1.get(f"/viewer/studies/{CT}.json").status_code == 404
    assert ups(live, "rad1", "GET", f"/studies/{CT}/metadata")[0] == 404

    # The coordinator assigns the CT to rad1 by hand (readers of every institution offered).
    listing = coord.get("/reading/")
    assert listing.status_code == 200 and listing.text.count('data-action="assign"') == 2
    assert '<option value="rad1">' in listing.text and 'data-rule="mr-fast"' in listing.text
    assert coord.post_form(f"/reading/{tasks[CT].id}/assign", {"assignee": "rad1"}).status_code == 302
    status, _, found = ups(live, "rad1", "GET", "/workitems?ProcedureStepState=SCHEDULED&includefield=all")
    assert status == 200 and [value(i, "00080018") for i in found] == [ct_item]
    assert value(found[0], "00404034", "00404009", "00080100") == "rad1"
    assert value(found[0], "00404021", "0020000D") == CT and value(found[0], "00741200") == "MEDIUM"
    # ... and through the grant, the study itself: the viewer's JSON and WADO-RS.
    assert rad1.get(f"/viewer/studies/{CT}.json").status_code == 200
    assert ups(live, "rad1", "GET", f"/studies/{CT}/metadata")[0] == 200
    with server_archive(live) as archive:
        assert Scope.for_user(archive.index, archive.grants, "rad1").allows(CT, archive.index)

    # Retrieve, then IN PROGRESS with rad1's Transaction UID (PS3.18 11.7 example).
    status, _, (item,) = ups(live, "rad1", "GET", f"/workitems/{ct_item}")
    assert status == 200 and value(item, "00741000") == "SCHEDULED" and "00081195" not in item
    assert ups(live, "rad1", "PUT", f"/workitems/{ct_item}/state", state_body("IN PROGRESS", T_RAD1))[0] == 200
    status, headers, _ = ups(live, "rad1", "PUT", f"/workitems/{ct_item}/state", state_body("IN PROGRESS", T_RAD1))
    assert status == 409 and "0xC302" in headers["warning"]
    status, headers, _ = ups(live, "rad2", "PUT", f"/workitems/{ct_item}/state", state_body("COMPLETED", T_WRONG))
    assert status == 409 and "0xC301" in headers["warning"]
    status, headers, _ = ups(live, "rad2", "PUT", f"/workitems/{ct_item}/state", state_body("COMPLETED", None))
    assert status == 400 and "0xC301" in headers["warning"]
    status, _, found = ups(live, "rad2", "GET", "/workitems?ProcedureStepState=IN%20PROGRESS")
    assert [value(i, "00080018") for i in found] == [ct_item]
    assert value(found[0], "00404034", "00404009", "00080100") == "rad1"

    # The worklist page on a phone shows the same, and releases through its form.
    sign_in(page, live, "rad1", PW)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(live.url("/reading/"))
    card = page.locator(f"[data-task='{tasks[CT].id}']")
    assert card.get_attribute("data-ups-state") == "IN PROGRESS" and card.get_attribute("data-assignee") == "rad1"
    assert page.locator("[data-task]").count() == 1          # not the MR of the other hospital
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    assert card.locator("[data-action=release]").bounding_box()["width"] > 40
    page.shot("worklist-phone")
    card.locator("[data-action=release]").click()
    page.wait_for_selector("[data-worklist-empty]")
    assert page.errors == []

    # Released: rad1 loses the task and the study.
    assert ups(live, "rad1", "GET", f"/workitems/{ct_item}")[0] == 404
    assert rad1.get(f"/viewer/studies/{CT}.json").status_code == 404
    assert ups(live, "rad1", "GET", f"/studies/{CT}/metadata")[0] == 404
    with server_archive(live) as archive:
        assert not Scope.for_user(archive.index, archive.grants, "rad1").allows(CT, archive.index)
        assert [g.revoked_at is not None for g in archive.grants.for_study(CT)] == [True]

    # rad2 claims it on the page, then the report is signed final (the reports' event).
    rad2 = WebSession(live)
    rad2.login("rad2", PW)
    rad2.get("/reading/")
    assert rad2.post_form(f"/reading/{tasks[CT].id}/claim", {}).status_code == 302
    assert ups(live, "rad2", "PUT", f"/workitems/{ct_item}/state", state_body("IN PROGRESS", T_RAD2))[0] == 200
    with server_archive(live) as archive:
        before = utcnow().replace(microsecond=0)
        archive.events.publish("report.state", study_instance_uid=CT, state="final", username="rad2", report_id=1)
        assert archive.reading.for_study(CT).state == "final"
        active = [g for g in archive.grants.for_study(CT) if g.revoked_at is None]
        assert [g.username for g in active] == ["rad2"]
        assert timedelta(hours=72) <= active[0].expires_at - before < timedelta(hours=72, minutes=1)
    status, _, (item,) = ups(live, "rad2", "GET", f"/workitems/{ct_item}")
    assert value(item, "00741000") == "COMPLETED"
    status, headers, _ = ups(live, "rad2", "PUT", f"/workitems/{ct_item}/state", state_body("COMPLETED", T_RAD2))
    assert status == 200 and "0xB306" in headers["warning"]

    # Create (a coordinator only), then Request Cancellation.
    workitem = {"00741000": {"vr": "CS", "Value": ["SCHEDULED"]},
                "00741200": {"vr": "CS", "Value": ["HIGH"]},
                "00741204": {"vr": "LO", "Value": ["Second read"]},
                "00100020": {"vr": "LO", "Value": ["P-EXT"]},
                "00404021": {"vr": "SQ", "Value": [{"0020000D": {"vr": "UI", "Value": [SCHEDULED_STUDY]}}]}}
    assert ups(live, "rad1", "POST", f"/workitems?workitem={NEW_WORKITEM}", [workitem])[0] == 403
    status, headers, _ = ups(live, "coord", "POST", f"/workitems?workitem={NEW_WORKITEM}", [workitem])
    assert status == 201 and headers["location"].endswith(f"/dicom-web/workitems/{NEW_WORKITEM}")
    assert ups(live, "coord", "POST", f"/workitems?workitem={NEW_WORKITEM}", [workitem])[0] == 409
    bad = {**workitem, "00741000": {"vr": "CS", "Value": ["COMPLETED"]}}
    assert ups(live, "coord", "POST", "/workitems", [bad])[0] == 400
    status, _, found = ups(live, "coord", "GET", "/workitems?ScheduledProcedureStepPriority=HIGH&PatientID=P-*")
    assert sorted(value(i, "00100020") for i in found) == ["P-EXT", "P-MR"]
    assert ups(live, "coord", "POST", f"/workitems/{NEW_WORKITEM}/cancelrequest", [{}])[0] == 202
    status, _, found = ups(live, "coord", "GET", f"/workitems?ProcedureStepState=CANCELED&SOPInstanceUID={NEW_WORKITEM}")
    assert status == 200 and len(found) == 1
    assert ups(live, "coord", "GET", "/workitems?NoSuchKeyword=1")[0] == 400

    # An institution-admin coordinates their own institution's tasks, and only those.
    with server_archive(live) as archive:
        users = Users(archive.index)
        users.add("dadmin", PW, "radiologist")
        users.add("eadmin", PW, "radiologist", institution=other.id)
        Institutions(archive.index).add_member("dadmin", "default", "institution-admin")
        Institutions(archive.index).add_member("eadmin", "east", "institution-admin")
    east_admin, default_admin = WebSession(live), WebSession(live)
    east_admin.login("eadmin", PW)
    east_admin.get("/reading/")
    assert east_admin.post_form(f"/reading/{tasks[MR].id}/assign", {"assignee": "rad1"}).status_code == 404
    default_admin.login("dadmin", PW)
    default_admin.get("/reading/")
    assert default_admin.post_form(f"/reading/{tasks[MR].id}/assign", {"assignee": "rad1"}).status_code == 302
    assert rad1.get(f"/viewer/studies/{MR}.json").status_code == 200

    # Every change is in the audit trail, with who did it.
    with server_archive(live) as archive:
        rows = AuditTrail(archive.index).recent(limit=200)
    seen = {(r.action, r.actor, r.study_instance_uid) for r in rows}
    assert ("reading-rule", "coord", "") in seen
    assert ("reading-assign", "rule:mr-fast", MR) in seen and ("reading-assign", "coord", CT) in seen
    assert ("reading-release", "rad1", CT) in seen and ("reading-claim", "rad2", CT) in seen
    assert ("reading-state", "rad1", CT) in seen and ("reading-state", "rad2", CT) in seen
    assert ("reading-create", "coord", SCHEDULED_STUDY) in seen and ("reading-assign", "dadmin", MR) in seen
