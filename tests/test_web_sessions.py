"""Server-side web sessions over real HTTP against a real `dsmpacs serve`: a copied
cookie stops working after logout, a password or role change and a disable; the idle
timeout ends a session; users and admins end sessions. SQLite and MariaDB."""
from __future__ import annotations

import base64
import time

import pytest
import requests

from dsmpacs.archive import database
from dsmpacs.archive.models import RecoveryCode, SchemaVersion, TotpCredential, WebSession, utcnow
from tests.peers import ServerProcess, wait_until
from tests.webclient import WebSession as Browser
from tests.webclient import add_user, server_archive

ACCOUNT = "/account"


@pytest.fixture(scope="module")
def server(tmp_path_factory, module_database_url):
    """One web server per index kind; each test uses its own user names."""
    proc = ServerProcess(tmp_path_factory.mktemp("sessions") / "server",
                         {"database_url": module_database_url}, only="web").start()
    yield proc
    proc.stop()


def sessions_of(server, username: str) -> list[WebSession]:
    from dsmpacs.archive.models import User

    with server_archive(server) as archive, archive.index.read():
        return list(WebSession.select().join(User).where(User.username == username)
                    .order_by(WebSession.id))


def copy_of(web: Browser, server) -> Browser:
    """Another client holding the same cookies, as a thief who copied them would."""
    thief = Browser(server)
    thief.cookies.update(web.cookies)
    return thief


def signed_in(web: Browser) -> bool:
    return web.get(ACCOUNT, allow_redirects=False).status_code == 200


def test_the_cookie_holds_only_a_session_id(server):
    password = add_user(server, "cookie1", "radiologist")
    web = Browser(server)
    web.login("cookie1", password)
    cookie = web.cookies.get("dsmpacs_session")
    payload = cookie.split(".")[0]
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
    assert '"sid"' in decoded and "cookie1" not in decoded and '"uid"' not in decoded
    assert len(sessions_of(server, "cookie1")) == 1


def test_logout_and_password_change_kill_a_copied_cookie(server):
    password = add_user(server, "pw1", "radiologist")
    web = Browser(server)
    web.login("pw1", password)
    thief = copy_of(web, server)
    assert signed_in(thief)
    web.get(ACCOUNT)                                   # this session's CSRF token
    assert web.post_form("/logout", {}).status_code == 302
    assert not signed_in(thief) and not signed_in(web)

    web.login("pw1", password)
    thief = copy_of(web, server)
    other = Browser(server)
    other.login("pw1", password)
    web.get(ACCOUNT)
    changed = web.post_form(ACCOUNT, {"current_password": password, "new_password": "a new secret 42",
                                      "confirm_password": "a new secret 42"})
    assert changed.status_code == 302
    # The session that changed the password goes on; its copy is the same session, so
    # the copy would too: what must end are the other sessions.
    assert signed_in(web)
    assert not signed_in(other)
    assert web.post_form("/logout", {}).status_code == 302
    assert not signed_in(thief)


def test_role_change_and_disable_end_the_users_sessions(server):
    admin_password = add_user(server, "boss1", "admin")
    rad_password = add_user(server, "role1", "radiologist")
    admin = Browser(server)
    admin.login("boss1", admin_password)
    rad = Browser(server)
    rad.login("role1", rad_password)
    assert signed_in(rad)
    admin.get("/admin/users")
    assert admin.post_form("/admin/users/role1/role", {"role": "viewer"}).status_code == 302
    assert not signed_in(rad)

    rad.login("role1", rad_password)
    assert signed_in(rad)
    admin.get("/admin/users")
    assert admin.post_form("/admin/users/role1/state", {"disabled": "1"}).status_code == 302
    assert not signed_in(rad)
    assert signed_in(admin)


def test_users_see_and_end_their_other_sessions_and_admins_end_anyones(server):
    admin_password = add_user(server, "boss2", "admin")
    password = add_user(server, "ends1", "radiologist")
    laptop, phone = Browser(server), Browser(server)
    laptop.login("ends1", password)
    phone.login("ends1", password)
    phone.get(ACCOUNT)
    page = laptop.get(ACCOUNT).text
    assert page.count("data-session=") == 2
    ids = [row.id for row in sessions_of(server, "ends1")]
    assert laptop.post_form(f"/account/sessions/{ids[1]}/end", {}).status_code == 302
    assert not signed_in(phone) and signed_in(laptop)
    # Not someone else's session: the admin's is not rad1's to end.
    admin = Browser(server)
    admin.login("boss2", admin_password)
    boss_session = sessions_of(server, "boss2")[-1].id
    assert laptop.post_form(f"/account/sessions/{boss_session}/end", {}).status_code == 404
    assert signed_in(admin)

    users_page = admin.get("/admin/users").text
    assert 'data-user="ends1"' in users_page and 'data-sessions="1"' in users_page
    assert admin.post_form("/admin/users/ends1/sessions/end", {}).status_code == 302
    assert not signed_in(laptop) and signed_in(admin)


@pytest.mark.slow
def test_the_idle_timeout_ends_a_session(server_factory, database_url):
    idle = 3.0
    server = server_factory(database_url=database_url, web_idle_minutes=idle / 60)
    password = add_user(server, "rad1", "radiologist")
    web, abandoned = Browser(server), Browser(server)
    web.login("rad1", password)
    abandoned.login("rad1", password)
    # Activity keeps it alive well past one idle period ...
    started = time.monotonic()
    while time.monotonic() - started < 1.5 * idle:
        assert signed_in(web)
        time.sleep(idle / 4)
    # ... and after one idle period without a request it is gone.
    last_seen = max(s.last_seen_at for s in sessions_of(server, "rad1"))
    wait_until(lambda: (utcnow() - last_seen).total_seconds() > idle + 0.2, timeout=idle + 5,
               what="one idle period")
    assert not signed_in(web)
    assert len(sessions_of(server, "rad1")) == 1             # ended, not just refused
    # The abandoned one's row goes at the next sign-in.
    Browser(server).login("rad1", password)
    assert len(sessions_of(server, "rad1")) == 1
    assert not signed_in(abandoned)


def test_api_clients_are_not_affected(server):
    password = add_user(server, "api1", "radiologist")
    for _ in range(2):
        response = requests.get(server.url("/dicom-web/studies"), auth=("api1", password), timeout=10)
        assert response.status_code in (200, 204)
    assert sessions_of(server, "api1") == []


# --- the schema migration ----------------------------------------------------------
def test_an_index_of_version_2_is_upgraded(settings):
    """Drop what version 3 added, stamp version 2, and upgrade (later versions skip what exists)."""
    db = database.open_database(settings.database_url)
    database.bind(db)
    new_tables = (RecoveryCode, TotpCredential, WebSession)
    try:
        database.upgrade(db)
        with database.session(db):
            db.drop_tables(new_tables)
            SchemaVersion.delete().execute()
            SchemaVersion.create(version=2)
        assert database.current_version(db) == 2
        with pytest.raises(database.IndexOutdated):
            database.check(db)
        assert database.upgrade(db) == (2, database.LATEST_VERSION)
        with database.session(db):
            assert all(db.table_exists(m._meta.table_name) for m in new_tables)
            assert WebSession.select().count() == 0
        database.check(db)
    finally:
        db.close_all()
