"""Administration pages through the Flask test client, on SQLite and MariaDB."""
from __future__ import annotations

import re
import socket
import uuid

import pytest

from dsmpacs import runfiles
from dsmpacs.archive.activity import Activity
from dsmpacs.archive.audit import AuditTrail
from dsmpacs.archive.ingest import Origin
from dsmpacs.archive.peers import Peer, PeerRegistry
from dsmpacs.archive.users import Users
from tests import factories as f
from tests.peers import MARIADB
from tests.webclient import client_as, client_csrf, client_login

HTML = {"Accept": "text/html"}
XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture
def admin(client, archive):
    client_as(client, archive, "admin", "root")
    return client


def post(client, path, data, page=None):
    token = client_csrf(client, page or "/")
    return client.post(path, data={**data, "csrf_token": token}, headers=HTML)


def text(response) -> str:
    return response.get_data(as_text=True)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- escaping of DICOM text ---------------------------------------------------------------
def test_patient_names_render_as_text(admin, archive, tmp_path):
    ds = f.secondary_capture(patient=f.Patient(name=XSS, patient_id="<b>ID</b>"),
                             study_description="<script>alert(2)</script>")
    assert archive.ingest.import_file(f.write(ds, tmp_path / "x.dcm"), Origin("import")).archived
    for path in ("/", "/admin/activity"):
        body = text(admin.get(path, headers=HTML))
        # shown as a person name (PN groups split at "="), escaped
        assert "&lt;img src = x onerror = alert(1)&gt;" in body, path
        assert "&lt;script&gt;alert(2)&lt;/script&gt;" in body and "&lt;b&gt;ID&lt;/b&gt;" in body
        # series thumbnails are <img> elements too; the injected one must not be
        assert "<img src" not in body and "<script>alert" not in body and "<b>ID" not in body


def test_templates_never_mark_data_safe():
    from pathlib import Path

    import dsmpacs.web

    root = Path(dsmpacs.web.__file__).parent
    for template in root.rglob("*.html"):
        assert "|safe" not in template.read_text().replace(" ", ""), template
    for module in root.rglob("*.py"):
        source = module.read_text()
        assert "Markup(" not in source or module.name == "csrf.py", module


# --- storage --------------------------------------------------------------------------------
def test_storage_page_shows_totals_and_a_chart_per_day(admin, archive, tmp_path):
    for i in range(3):
        ds = f.secondary_capture()
        assert archive.ingest.import_file(f.write(ds, tmp_path / f"{i}.dcm"), Origin("import")).archived
    body = text(admin.get("/admin/storage", headers=HTML))
    assert body.count('<figure class="chart">') == 2
    bars = re.findall(r'<rect class="bar"[^>]*height="([0-9.]+)"', body)
    assert len(bars) == 60                                   # 30 days x 2 charts
    assert sum(float(h) > 0 for h in bars[:30]) == 1         # everything arrived today
    assert float(bars[29]) > 0                               # today is the last bar
    assert re.search(r'<span class="big">3</span> instances', body)
    assert "data-free-bytes" in body


# --- remote AEs ------------------------------------------------------------------------------
def test_add_edit_and_remove_a_remote_ae(admin, archive):
    response = post(admin, "/admin/peers", {"name": "Angio 1", "ae_title": "ANGIO1", "host": "10.0.0.7",
                                            "port": "104", "may_store": "on", "description": "Suite A"})
    assert response.status_code == 302
    peer = PeerRegistry(archive.index).get("Angio 1")
    assert peer.may_store and not peer.may_find and not peer.is_move_destination
    listing = text(admin.get("/admin/peers", headers=HTML))
    assert "Remote AE Angio 1 added." in listing and "10.0.0.7:104" in listing

    response = post(admin, "/admin/peers/edit/Angio 1", {"name": "Angio 1", "ae_title": "ANGIO1",
                                                         "host": "10.0.0.8", "port": "11112", "may_find": "on"},
                    page="/admin/peers")
    assert response.status_code == 302
    peer = PeerRegistry(archive.index).get("Angio 1")
    assert (peer.host, peer.port, peer.may_find, peer.may_store) == ("10.0.0.8", 11112, True, False)

    bad = post(admin, "/admin/peers", {"name": "x", "ae_title": "BAD\\AE", "host": "h", "port": "1"})
    assert bad.status_code == 400 and "not a valid AE title" in text(bad)

    assert post(admin, "/admin/peers/remove/Angio 1", {}, page="/admin/peers").status_code == 302
    assert PeerRegistry(archive.index).get("Angio 1") is None
    # (the pages in between also audit their searches)
    actions = [e.action for e in AuditTrail(archive.index).recent(actor="root") if e.action != "search"]
    assert actions[:3] == ["peer-remove", "peer-change", "peer-add"]


def test_echo_failure_is_shown_and_logged(admin, archive):
    PeerRegistry(archive.index).add(Peer("gone", "GONE", "127.0.0.1", closed_port()))
    response = post(admin, "/admin/peers/echo/gone", {}, page="/admin/peers")
    assert response.status_code == 302
    body = text(admin.get("/admin/peers", headers=HTML))
    assert "C-ECHO to gone failed" in body
    entry = Activity(archive.index).recent()[0]
    assert (entry.direction, entry.called_ae, entry.outcome, entry.failed) == ("out", "GONE", "failed", 1)


# --- access policy ---------------------------------------------------------------------------
def test_policy_change_is_written_to_config_and_pending_until_restart(admin, archive, settings):
    page = text(admin.get("/admin/policy", headers=HTML))
    assert "strict_ae_check" in page and "data-pending" not in page
    response = post(admin, "/admin/policy", {"unknown_ae_may_store": "on", "strict_ae_check": "on"})
    assert response.status_code == 302
    config = (settings.data_dir / "config.toml").read_text()
    assert "strict_ae_check = true" in config
    page = text(admin.get("/admin/policy", headers=HTML))
    row = re.search(r'data-setting="strict_ae_check".*?</tr>', page, re.S).group(0)
    assert "data-pending" in row
    assert AuditTrail(archive.index).recent(action="settings-change")[0].detail == "strict_ae_check = true"


def test_policy_set_in_the_environment_cannot_be_edited(admin, monkeypatch):
    monkeypatch.setenv("DSMPACS_CHECK_PEER_HOST", "0")
    page = text(admin.get("/admin/policy", headers=HTML))
    row = re.search(r'data-setting="check_peer_host".*?</tr>', page, re.S).group(0)
    assert "disabled" in row and "environment variable" in row


# --- users and tokens ------------------------------------------------------------------------
def test_add_user_with_a_generated_password_shown_once(admin, web_app, archive):
    response = post(admin, "/admin/users", {"username": "rad2", "role": "radiologist", "password": ""})
    body = text(response)
    password = re.search(r"data-shown-password>.*?<code[^>]*>([^<]+)</code>", body, re.S).group(1)
    assert "rad2" in text(admin.get("/admin/users", headers=HTML))
    assert password not in text(admin.get("/admin/users", headers=HTML))      # once only
    other = web_app.test_client()
    assert client_login(other, "rad2", password).status_code == 302


def test_role_change_disable_and_password_reset(admin, web_app, archive):
    users = Users(archive.index)
    users.add("rad2", "correct horse battery", "radiologist")
    other = web_app.test_client()
    assert client_login(other, "rad2").status_code == 302

    assert post(admin, "/admin/users/rad2/role", {"role": "viewer"}, page="/admin/users").status_code == 302
    assert users.by_name("rad2").role.value == "viewer"
    assert post(admin, "/admin/users/rad2/state", {"disabled": "1"}, page="/admin/users").status_code == 302
    assert other.get("/", headers=HTML).status_code == 401                    # signed out at once
    assert post(admin, "/admin/users/rad2/state", {"disabled": "0"}, page="/admin/users").status_code == 302
    reset = post(admin, "/admin/users/rad2/password", {"password": "set by the admin"}, page="/admin/users")
    assert reset.status_code == 200
    assert users.authenticate("rad2", "set by the admin") is not None
    # the last admin cannot demote itself
    refused = post(admin, "/admin/users/root/role", {"role": "viewer"}, page="/admin/users")
    assert refused.status_code == 400 and users.by_name("root").role.value == "admin"
    assert post(admin, "/admin/users/root/remove", {}, page="/admin/users").status_code == 400


def test_token_created_on_the_page_works_and_can_be_revoked(admin, archive):
    Users(archive.index).add("rad2", "correct horse battery", "radiologist")
    body = text(post(admin, "/admin/users/rad2/tokens", {"label": "OHIF"}, page="/admin/users"))
    secret = re.search(r"data-shown-token>.*?<code[^>]*>([^<]+)</code>", body, re.S).group(1)
    bearer = {"Authorization": f"Bearer {secret}"}
    assert admin.get("/dicom-web/studies", headers=bearer).status_code == 204   # authenticated, empty archive
    token_id = Users(archive.index).tokens("rad2")[0].id
    assert post(admin, f"/admin/tokens/{token_id}/revoke", {}, page="/admin/users").status_code == 302
    assert admin.get("/dicom-web/studies", headers=bearer).status_code == 401


# --- activity, quarantine, audit ---------------------------------------------------------------
def test_quarantine_and_audit_pages_list_entries(admin, archive, tmp_path):
    first = f.secondary_capture()
    second = f.secondary_capture(sop_uid=first.SOPInstanceUID)
    archive.ingest.import_file(f.write(first, tmp_path / "a.dcm"), Origin("import"))
    result = archive.ingest.import_file(f.write(second, tmp_path / "b.dcm"), Origin("import"))
    assert result.outcome.value == "conflict"
    body = text(admin.get("/admin/quarantine", headers=HTML))
    assert first.SOPInstanceUID in body
    audit = text(admin.get("/admin/audit?action=login", headers=HTML))
    assert "<td>root <small>(administrator)</small></td>" in audit
    assert '<td>User Authentication: Login</td><td data-audit-action="login">Sign-in</td>' in audit
    assert 'data-chain="intact"' in audit


# --- health ---------------------------------------------------------------------------------
def test_health_reports_the_dicom_listener_from_its_run_file(client, settings, archive):
    down = client.get("/-/health")
    assert down.status_code == 503
    assert down.get_json()["checks"]["dicom"] == {
        "ok": False, "error": "the DICOM listener is not running (no run file)"}
    assert down.get_json()["checks"]["index"]["ok"] and down.get_json()["checks"]["storage"]["ok"]
    runfiles.write(settings, "dicom", host="127.0.0.1", port=11112, ae_title="DSMPACS")   # this process
    up = client.get("/-/health")
    assert up.status_code == 200 and up.get_json()["status"] == "ok"
    # Anonymous monitoring learns the outcome only, not the port, AE title, pid or free bytes.
    assert up.get_json()["checks"] == {"index": {"ok": True}, "storage": {"ok": True}, "dicom": {"ok": True}}
    client_as(client, archive, "admin", "root")
    detailed = client.get("/-/health").get_json()["checks"]
    assert detailed["dicom"]["port"] == 11112 and detailed["dicom"]["ae_title"] == "DSMPACS"
    assert detailed["storage"]["writable"] is True and detailed["storage"]["free_bytes"] > 0


@pytest.mark.mariadb
def test_anonymous_health_hides_the_index_drivers_message(tmp_path, mariadb_admin, mariadb_url):
    """A real refusal: the archive's own MariaDB account is dropped and its connection
    killed, so the reconnect fails with a message naming the account and its host."""
    from dsmpacs.archive import Archive
    from dsmpacs.settings import Settings
    from dsmpacs.web.app import create_app

    account = f"hq{uuid.uuid4().hex[:8]}"
    database = mariadb_url.rsplit("/", 1)[1]
    with mariadb_admin.cursor() as cur:
        cur.execute(f"CREATE USER '{account}'@'%' IDENTIFIED BY 'pw-{account}'")
        cur.execute(f"GRANT ALL ON `{database}`.* TO '{account}'@'%'")
    url = mariadb_url.replace(f"//{MARIADB['user']}@", f"//{account}:pw-{account}@")
    settings = Settings.load(data_dir=tmp_path / "data", env={}, overrides={
        "database_url": url, "dicom_port": 0, "min_free_mb": 0})
    archive = Archive(settings)
    archive.open(upgrade=True)
    try:
        client = create_app(settings, archive).test_client()
        assert client.get("/-/health").get_json()["checks"]["index"] == {"ok": True}
        with mariadb_admin.cursor() as cur:
            cur.execute("SELECT id FROM information_schema.processlist WHERE user = %s", (account,))
            sessions = [row[0] for row in cur.fetchall()]
            cur.execute(f"DROP USER '{account}'@'%'")
            for session in sessions:
                cur.execute(f"KILL {int(session)}")
        report = client.get("/-/health")
        assert report.status_code == 503
        assert report.get_json()["checks"]["index"] == {"ok": False, "error": "the index does not answer"}
        assert account not in report.get_data(as_text=True)
    finally:
        archive.close()
        with mariadb_admin.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{account}'@'%'")


def test_health_fails_when_free_space_is_below_the_reserve(settings, archive):
    from dsmpacs.web.app import create_app

    runfiles.write(settings, "dicom", host="127.0.0.1", port=11112, ae_title="DSMPACS")
    archive.storage.min_free_bytes = archive.storage.free_bytes() + 2**40
    report = create_app(settings, archive).test_client().get("/-/health")
    assert report.status_code == 503
    assert "below min_free_mb" in report.get_json()["checks"]["storage"]["error"]


def test_settings_endpoint_redacts_secrets(admin, settings):
    values = admin.get("/-/settings").get_json()
    assert values["ae_title"] == settings.ae_title and "web_port" in values
    if settings.database_url and "@" in settings.database_url and ":" in settings.database_url.split("@")[0][8:]:
        assert "********" in values["database_url"]


# --- language ---------------------------------------------------------------------------------
def test_browser_language_and_switch(client, archive):
    page = client.get("/login", headers={**HTML, "Accept-Language": "zh-CN,zh;q=0.9"})
    assert '<html lang="zh-Hans">' in text(page) and "登录" in text(page)
    token = client_csrf(client)
    switched = client.post("/language", data={"lang": "en", "next": "/login", "csrf_token": token})
    assert switched.status_code == 302 and switched.headers["Location"] == "/login"
    page = client.get("/login", headers={**HTML, "Accept-Language": "zh-CN,zh;q=0.9"})
    assert '<html lang="en">' in text(page) and "Sign in" in text(page)
