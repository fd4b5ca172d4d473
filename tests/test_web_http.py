"""The web server over real HTTP, against a real `dsmpacs serve` (both processes), with
`requests`; DICOM data arrives through dcmtk. SQLite and MariaDB."""
from __future__ import annotations

import base64
import re

import requests

from dsmpacs.archive.activity import Activity
from dsmpacs.archive.peers import PeerRegistry
from tests import factories as f
from tests.peers import wait_until
from tests.webclient import WebSession, add_user, server_archive

BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


def test_login_and_logout(server):
    password = add_user(server, "rad1", "radiologist")
    web = WebSession(server)
    assert web.get("/", allow_redirects=False).status_code == 401
    response = web.login("rad1", password)
    assert response.headers["Location"] == "/"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert web.get("/").status_code == 200
    assert web.post_form("/logout", {}).status_code == 302
    assert web.get("/", allow_redirects=False).status_code == 401


def test_anonymous_gets_401_on_the_ui_and_on_dicomweb(server):
    page = requests.get(server.url("/admin/"), headers=BROWSER, timeout=10)
    assert page.status_code == 401 and 'name="password"' in page.text
    api = requests.get(server.url("/dicom-web/studies"), headers={"Accept": "application/dicom+json"},
                       timeout=10)
    assert api.status_code == 401
    assert "Basic" in api.headers["WWW-Authenticate"]


def test_api_clients_use_basic_or_a_token(server):
    password = add_user(server, "rad1", "radiologist")
    raw = base64.b64encode(f"rad1:{password}".encode()).decode()
    authed = requests.get(server.url("/dicom-web/studies"), headers={"Authorization": f"Basic {raw}"},
                          timeout=10)
    assert authed.status_code != 401          # past authentication (DICOMweb itself is item 4)
    wrong = requests.get(server.url("/dicom-web/studies"), auth=("rad1", "nope, not it"), timeout=10)
    assert wrong.status_code == 401


def test_login_is_rate_limited(server_factory, database_url):
    server = server_factory(database_url=database_url, login_limit_per_user=3)
    password = add_user(server, "rad1", "radiologist")
    web = WebSession(server)
    for _ in range(3):
        web.token_for("/login")
        assert web.post_form("/login", {"username": "rad1", "password": "wrong guess!"}).status_code == 401
    web.token_for("/login")
    throttled = web.post_form("/login", {"username": "rad1", "password": password})
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 0


def test_cross_site_post_without_token_is_refused(server):
    password = add_user(server, "boss", "admin")
    web = WebSession(server)
    web.login("boss", password)
    forged = web.post("/admin/peers", data={"name": "evil", "ae_title": "EVIL", "host": "10.6.6.6", "port": "104"},
                      headers={"Origin": "http://evil.example", "Referer": "http://evil.example/x"},
                      allow_redirects=False)
    assert forged.status_code == 403
    with server_archive(server) as archive:
        assert PeerRegistry(archive.index).get("evil") is None
    genuine = web.post_form("/admin/peers", {"name": "ws", "ae_title": "WS3D", "host": "10.0.0.3", "port": "104"})
    assert genuine.status_code == 302


def test_viewer_cannot_reach_admin_pages_or_post_admin_forms(server):
    password = add_user(server, "view1", "viewer")
    web = WebSession(server)
    web.login("view1", password)
    for path in ("/admin/", "/admin/users", "/admin/peers", "/-/settings"):
        assert web.get(path).status_code == 403, path
    web.get("/")
    refused = web.post_form("/admin/users", {"username": "sneaky", "role": "admin", "password": "a long password"})
    assert refused.status_code == 403
    with server_archive(server) as archive:
        from dsmpacs.archive.users import Users

        assert Users(archive.index).by_name("sneaky") is None


def test_security_headers(server):
    for path in ("/login", "/static/js/app.js", "/-/version"):
        response = requests.get(server.url(path), headers=BROWSER, timeout=10)
        assert response.status_code == 200, path
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'self'" in response.headers["Content-Security-Policy"]


def test_patient_name_with_markup_received_over_dicom_is_shown_as_text(server, tmp_path):
    xss = "<img src=x onerror=alert(1)>"
    path = f.write(f.secondary_capture(patient=f.Patient(name=xss, patient_id="XSS-1")), tmp_path / "xss.dcm")
    assert server.storescu(path).returncode == 0
    password = add_user(server, "boss", "admin")
    web = WebSession(server)
    web.login("boss", password)
    for page in ("/", "/admin/activity"):
        body = web.get(page).text
        assert "&lt;img src = x onerror = alert(1)&gt;" in body, page
        assert "<img src=x" not in body and "<img src = x" not in body, page   # thumbnails are <img> too


def test_associations_are_logged_once_each_with_their_counts(server, tmp_path):
    files = [f.write(f.secondary_capture(), tmp_path / f"{i}.dcm") for i in range(3)]
    assert server.storescu(*files).returncode == 0
    assert server.echoscu().returncode == 0
    with server_archive(server) as archive:
        # The row is written when the connection closes, which may be just after
        # the tool exits: poll.
        entries = wait_until(lambda: (rows := Activity(archive.index).recent()) and len(rows) >= 2 and rows,
                             what="two association rows")
    store = next(e for e in entries if "C-STORE" in e.services)
    echo = next(e for e in entries if e.services == "C-ECHO")
    assert (store.calling_ae, store.called_ae, store.completed, store.failed) == ("STORESCU", "DSMPACS", 3, 0)
    assert store.outcome == "released" and store.bytes > 3 * 4096 and store.peer.startswith("127.0.0.1:")
    assert echo.calling_ae == "ECHOSCU" and echo.completed == 1
    assert len(entries) == 2

    password = add_user(server, "boss", "admin")
    web = WebSession(server)
    web.login("boss", password)
    body = web.get("/admin/activity").text
    assert "STORESCU" in body and "ECHOSCU" in body


def test_echo_from_the_admin_page_reaches_the_dicom_process(server):
    password = add_user(server, "boss", "admin")
    with server_archive(server) as archive:
        from dsmpacs.archive.peers import Peer

        PeerRegistry(archive.index).add(Peer("self", server.ae_title, "127.0.0.1", server.port))
    web = WebSession(server)
    web.login("boss", password)
    web.get("/admin/peers")
    assert web.post_form("/admin/peers/echo/self", {}).status_code == 302
    body = web.get("/admin/peers").text
    assert re.search(r"C-ECHO to self succeeded in \d+ ms", body), body[:2000]


def test_health_and_version(server):
    health = requests.get(server.url("/-/health"), timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.json()["checks"]["storage"] == {"ok": True}
    version = requests.get(server.url("/-/version"), timeout=10).json()
    assert version["name"] == "DSM PACS" and version["version"]
