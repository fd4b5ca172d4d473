"""Login throttling without a lockout hole, over real HTTP against a real `dsmpacs serve`
behind a trusted proxy (X-Forwarded-For gives each request its client address):
back-off per (user, address) and per address, never per account alone; every
failure audited; a burst raises an alert on the admin pages. SQLite and MariaDB."""
from __future__ import annotations

import pytest

from dsmpacs.archive.audit import AuditTrail
from dsmpacs.archive.totp import SecondFactor
from dsmpacs.archive.users import Users
from dsmpacs.web.ratelimit import FIRST_WAIT, LoginThrottle
from tests.peers import ServerProcess
from tests.test_web_totp import code_at
from tests.webclient import WebSession as Browser
from tests.webclient import add_user, server_archive


@pytest.fixture(scope="module")
def server(tmp_path_factory, module_database_url):
    proc = ServerProcess(tmp_path_factory.mktemp("backoff") / "server", {
        "database_url": module_database_url, "web_trusted_proxy": "127.0.0.1",
        "require_totp_roles": "admin", "login_limit_per_user": 2, "login_limit_per_address": 4,
        "login_alert_per_minute": 20}, only="web").start()
    yield proc
    proc.stop()


def from_address(server, address: str) -> Browser:
    web = Browser(server)
    web.headers["X-Forwarded-For"] = address
    return web


def attempt(web: Browser, username: str, password: str):
    web.token_for("/login")
    return web.post_form("/login", {"username": username, "password": password, "next": "/admin/users"})


@pytest.mark.slow
def test_fifty_addresses_failing_for_admin_do_not_keep_the_real_admin_out(server):
    password = add_user(server, "admin", "admin")
    with server_archive(server) as archive:
        account = Users(archive.index).by_name("admin")
        factor = SecondFactor(archive.index)
        secret = factor.begin(account)
        assert factor.confirm(account, code_at(secret))
    for i in range(50):
        response = attempt(from_address(server, f"198.51.100.{i + 1}"), "admin", f"guess number {i}")
        assert response.status_code == 401, (i, response.status_code)

    real = from_address(server, "203.0.113.7")
    step = attempt(real, "admin", password)
    assert step.status_code == 302 and step.headers["Location"].startswith("/login/totp")
    real.get(step.headers["Location"])
    signed_in = real.post_form("/login/totp", {"code": code_at(secret, 1), "next": "/admin/users"})
    assert signed_in.status_code == 302 and signed_in.headers["Location"] == "/admin/users"
    page = real.get("/admin/users")
    assert page.status_code == 200 and "data-security-alert" in page.text

    with server_archive(server) as archive:
        trail = AuditTrail(archive.index)
        failed = trail.recent(actor="admin", action="login-failed", limit=100)
        assert len(failed) == 50
        assert {r.address for r in failed} == {f"198.51.100.{i + 1}" for i in range(50)}
        assert trail.count(action="security-alert") == 1
        assert trail.count(actor="admin", action="login") == 1


def test_back_off_is_per_name_and_address_and_per_address(server):
    password = add_user(server, "rad7", "radiologist")
    guesser = from_address(server, "192.0.2.10")
    for _ in range(2):                                                      # then back-off starts
        assert attempt(guesser, "rad7", "wrong password").status_code == 401
    throttled = attempt(guesser, "rad7", password)                          # even the right password
    assert throttled.status_code == 429 and 0 < int(throttled.headers["Retry-After"]) <= FIRST_WAIT + 1
    # Another address is not affected: the real user still signs in.
    assert attempt(from_address(server, "192.0.2.11"), "rad7", password).status_code == 302

    # An address guessing many names is slowed down for every name, and only there.
    sprayer = from_address(server, "192.0.2.20")
    for name in ("x1", "x2", "x3", "x4"):
        assert attempt(sprayer, name, "wrong password").status_code == 401
    assert attempt(sprayer, "rad7", password).status_code == 429
    assert attempt(from_address(server, "192.0.2.21"), "rad7", password).status_code == 302
    with server_archive(server) as archive:
        assert AuditTrail(archive.index).count(action="login-throttled") >= 2


def test_the_wait_doubles_per_failure_and_is_forgotten_after_a_quiet_window():
    now = [1000.0]
    throttle = LoginThrottle(2, 100, 600, max_wait=60, alert_per_minute=5, clock=lambda: now[0])
    waits = []
    for _ in range(6):
        throttle.failure("rad", "a")
        waits.append(throttle.retry_after("rad", "a"))
    assert waits == [0, FIRST_WAIT, 2 * FIRST_WAIT, 4 * FIRST_WAIT, 8 * FIRST_WAIT, 60]
    assert throttle.retry_after("rad", "b") == 0 and throttle.retry_after("other", "a") == 0
    now[0] += 600
    assert throttle.retry_after("rad", "a") == 0
    throttle.failure("rad", "a")
    assert throttle.retry_after("rad", "a") == 0          # starts afresh


def test_a_burst_is_reported_once_it_exceeds_the_rate():
    now = [0.0]
    throttle = LoginThrottle(5, 5, 600, alert_per_minute=3, clock=lambda: now[0])
    bursts = []
    for i in range(5):
        now[0] += 20            # 3 failures per minute: at the limit, not over it
        bursts.append(throttle.failure("u", f"a{i}"))
    assert bursts == [False] * 5
    now[0] += 1                 # a fourth within the minute: over it
    assert throttle.failure("u", "b") is True
