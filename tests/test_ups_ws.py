"""UPS-RS subscriptions and the WebSocket event channel (web/upsws.py,
web/dicomweb/ups_subscribers.py) against a real `dsmpacs serve` with ups_ws_port set:
Subscribe, Unsubscribe and the global (Worklist) subscription as raw HTTP requests
shaped like PS3.18's, and a real WebSocket client (the `websockets` library) on
/ws/subscribers/{AETitle} receiving the event reports as DICOM JSON, for changes made
through UPS-RS and through the web worklist alike, and only for what its user may
see. The reading worklist itself: tests/test_reading_server.py."""
from __future__ import annotations

import json

from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus
from websockets.sync.client import connect

from dsmpacs.archive.audit import AuditTrail
from dsmpacs.archive.institutions import Institutions
from dsmpacs.archive.users import Users
from tests import factories as f
from tests.peers import free_port, wait_until
from tests.test_reading_server import PW, state_body, tasks_of, ups
from tests.webclient import WebSession, server_archive

CT, MR = "1.2.826.0.1.3680043.8.498.8301", "1.2.826.0.1.3680043.8.498.8302"
GLOBAL = "1.2.840.10008.5.1.4.34.5"
T_RAD1, T_RAD2 = "1.2.826.0.1.3680043.8.498.8911", "1.2.826.0.1.3680043.8.498.8912"


def channel(port: int, ae: str, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return connect(f"ws://127.0.0.1:{port}/ws/subscribers/{ae}", additional_headers=headers, open_timeout=10)


def event(ws) -> tuple[str, int, str]:
    """The next event report: (workitem UID, Event Type ID, state or performer ('' for none))."""
    report = json.loads(ws.recv(timeout=15))
    assert report["00000002"]["Value"] == ["1.2.840.10008.5.1.4.34.6.1"]      # UPS Push SOP Class
    kind = report["00001002"]["Value"][0]
    if kind == 1:
        assert report["00404041"]["Value"] == ["READY"]
        detail = report["00741000"]["Value"][0]
    else:
        performers = report["00404034"].get("Value", [])
        detail = performers[0]["00404009"]["Value"][0]["00080100"]["Value"][0] if performers else ""
    return report["00001000"]["Value"][0], kind, detail


def test_subscriptions_push_state_changes_over_websocket(server_factory, tmp_path):
    live = server_factory(ups_ws_port=free_port())
    ws_port = int(live.sets["ups_ws_port"])
    with server_archive(live) as archive:
        east = Institutions(archive.index).create("east", "East Hospital")
        users = Users(archive.index)
        users.add("coord", PW, "admin")
        users.add("rad1", PW, "radiologist", institution=east.id)       # another hospital's reader
        users.add("rad2", PW, "radiologist")
        _, token1 = users.create_token("rad1", "ws")
        _, token2 = users.create_token("rad2", "ws")
    ct = f.ct_slice(size=16, patient=f.Patient("LI^LEI", "P-CT"), study_uid=CT)
    mr = f.secondary_capture(size=16, modality="MR", patient=f.Patient("WANG^FANG", "P-MR"), study_uid=MR)
    assert live.storescu(f.write(ct, tmp_path / "ct.dcm"), f.write(mr, tmp_path / "mr.dcm")).returncode == 0
    tasks = wait_until(lambda: (lambda t: t if len(t) == 2 else None)(tasks_of(live)), what="two reading tasks")
    ct_item, mr_item = tasks[CT].ups_uid, tasks[MR].ups_uid

    # Subscribe (PS3.18 11.10): rad2's AE to the CT, rad1's AE to the whole worklist
    status, headers, _ = ups(live, "rad2", "POST", f"/workitems/{ct_item}/subscribers/RAD2WS?deletionlock=true")
    assert status == 201 and headers["content-location"] == f"ws://127.0.0.1:{ws_port}/ws/subscribers/RAD2WS"
    assert ups(live, "rad1", "POST", f"/workitems/{GLOBAL}/subscribers/EASTWS")[0] == 201
    assert ups(live, "rad1", "POST", f"/workitems/{ct_item}/subscribers/EASTWS")[0] == 404   # not visible to rad1
    status, headers, _ = ups(live, "rad2", "POST", f"/workitems/{GLOBAL}.1/subscribers/RAD2WS")
    assert status == 403 and "Filtered Worklist Subscriptions are not supported" in headers["warning"]
    assert ups(live, "rad2", "POST", f"/workitems/{ct_item}/subscribers/BAD\\AE")[0] == 400

    # The channel wants an API token and a /ws/subscribers/{AETitle} path
    for ae, token, code in (("RAD2WS", None, 401), ("RAD2WS", "dsm_not-a-token", 401), ("", token2, 404)):
        try:
            channel(ws_port, ae, token).close()
            raise AssertionError(f"channel {ae!r} opened without {code}")
        except InvalidStatus as exc:
            assert exc.response.status_code == code

    with channel(ws_port, "RAD2WS", token2) as rad2_ws, channel(ws_port, "EASTWS", token1) as east_ws:
        # on connecting: the current state of each open workitem subscribed to (PS3.4 CC.2.4.2)
        assert event(rad2_ws) == (ct_item, 1, "SCHEDULED")
        # The coordinator assigns the CT to rad1 on the web worklist: UPS Assigned (event 5) to
        # both; rad1 sees the CT from now on (its first report: nothing of the MR before it)
        coord = WebSession(live)
        coord.login("coord", PW)
        coord.get("/reading/")
        assert coord.post_form(f"/reading/{tasks[CT].id}/assign", {"assignee": "rad1"}).status_code == 302
        assert event(rad2_ws) == (ct_item, 5, "rad1")
        assert event(east_ws) == (ct_item, 5, "rad1")
        # rad1 starts it over UPS-RS: a State Report to both
        assert ups(live, "rad1", "PUT", f"/workitems/{ct_item}/state", state_body("IN PROGRESS", T_RAD1))[0] == 200
        assert event(rad2_ws) == (ct_item, 1, "IN PROGRESS")
        assert event(east_ws) == (ct_item, 1, "IN PROGRESS")
        # Unsubscribe (11.11): rad2 hears no more of the CT; a second time is 404
        assert ups(live, "rad2", "DELETE", f"/workitems/{ct_item}/subscribers/RAD2WS")[0] == 200
        assert ups(live, "rad2", "DELETE", f"/workitems/{ct_item}/subscribers/RAD2WS")[0] == 404
        assert ups(live, "rad1", "PUT", f"/workitems/{ct_item}/state", state_body("COMPLETED", T_RAD1))[0] == 200
        assert event(east_ws) == (ct_item, 1, "COMPLETED")
        # rad2 subscribes to the MR: its initial report is the next thing rad2 hears (not the CT)
        assert ups(live, "rad2", "POST", f"/workitems/{mr_item}/subscribers/RAD2WS")[0] == 201
        assert event(rad2_ws) == (mr_item, 1, "SCHEDULED")
        # The web worklist: claim, start over UPS-RS, release on the page; each change pushed
        rad2 = WebSession(live)
        rad2.login("rad2", PW)
        rad2.get("/reading/")
        assert rad2.post_form(f"/reading/{tasks[MR].id}/claim", {}).status_code == 302
        assert event(rad2_ws) == (mr_item, 5, "rad2")
        assert ups(live, "rad2", "PUT", f"/workitems/{mr_item}/state", state_body("IN PROGRESS", T_RAD2))[0] == 200
        assert event(rad2_ws) == (mr_item, 1, "IN PROGRESS")
        assert rad2.post_form(f"/reading/{tasks[MR].id}/release", {}).status_code == 302
        assert event(rad2_ws) == (mr_item, 1, "SCHEDULED")
        assert event(rad2_ws) == (mr_item, 5, "")                 # no performer any more
        # rad1, globally subscribed but of East, heard nothing of the default institution's MR:
        # a workitem it may see is the next report (its own new CT assignment would be; here
        # the coordinator gives it the MR, so the next is the MR's assignment)
        assert coord.post_form(f"/reading/{tasks[MR].id}/assign", {"assignee": "rad1"}).status_code == 302
        assert event(east_ws) == (mr_item, 5, "rad1")
        assert event(rad2_ws) == (mr_item, 5, "rad1")
        # rad2's token revoked: its channel is closed at the next event it would get
        with server_archive(live) as archive:
            users = Users(archive.index)
            assert users.revoke_token(users.tokens("rad2")[0].id, "rad2")
        assert coord.post_form(f"/reading/{tasks[MR].id}/assign", {"assignee": "coord"}).status_code == 302
        try:
            rad2_ws.recv(timeout=15)
            raise AssertionError("the channel of a revoked token stayed open")
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1008

    # Suspend, then end the global subscription
    assert ups(live, "rad1", "POST", f"/workitems/{GLOBAL}/subscribers/EASTWS/suspend")[0] == 200
    assert ups(live, "rad1", "POST", f"/workitems/{GLOBAL}/subscribers/EASTWS/suspend")[0] == 404
    assert ups(live, "rad1", "DELETE", f"/workitems/{GLOBAL}/subscribers/EASTWS")[0] == 200
    with server_archive(live) as archive:
        details = [e.detail for e in AuditTrail(archive.index).recent(limit=100, actor="rad1")]
    assert f"UPS-RS: EASTWS subscribed to {GLOBAL}" in details and any("unsubscribed" in d for d in details)


def test_subscription_states_and_the_upgrade_that_adds_them(archive):
    """archive/ups_subscriptions.py on SQLite and MariaDB: the global subscription, one
    workitem left out of it, suspending it (the open workitems stay subscribed), ending it;
    and schema 14 added to an index of version 13."""
    from dsmpacs.archive import database
    from dsmpacs.archive.models import SchemaVersion, UpsSubscription
    from dsmpacs.archive.reading import OPEN
    from dsmpacs.archive.ups_subscriptions import Subscriptions

    with archive.index.write():
        archive.db.execute_sql(f"DROP TABLE {UpsSubscription._meta.table_name}")
        SchemaVersion.delete().execute()
        SchemaVersion.create(version=13)
    assert database.upgrade(archive.db) == (13, database.LATEST_VERSION)
    open_task = archive.reading.create("1.2.826.0.1.3680043.8.498.8401")
    done_task = archive.reading.create("1.2.826.0.1.3680043.8.498.8402")
    archive.reading.cancel_scheduled(done_task.id)
    subs = Subscriptions(archive.index)
    a, b = open_task.ups_uid, done_task.ups_uid
    subs.subscribe("WS1", GLOBAL, owner="rad")
    subs.subscribe("WS1", GLOBAL, owner="rad")                          # again: one row
    assert subs.is_subscribed("WS1", a) and subs.is_subscribed("WS1", "1.2.3.4")
    assert subs.unsubscribe("WS1", a) and not subs.is_subscribed("WS1", a)
    assert not subs.unsubscribe("WS1", a)                                # already left out
    subs.subscribe("WS1", a)
    assert subs.of("WS1") == (True, {a}, set())
    assert subs.suspend("WS1", OPEN) and not subs.suspend("WS1", OPEN)
    # suspended: the open workitem stays, the finished one and any new one do not
    assert subs.is_subscribed("WS1", a) and not subs.is_subscribed("WS1", b)
    assert not subs.is_subscribed("WS1", "1.2.3.4")
    assert subs.unsubscribe("WS1", GLOBAL) and subs.of("WS1") == (False, set(), set())
    assert not subs.unsubscribe("WS2", a)


def test_the_channel_s_look_for_changes_uses_an_index_and_the_upgrade_adds_it(archive):
    """Schema 15 (migrations/m0015): ``reading_task.updated_at`` is indexed, so the channel's
    twice-a-second look for changed tasks does not scan every task; an index of version
    14 gains it on upgrade, on SQLite and MariaDB."""
    from datetime import timedelta

    from dsmpacs.archive import database
    from dsmpacs.archive.migrations.m0015_reading_task_updated_index import INDEX
    from dsmpacs.archive.models import ReadingTask, SchemaVersion, utcnow
    from dsmpacs.web import upsws

    db = archive.db
    with archive.index.write():
        db.execute_sql(f"DROP INDEX {INDEX + ' ON reading_task' if database.is_mysql(db) else INDEX}")
        SchemaVersion.delete().execute()
        SchemaVersion.create(version=14)
    with database.session(db):
        assert INDEX not in {i.name for i in db.get_indexes("reading_task")}
    assert database.upgrade(db) == (14, database.LATEST_VERSION)
    database.check(db)
    with database.session(db):
        assert INDEX in {i.name for i in db.get_indexes("reading_task")}
    old = archive.reading.create("1.2.826.0.1.3680043.8.498.8411")
    with archive.index.write():
        ReadingTask.update(updated_at=utcnow() - timedelta(days=400)).where(ReadingTask.id == old.id).execute()
    fresh = archive.reading.create("1.2.826.0.1.3680043.8.498.8412")
    since = utcnow() - timedelta(seconds=2)
    query = upsws.tasks_changed_since(since)
    with archive.index.read():
        assert [row.id for row in query] == [fresh.id]
        if not database.is_mysql(db):    # MariaDB may scan a two-row table whatever its indexes
            sql, params = query.sql()
            plan = " ".join(str(row) for row in db.execute_sql("EXPLAIN QUERY PLAN " + sql, params))
            assert INDEX in plan, plan


def test_with_web_tls_the_channel_is_wss(tmp_path):
    """web_tls: Subscribe names a wss:// channel, which speaks TLS with the web server's
    certificate; plain ws:// is not answered."""
    import ssl

    import requests

    from tests.peers import ServerProcess
    from tests.test_web_https import tls_init

    data_dir = tmp_path / "server"
    ca = tls_init(data_dir)
    port = free_port()
    server = ServerProcess(data_dir, {"web_tls": True, "ups_ws_port": port}, only="web").start()
    try:
        with server_archive(server) as archive:
            users = Users(archive.index)
            users.add("rad2", PW, "radiologist")
            _, token = users.create_token("rad2", "ws")
        answer = requests.post(f"https://127.0.0.1:{server.web_port}/dicom-web/workitems/{GLOBAL}/subscribers/TLSWS",
                               auth=("rad2", PW), verify=str(ca), timeout=30)
        assert answer.status_code == 201, answer.text
        assert answer.headers["Content-Location"] == f"wss://127.0.0.1:{port}/ws/subscribers/TLSWS"
        context = ssl.create_default_context(cafile=str(ca))
        try:
            ws = connect(answer.headers["Content-Location"], ssl=context, open_timeout=10,
                         additional_headers={"Authorization": f"Bearer {token}"})
        except TimeoutError:
            # Seen once in a loaded CI rehearsal and never reproduced: the server's
            # side of the story, for whoever sees it next.
            raise AssertionError("no handshake answer within 10 s; the web process's log:\n"
                                 + server.log()[-4000:]) from None
        with ws:
            assert ws.protocol.state.name == "OPEN"
        try:
            channel(port, "TLSWS", token).close()
            raise AssertionError("plain ws:// was answered on the TLS channel")
        except (InvalidStatus, OSError, EOFError, InvalidMessage):
            pass
    finally:
        server.stop()
