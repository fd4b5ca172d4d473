"""`dsmpacs user ...` on SQLite and MariaDB."""
from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from dsmpacs.archive import Archive
from dsmpacs.archive.audit import AuditTrail
from dsmpacs.archive.users import Users
from dsmpacs.cli import main


@pytest.fixture
def run(settings):
    runner = CliRunner()
    base = ["--data-dir", str(settings.data_dir), "--set", f"database_url={settings.effective_database_url}"]

    def invoke(*args, input: str | None = None):
        return runner.invoke(main, [*base, *args], input=input, catch_exceptions=False)
    return invoke


class _Accounts:
    """Users over a freshly opened archive for each look-up: the CLI opens its own
    Archive in this process, and the index models bind to the newest one."""

    def __init__(self, settings):
        self.settings = settings
        self.archive: Archive | None = None

    def __getattr__(self, name):
        if self.archive is not None:
            self.archive.close()
        self.archive = Archive(self.settings)
        self.archive.open(upgrade=True)
        return getattr(Users(self.archive.index), name)


@pytest.fixture
def users(settings):
    accounts = _Accounts(settings)
    yield accounts
    if accounts.archive is not None:
        accounts.archive.close()


def test_ensure_admin_prints_a_password_once_and_stores_only_its_hash(run, users, settings):
    first = run("user", "ensure-admin")
    assert first.exit_code == 0
    password = re.search(r"Password \(shown only now\): (\S+)", first.output).group(1)
    assert users.authenticate("admin", password).is_admin
    again = run("user", "ensure-admin")
    assert again.exit_code == 0 and "nothing to do" in again.output and password not in again.output
    index_file = settings.data_dir / "index.sqlite3"
    if index_file.exists():
        assert password.encode() not in index_file.read_bytes()


def test_add_list_passwd_set_remove(run, users):
    added = run("user", "add", "rad1", "--role", "radiologist", "--password-stdin", input="first password\n")
    assert added.exit_code == 0, added.output
    assert users.authenticate("rad1", "first password") is not None
    listing = run("user", "list")
    assert re.search(r"^rad1\tradiologist\tenabled", listing.output, re.M)
    changed = run("user", "passwd", "rad1", "--generate")
    new_password = re.search(r"password: (\S+)", changed.output).group(1)
    assert users.authenticate("rad1", new_password) is not None
    assert users.authenticate("rad1", "first password") is None
    assert run("user", "set", "rad1", "--role", "viewer", "--disable").exit_code == 0
    account = users.by_name("rad1")
    assert account.role.value == "viewer" and account.disabled
    assert run("user", "remove", "rad1", "--yes").exit_code == 0
    assert users.by_name("rad1") is None
    actions = [e.action for e in AuditTrail(users.index).recent()]
    assert actions[:4] == ["user-remove", "user-change", "user-change", "password-change"]


def test_refusals_are_clear_errors(run, users):
    assert run("user", "add", "short", "--password-stdin", input="tiny\n").exit_code == 1
    run("user", "ensure-admin")
    refused = run("user", "remove", "admin", "--yes")
    assert refused.exit_code == 1 and "only enabled administrator" in refused.output
    assert run("user", "passwd", "ghost", "--generate").exit_code == 1


def test_tokens(run, users):
    run("user", "add", "rad1", "--password-stdin", input="first password\n")
    created = run("user", "token", "create", "rad1", "--label", "OHIF")
    secret = created.output.strip()
    assert users.authenticate_token(secret).username == "rad1"
    listing = run("user", "token", "list")
    token_id = int(listing.output.split("\t")[0])
    assert secret not in listing.output and "OHIF" in listing.output
    assert run("user", "token", "revoke", str(token_id)).exit_code == 0
    assert users.authenticate_token(secret) is None
