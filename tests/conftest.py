"""Shared fixtures: real databases, real server processes, real dcmtk peers.

On a developer's machine without MariaDB or dcmtk the tests that need them
skip with the reason shown. In CI (CI=true) every skip is a failure instead,
whatever raised it: the two hooks at the end of this file own that rule.
"""
from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

from dsmpacs.settings import Settings
from tests.browser import browser, page, playwright  # noqa: F401  (fixtures for UI tests)
from tests.peers import MARIADB, mariadb_connection, require

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def mariadb_admin():
    try:
        conn = mariadb_connection()
    except Exception as exc:  # pymysql raises several kinds
        require(False, f"MariaDB at {MARIADB['host']}:{MARIADB['port']} unreachable: {exc}")
    yield conn
    conn.close()


def _fresh_mariadb(admin):
    """A fresh, uniquely named MariaDB database (its URL), dropped afterwards."""
    name = f"dsmpacs_t_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
    yield f"mysql://{MARIADB['user']}@{MARIADB['host']}:{MARIADB['port']}/{name}"
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def mariadb_url(mariadb_admin):
    yield from _fresh_mariadb(mariadb_admin)


@pytest.fixture(scope="module")
def module_mariadb_url(mariadb_admin):
    """One database for a module whose tests share a server."""
    yield from _fresh_mariadb(mariadb_admin)


DATABASES = ["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)]


@pytest.fixture(params=DATABASES)
def database_url(request, tmp_path):
    """Every index test runs against SQLite and against the real MariaDB server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'index.sqlite3'}"
    return request.getfixturevalue("mariadb_url")


@pytest.fixture(scope="module", params=DATABASES)
def module_database_url(request, tmp_path_factory):
    """database_url for module-scoped servers."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('index') / 'index.sqlite3'}"
    return request.getfixturevalue("module_mariadb_url")


@pytest.fixture
def settings(tmp_path, database_url) -> Settings:
    return Settings.load(data_dir=tmp_path / "data", env={}, overrides={
        "database_url": database_url, "dicom_host": "127.0.0.1", "dicom_port": 0,
        "min_free_mb": 0, "log_level": "DEBUG",
        # Password-only admins unless a test asks for TOTP (tests/test_web_totp.py), and
        # dcmtk's storescu stores without being registered first, unless a test is about
        # that (tests/test_strict_defaults.py, tests/test_access_policy.py).
        "require_totp_roles": "", "unknown_ae_may_store": True,
        # One DICOM process: a server started in the test process has no receiving
        # processes (tests/test_receivers.py and every `serve` test have them).
        "dicom_processes": 1})


@pytest.fixture
def archive(settings):
    from dsmpacs.archive import Archive

    arc = Archive(settings)
    arc.open(upgrade=True)
    yield arc
    arc.close()


@pytest.fixture
def web_app(settings, archive):
    """The Flask app over the in-process archive (unit-level view tests)."""
    from dsmpacs.web.app import create_app

    app = create_app(settings, archive)
    app.testing = True
    return app


@pytest.fixture
def client(web_app):
    return web_app.test_client()


@pytest.fixture
def server_factory(tmp_path):
    """Start ``dsmpacs serve`` as a real process; stopped at teardown."""
    from tests.peers import ServerProcess

    started: list[ServerProcess] = []

    def start(data_dir: Path | None = None, only: str | None = None, **sets) -> ServerProcess:
        proc = ServerProcess(data_dir or tmp_path / "server", sets, only=only)
        proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def server(server_factory, database_url):
    return server_factory(database_url=database_url)


@pytest.fixture
def socket_pair():
    """Two connected sockets (``socket.socketpair``), closed at teardown."""
    ours, peer = socket.socketpair()
    yield ours, peer
    ours.close()
    peer.close()


def pytest_report_header(config):
    return [f"CI={os.environ.get('CI', '')} (in CI a skip is a failure)"]


def pytest_configure(config):
    # The test process is a composition root too: servers and clients built in
    # process speak DICOM through the same engine as the product's processes.
    from dsmpacs.app import install_engine

    install_engine()


@pytest.hookimpl(optionalhook=True)      # a run without xdist (-p no:xdist) knows no such hook
def pytest_xdist_make_scheduler(config, log):
    # Module by module, with tests/dsm as one unit beside the rest: tests/scheduling.py.
    from tests.scheduling import make_scheduler

    return make_scheduler(config, log)


# --- in CI a skip is a failure ----------------------------------------------------
# A skipped test in CI is a peer that CI forgot to install, and a green run that
# checked less than it says. Converting the reports here catches every source at
# once: pytest.skip anywhere, skip/skipif marks, importorskip, fixtures that skip
# (tests.peers.require) and module-level skips at collection. xfail is not a skip.

def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:     # (path, line, "Skipped: why")
        return f"{longrepr[2]} ({longrepr[0]}:{longrepr[1]})"
    return str(longrepr)


def _fail_skip(report) -> None:
    report.longrepr = f"skipped in CI, which counts as a failure (CI=true): {_skip_reason(report)}"
    report.outcome = "failed"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.skipped and not hasattr(report, "wasxfail") and _in_ci():
        _fail_skip(report)
    return report


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_make_collect_report(collector):
    report = yield
    if report.skipped and _in_ci():
        _fail_skip(report)
    return report
