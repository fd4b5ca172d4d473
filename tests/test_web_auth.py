"""Sign-in, sessions, CSRF, roles, API credentials and security headers (Flask test client).

The same properties are checked over real HTTP against `dsmpacs serve` in
test_web_http.py; here the finer cases run fast, on SQLite and MariaDB.
"""
from __future__ import annotations

import base64

import pytest

from dsmpacs.archive.peers import PeerRegistry
from dsmpacs.archive.users import Users
from tests.webclient import TOKEN_RE, client_as, client_csrf, client_login, make_user

HTML = {"Accept": "text/html"}


def basic(username: str, password: str) -> dict:
    raw = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


# --- anonymous requests -----------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/admin/", "/admin/users", "/account", "/no/such/page"])
def test_anonymous_ui_gets_401_with_a_login_page(client, path):
    response = client.get(path, headers=HTML)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Session")   # no Basic prompt in browsers
    body = response.get_data(as_text=True)
    assert 'action="/login"' in body and 'name="password"' in body


def test_anonymous_json_request_gets_401_json(client):
    response = client.get("/admin/users", headers={"Accept": "application/json"})
    assert response.status_code == 401 and response.get_json() == {"error": "authentication required"}


@pytest.mark.parametrize("path", ["/dicom-web/studies", "/dicom-web/studies/1.2.3/series", "/dicom-web"])
def test_anonymous_dicomweb_gets_401_with_basic_and_bearer_challenges(client, path):
    response = client.get(path, headers={"Accept": "application/dicom+json"})
    assert response.status_code == 401
    challenges = response.headers.getlist("WWW-Authenticate")
    assert any(c.startswith("Basic ") for c in challenges) and any(c.startswith("Bearer ") for c in challenges)


def test_health_version_and_static_files_are_public(client):
    assert client.get("/-/version").get_json()["name"] == "DSM PACS"
    assert client.get("/-/health").status_code in (200, 503)
    css = client.get("/static/css/app.css")
    assert css.status_code == 200 and b".topbar" in css.data
    assert client.get("/-/settings").status_code == 401


# --- sessions --------------------------------------------------------------------------
def test_login_sets_a_httponly_samesite_session_and_logout_ends_it(client, archive):
    make_user(archive, "rad1", "radiologist")
    response = client_login(client, "rad1", next="/account")
    assert response.status_code == 302 and response.headers["Location"] == "/account"
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("dsmpacs_session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert client.get("/account", headers=HTML).status_code == 200
    token = client_csrf(client, "/account")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/account", headers=HTML).status_code == 401


def test_secure_cookies_when_configured(settings, archive):
    from dsmpacs.web.app import create_app

    app = create_app(settings.with_overrides(web_secure_cookies=True), archive)
    client = app.test_client()
    make_user(archive, "rad1", "radiologist")
    response = client_login(client, "rad1")
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("dsmpacs_session="))
    assert "Secure" in cookie


def test_cookies_are_secure_when_the_request_came_over_https(client, archive):
    make_user(archive, "rad1", "radiologist")
    token = TOKEN_RE.search(client.get("/login", base_url="https://pacs.example").get_data(as_text=True)).group(1)
    response = client.post("/login", base_url="https://pacs.example",
                           data={"username": "rad1", "password": "correct horse battery", "csrf_token": token})
    assert response.status_code == 302
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("dsmpacs_session="))
    assert "Secure" in cookie


def test_wrong_password_is_401_and_audited(client, archive):
    make_user(archive, "rad1", "radiologist")
    response = client_login(client, "rad1", password="not the password")
    assert response.status_code == 401 and b"data-login-error" in response.data
    from dsmpacs.archive.audit import AuditTrail

    entry = AuditTrail(archive.index).recent(limit=1)[0]
    assert (entry.actor, entry.action, entry.outcome) == ("rad1", "login-failed", "failed")


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example"])
def test_login_never_redirects_off_site(client, archive, target):
    make_user(archive, "rad1", "radiologist")
    response = client_login(client, "rad1", next=target)
    assert response.status_code == 302 and response.headers["Location"] == "/studies"   # the landing page


def test_password_change_ends_other_sessions(web_app, archive):
    first, second = web_app.test_client(), web_app.test_client()
    make_user(archive, "rad1", "radiologist")
    assert client_login(first, "rad1").status_code == 302
    assert client_login(second, "rad1").status_code == 302
    token = client_csrf(first, "/account")
    changed = first.post("/account", data={"csrf_token": token, "current_password": "correct horse battery",
                                           "new_password": "a brand new secret", "confirm_password":
                                           "a brand new secret"})
    assert changed.status_code == 302
    assert first.get("/account", headers=HTML).status_code == 200        # this session continues
    assert second.get("/account", headers=HTML).status_code == 401       # the other one ended


def test_disabled_account_loses_its_session(client, archive):
    make_user(archive, "admin2", "admin")
    client_as(client, archive, "viewer")
    Users(archive.index).set_disabled("viewer1", True)
    assert client.get("/", headers=HTML).status_code == 401


def test_login_lifetime_is_enforced(settings, archive, monkeypatch):
    import time as time_module

    from dsmpacs.web.app import create_app

    app = create_app(settings.with_overrides(web_session_hours=1.0), archive)
    client = app.test_client()
    client_as(client, archive, "viewer")
    assert client.get("/", headers=HTML).status_code == 200
    real = time_module.time
    monkeypatch.setattr(time_module, "time", lambda: real() + 3601)
    assert client.get("/", headers=HTML).status_code == 401


# --- login throttling ------------------------------------------------------------------
def test_too_many_failures_for_one_user_are_throttled(settings, archive):
    from dsmpacs.web.app import create_app

    app = create_app(settings.with_overrides(login_limit_per_user=3, login_limit_per_address=100), archive)
    client = app.test_client()
    make_user(archive, "rad1", "radiologist")
    for _ in range(3):
        assert client_login(client, "rad1", password="wrong password!").status_code == 401
    throttled = client_login(client, "rad1")                  # even the right password now
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 0
    assert client_login(client, "rad1").status_code == 429
    from dsmpacs.archive.audit import AuditTrail

    trail = AuditTrail(archive.index)
    assert trail.count(action="login-failed") == 3
    assert trail.count(action="login-throttled") == 1         # once, not once per attempt
    make_user(archive, "rad2", "radiologist")
    assert client_login(client, "rad2").status_code == 302    # other users are not affected


def test_too_many_failures_from_one_address_are_throttled(settings, archive):
    from dsmpacs.web.app import create_app

    app = create_app(settings.with_overrides(login_limit_per_user=100, login_limit_per_address=4), archive)
    client = app.test_client()
    make_user(archive, "rad1", "radiologist")
    for i in range(4):
        assert client_login(client, f"guess{i}", password="wrong password!").status_code == 401
    assert client_login(client, "rad1").status_code == 429
    other = app.test_client()
    response = other.post("/login", environ_base={"REMOTE_ADDR": "10.9.9.9"},
                          data={"username": "rad1", "password": "correct horse battery",
                                "csrf_token": TOKEN_RE.search(other.get(
                                    "/login", environ_base={"REMOTE_ADDR": "10.9.9.9"}).get_data(as_text=True)
                                ).group(1)})
    assert response.status_code == 302


# --- CSRF -------------------------------------------------------------------------------
def test_login_form_without_csrf_token_is_refused(client, archive):
    make_user(archive, "rad1", "radiologist")
    response = client.post("/login", data={"username": "rad1", "password": "correct horse battery"},
                           headers=HTML)
    assert response.status_code == 403
    assert client.get("/account", headers=HTML).status_code == 401


@pytest.mark.parametrize("token", [None, "forged-token"])
def test_admin_post_without_the_right_token_is_refused_and_changes_nothing(client, archive, token):
    client_as(client, archive, "admin")
    data = {"name": "evil", "ae_title": "EVIL", "host": "10.6.6.6", "port": "104"}
    if token:
        data["csrf_token"] = token
    response = client.post("/admin/peers", data=data, headers={**HTML, "Origin": "http://evil.example"})
    assert response.status_code == 403
    assert "form was not sent from this site" in response.get_data(as_text=True)
    assert PeerRegistry(archive.index).get("evil") is None


def test_state_changing_json_call_accepts_the_header_token(client, archive):
    client_as(client, archive, "admin")
    token = client_csrf(client, "/admin/peers")
    response = client.post("/admin/peers", headers={"X-CSRF-Token": token},
                           data={"name": "ws", "ae_title": "WS3D", "host": "10.0.0.3", "port": "104"})
    assert response.status_code == 302
    assert PeerRegistry(archive.index).get("ws").ae_title == "WS3D"


# --- roles -------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ["viewer", "radiologist"])
@pytest.mark.parametrize("path", ["/admin/", "/admin/storage", "/admin/users", "/admin/peers", "/admin/policy",
                                  "/admin/audit", "/admin/activity", "/admin/quarantine", "/-/settings"])
def test_non_admins_cannot_see_admin_pages(client, archive, role, path):
    client_as(client, archive, role)
    assert client.get(path, headers=HTML).status_code == 403


def test_viewer_cannot_make_admin_changes(client, archive):
    client_as(client, archive, "viewer")
    token = client_csrf(client, "/")
    for path, data in [("/admin/users", {"username": "mine", "role": "admin"}),
                       ("/admin/peers", {"name": "p", "ae_title": "P", "host": "h", "port": "1"}),
                       ("/admin/policy", {"strict_ae_check": "on"}),
                       ("/admin/users/viewer1/role", {"role": "admin"})]:
        assert client.post(path, data={**data, "csrf_token": token}).status_code == 403, path
    assert Users(archive.index).by_name("mine") is None
    assert Users(archive.index).by_name("viewer1").role.value == "viewer"


def test_admin_nav_link_only_for_admins(client, archive):
    client_as(client, archive, "viewer")
    assert 'data-nav="admin"' not in client.get("/", headers=HTML).get_data(as_text=True)


# --- API credentials -------------------------------------------------------------------
def test_basic_and_bearer_authenticate_api_paths_only(client, archive):
    make_user(archive, "rad1", "radiologist")
    _, token = Users(archive.index).create_token("rad1", "test")
    # authenticated: past the 401 to an empty search (204)
    assert client.get("/dicom-web/studies", headers=basic("rad1", "correct horse battery")).status_code == 204
    assert client.get("/dicom-web/studies", headers={"Authorization": f"Bearer {token}"}).status_code == 204
    assert client.get("/dicom-web/studies", headers=basic("rad1", "wrong password!")).status_code == 401
    assert client.get("/dicom-web/studies", headers={"Authorization": "Bearer dsm_nope"}).status_code == 401
    # UI pages take the session only
    assert client.get("/account", headers={**HTML, **basic("rad1", "correct horse battery")}).status_code == 401


def test_basic_credentials_stop_working_after_a_password_change(client, archive):
    make_user(archive, "rad1", "radiologist")
    creds = basic("rad1", "correct horse battery")
    assert client.get("/dicom-web/x", headers=creds).status_code == 404          # now cached
    Users(archive.index).set_password("rad1", "the new password")
    assert client.get("/dicom-web/x", headers=creds).status_code == 401


def test_a_request_takes_one_pooled_index_connection_and_returns_it(client, archive, monkeypatch):
    """web/app.py hold_index_connection: the account, scope and study look-ups of one
    request share one connection (on MariaDB each hand-out pings the server), and the
    connection goes back to the pool at the request's end, also after an error."""
    make_user(archive, "rad1", "radiologist")
    creds = basic("rad1", "correct horse battery")
    db = archive.index.db
    assert client.get("/dicom-web/studies", headers=creds).status_code == 204   # the password checked once
    if not db.is_closed():
        db.close()
    connects = []
    original = type(db).connect
    monkeypatch.setattr(type(db), "connect", lambda self, *a, **k: connects.append(1) or original(self, *a, **k))
    for path, status in (("/dicom-web/studies", 204), ("/dicom-web/studies/1.2.3/series", 204),
                         ("/dicom-web/studies/not-a-uid/metadata", 400)):
        connects.clear()
        assert client.get(path, headers=creds).status_code == status
        assert len(connects) == 1, path
        assert db.is_closed(), path


def test_a_used_up_pool_leaves_each_query_its_own_connection(client, archive, monkeypatch):
    from playhouse.pool import MaxConnectionsExceeded

    make_user(archive, "rad1", "radiologist")
    db = archive.index.db
    if not db.is_closed():
        db.close()
    original, refused = type(db).connect, []

    def connect(self, *args, **kwargs):
        if not refused:                       # the request's own hold finds the pool used up
            refused.append(1)
            raise MaxConnectionsExceeded("used up")
        return original(self, *args, **kwargs)
    monkeypatch.setattr(type(db), "connect", connect)
    assert client.get("/dicom-web/studies", headers=basic("rad1", "correct horse battery")).status_code == 204
    assert refused and db.is_closed()


def test_cross_site_post_with_cached_basic_credentials_is_refused(client, archive):
    make_user(archive, "rad1", "radiologist")
    response = client.post("/dicom-web/studies", data=b"x",
                           headers={**basic("rad1", "correct horse battery"), "Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 403


# --- headers and escaping ------------------------------------------------------------------
def test_security_headers_on_pages(client, archive):
    for response in (client.get("/login", headers=HTML), client.get("/", headers=HTML)):
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
        assert "frame-ancestors 'self'" in csp and "object-src 'none'" in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "SAMEORIGIN"
        assert response.headers["Referrer-Policy"] == "same-origin"
        assert response.headers["Cache-Control"] == "no-store"
    assert client.get("/static/js/app.js").headers["X-Content-Type-Options"] == "nosniff"


def test_no_inline_script_in_any_page(client, archive):
    import re

    client_as(client, archive, "admin")
    for path in ["/login", "/", "/account", "/admin/storage", "/admin/activity", "/admin/peers",
                 "/admin/policy", "/admin/users", "/admin/quarantine", "/admin/audit"]:
        body = client.get(path, headers=HTML).get_data(as_text=True)
        for tag in re.findall(r"<script\b[^>]*>", body):
            assert "src=" in tag or 'type="application/json"' in tag, f"{path}: {tag}"
        assert not re.search(r"\son[a-z]+\s*=", body), f"{path}: inline event handler"
        assert "style=" not in body, f"{path}: inline style (blocked by style-src 'self')"
