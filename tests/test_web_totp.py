"""The second factor and re-authentication over real HTTP against a real `dsmpacs serve`:
an admin must enrol and then give a code; wrong and replayed codes are refused and
audited; recovery codes work once; dangerous actions ask for the password again.
SQLite and MariaDB."""
from __future__ import annotations

import re
import time

import pyotp
import pytest
import requests
from click.testing import CliRunner

from dsmpacs.archive.audit import AuditTrail
from dsmpacs.archive.models import WebSession, utcnow
from dsmpacs.archive.totp import roles_requiring
from dsmpacs.archive.users import Users
from dsmpacs.settings import Settings, SettingsError
from tests.peers import ServerProcess, wait_until
from tests.webclient import WebSession as Browser
from tests.webclient import add_user, server_archive

SECRET_RE = re.compile(r"data-totp-secret>([A-Z2-7]+)<")
CODES_RE = re.compile(r"<li><code>([A-Z0-9-]{19})</code></li>")


@pytest.fixture(scope="module")
def server(tmp_path_factory, module_database_url):
    proc = ServerProcess(tmp_path_factory.mktemp("totp") / "server",
                         {"database_url": module_database_url, "require_totp_roles": "admin"},
                         only="web").start()
    yield proc
    proc.stop()


def code_at(secret: str, steps_ahead: int = 0) -> str:
    """The code of the current 30-second step, or of a later one (accepted one step ahead)."""
    return pyotp.TOTP(secret).at(time.time() + 30 * steps_ahead)


def audit_rows(server, actor: str, action: str):
    with server_archive(server) as archive:
        return AuditTrail(archive.index).recent(actor=actor, action=action, limit=100)


def password_step(server, username: str, password: str) -> tuple[Browser, str]:
    web = Browser(server)
    response = web.login(username, password)
    return web, response.headers["Location"]


def enrol(server, username: str, password: str) -> tuple[Browser, str, list[str]]:
    """Sign in with the password, enrol from the page the server sends us to."""
    web, location = password_step(server, username, password)
    assert location.startswith("/account/totp")
    page = web.get(location)
    secret = SECRET_RE.search(page.text).group(1)
    qr = web.get("/account/totp/qr.svg")
    assert qr.headers["Content-Type"].startswith("image/svg+xml") and b"<svg" in qr.content
    assert qr.headers["Cache-Control"] == "no-store"
    done = web.post_form("/account/totp", {"code": code_at(secret)})
    assert done.status_code == 200, done.text[:500]
    codes = CODES_RE.findall(done.text)
    return web, secret, codes


def test_the_product_requires_totp_for_admins_by_default(tmp_path):
    setting = Settings.load(data_dir=tmp_path, env={}).require_totp_roles
    assert "admin" in roles_requiring(setting)
    with pytest.raises(SettingsError, match="admn"):
        roles_requiring("admn, viewer")          # a typo must not turn the requirement off


def test_an_admin_must_enrol_before_anything_else(server):
    password = add_user(server, "adm1", "admin")
    web, location = password_step(server, "adm1", password)
    assert location.startswith("/account/totp")
    # Half signed in: every page leads back to enrolment, the API sees nobody.
    blocked = web.get("/admin/users", allow_redirects=False)
    assert blocked.status_code == 302 and blocked.headers["Location"].startswith("/account/totp")
    assert web.get("/dicom-web/studies", headers={"Accept": "application/dicom+json"}).status_code == 401

    page = web.get(location)
    secret = SECRET_RE.search(page.text).group(1)
    assert requests.get(server.url("/account/totp/qr.svg"), timeout=10).status_code == 401   # not anyone's
    wrong = web.post_form("/account/totp", {"code": "000000" if code_at(secret) != "000000" else "111111"})
    assert wrong.status_code == 400
    assert web.get("/admin/users", allow_redirects=False).status_code == 302
    done = web.post_form("/account/totp", {"code": code_at(secret)})
    assert done.status_code == 200
    codes = CODES_RE.findall(done.text)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert web.get("/admin/users", allow_redirects=False).status_code == 200
    assert [r.outcome for r in audit_rows(server, "adm1", "totp-failed")] == ["failed"]
    assert len(audit_rows(server, "adm1", "totp-enrol")) == 1
    with server_archive(server) as archive:                 # stored hashed, never in clear
        from dsmpacs.archive.models import RecoveryCode

        with archive.index.read():
            stored = {r.code_hash for r in RecoveryCode.select()}
    assert not any(c in stored or c.replace("-", "") in stored for c in codes)


def test_sign_in_needs_a_fresh_code_and_refuses_wrong_and_replayed_ones(server):
    password = add_user(server, "adm2", "admin")
    _web, secret, codes = enrol(server, "adm2", password)

    web, location = password_step(server, "adm2", password)
    assert location.startswith("/login/totp")
    assert web.get("/studies", allow_redirects=False).status_code == 302     # not yet in
    web.get(location)
    good = code_at(secret, 1)            # the enrolment used this step; the next is fresh
    wrong = str((int(good) + 1) % 1000000).zfill(6)
    assert web.post_form("/login/totp", {"code": wrong}).status_code == 401
    assert web.post_form("/login/totp", {"code": good, "next": "/admin/users"}).headers["Location"] == "/admin/users"
    assert web.get("/admin/users", allow_redirects=False).status_code == 200

    thief, _ = password_step(server, "adm2", password)       # someone who saw that code
    thief.get("/login/totp")
    replayed = thief.post_form("/login/totp", {"code": good})
    assert replayed.status_code == 401 and "already used" in replayed.text
    assert thief.get("/admin/users", allow_redirects=False).status_code == 302
    failures = [r.detail for r in audit_rows(server, "adm2", "totp-failed")]
    assert any("wrong code" in d for d in failures) and any("code already used" in d for d in failures)

    # A recovery code signs in once.
    assert thief.post_form("/login/totp", {"code": codes[0].lower()}).status_code == 302
    again, _ = password_step(server, "adm2", password)
    again.get("/login/totp")
    assert again.post_form("/login/totp", {"code": codes[0]}).status_code == 401
    assert again.post_form("/login/totp", {"code": codes[1]}).status_code == 302
    assert re.search(r'data-totp-state="on">On\. 8 unused recovery codes', again.get("/account").text)


def test_cli_totp_reset_makes_the_user_enrol_again(server):
    from dsmpacs.cli import main

    password = add_user(server, "adm3", "admin")
    web, _secret, _codes = enrol(server, "adm3", password)
    assert web.get("/admin/users", allow_redirects=False).status_code == 200
    result = CliRunner().invoke(main, ["--data-dir", str(server.data_dir), *_cli_sets(server),
                                       "user", "totp-reset", "adm3"])
    assert result.exit_code == 0, result.output
    assert "reset" in result.output
    assert web.get("/admin/users", allow_redirects=False).status_code != 200      # signed out
    _web, location = password_step(server, "adm3", password)
    assert location.startswith("/account/totp")
    with server_archive(server) as archive:
        resets = AuditTrail(archive.index).recent(action="totp-reset", limit=100)
    assert any(r.actor.startswith("cli") and r.detail.startswith("adm3") for r in resets)


def _cli_sets(server) -> list[str]:
    return ["--set", f"database_url={server.sets['database_url']}"]


# --- re-authentication before dangerous actions ---------------------------------------
@pytest.fixture(scope="module")
def quick_reauth_server(tmp_path_factory, module_database_url):
    """Password-only admins; a re-authentication lasts three seconds: short, yet longer
    than the few requests a test makes inside it take on a loaded machine (at 1.2 s
    a role change right after confirming once found the window already over)."""
    proc = ServerProcess(tmp_path_factory.mktemp("reauth") / "server",
                         {"database_url": module_database_url, "web_reauth_minutes": 0.05},
                         only="web").start()
    yield proc
    proc.stop()


def wait_reauth_expired(server, username: str) -> None:
    from dsmpacs.archive.models import User

    with server_archive(server) as archive, archive.index.read():
        until = (WebSession.select().join(User).where(User.username == username)
                 .order_by(WebSession.id.desc()).first().reauth_until)
    wait_until(lambda: utcnow() > until, timeout=10, what="the re-authentication to lapse")


@pytest.mark.slow
def test_user_changes_and_deletion_need_a_fresh_password(quick_reauth_server):
    server = quick_reauth_server
    password = add_user(server, "boss9", "admin")
    web = Browser(server)
    web.login("boss9", password)
    wait_reauth_expired(server, "boss9")
    web.get("/admin/users")
    asked = web.post_form("/admin/users", {"username": "new1", "role": "viewer",
                                          "password": "a long password 1"})
    assert asked.status_code == 403 and "data-reauth" in asked.text
    with server_archive(server) as archive:
        assert Users(archive.index).by_name("new1") is None
    # The confirmation page carries the form along; a wrong password is refused and audited.
    carried = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', asked.text))
    assert carried["username"] == "new1" and carried["reauth_target"] == "/admin/users"
    refused = web.post_form("/reauth", {**carried, "reauth_password": "not my password"})
    assert refused.status_code == 401
    assert any("re-authentication" in r.detail for r in audit_rows(server, "boss9", "login-failed"))
    confirmed = web.post_form("/reauth", {**carried, "reauth_password": password})
    assert confirmed.status_code == 307 and confirmed.headers["Location"] == "/admin/users"
    done = web.post(confirmed.headers["Location"], data={**carried, "reauth_password": password,
                                                         "csrf_token": web.csrf_token})
    assert done.status_code == 200
    with server_archive(server) as archive:
        assert Users(archive.index).by_name("new1") is not None
    # Within the window no second confirmation ... and after it, one again.
    assert web.post_form("/admin/users/new1/role", {"role": "radiologist"}).status_code == 302
    wait_reauth_expired(server, "boss9")
    for path, form in (("/admin/users/new1/remove", {}), ("/admin/users/new1/tokens", {"label": "x"}),
                       ("/admin/users/new1/state", {"disabled": "1"}),
                       ("/studies/1.2.3.4/delete", {"confirm": "yes"})):
        web.get("/admin/users")
        response = web.post_form(path, form)
        assert response.status_code == 403 and "data-reauth" in response.text, path


def test_adding_a_phone_to_an_account_needs_a_fresh_password(quick_reauth_server):
    server = quick_reauth_server
    password = add_user(server, "rad9", "radiologist")
    web = Browser(server)
    web.login("rad9", password)
    wait_reauth_expired(server, "rad9")
    asked = web.get("/account/totp")
    assert asked.status_code == 403 and "data-reauth" in asked.text and "data-totp-secret" not in asked.text
    confirmed = web.post_form("/reauth", {"reauth_target": "/account/totp", "reauth_method": "GET",
                                          "reauth_password": password})
    assert confirmed.status_code == 303 and confirmed.headers["Location"] == "/account/totp"
    assert SECRET_RE.search(web.get("/account/totp").text)
