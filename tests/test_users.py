"""Accounts, roles, password hashing and API tokens (archive/users.py), on SQLite and MariaDB."""
from __future__ import annotations

import pytest

from dsmpacs.archive.models import ApiToken, User
from dsmpacs.archive.users import (
    MIN_PASSWORD_LENGTH,
    Permission,
    Role,
    UserError,
    Users,
    hash_password,
    needs_rehash,
    verify_password,
)

PASSWORD = "a long enough pass"


@pytest.fixture
def users(archive) -> Users:
    return Users(archive.index)


def test_hash_is_salted_scrypt_and_verifies_only_the_right_password():
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first.startswith("scrypt$15$8$1$") and first != second   # salted
    assert PASSWORD not in first
    assert verify_password(PASSWORD, first) and verify_password(PASSWORD, second)
    assert not verify_password(PASSWORD + "x", first)
    assert not verify_password(PASSWORD, "garbage") and not verify_password(PASSWORD, "")
    assert not needs_rehash(first)
    assert needs_rehash("scrypt$14$8$1$c2FsdA$ZGlnZXN0")


def test_add_authenticate_and_role_permissions(users):
    rad = users.add("Rad1", PASSWORD, "radiologist")
    viewer = users.add("张医生", PASSWORD, Role.VIEWER)
    assert users.authenticate("rad1", PASSWORD).id == rad.id          # names are case-insensitive
    assert users.authenticate("Rad1", "wrong password!") is None
    assert users.authenticate("nobody", PASSWORD) is None
    assert users.authenticate("张医生", PASSWORD).id == viewer.id
    assert rad.can(Permission.SEND) and rad.can(Permission.EXPORT) and not rad.can(Permission.DELETE)
    assert viewer.can(Permission.VIEW) and not viewer.can(Permission.SEND)
    assert not viewer.can(Permission.EXPORT) and not viewer.can(Permission.ADMIN)
    assert users.by_name("RAD1").last_login_at is not None


def test_stored_hash_is_not_the_password(users, archive):
    users.add("rad1", PASSWORD, "radiologist")
    with archive.index.read():
        row = User.get(User.username == "rad1")
    assert PASSWORD not in row.password_hash and verify_password(PASSWORD, row.password_hash)


@pytest.mark.parametrize("name", ["", "has space", "colon:name", "x" * 65])
def test_invalid_user_names_are_refused(users, name):
    with pytest.raises(UserError):
        users.add(name, PASSWORD, "viewer")


def test_short_password_and_unknown_role_and_duplicate_are_refused(users):
    with pytest.raises(UserError, match=str(MIN_PASSWORD_LENGTH)):
        users.add("a", "short", "viewer")
    with pytest.raises(UserError, match="role"):
        users.add("a", PASSWORD, "superuser")
    users.add("Anna", PASSWORD, "viewer")
    with pytest.raises(UserError, match="exists"):
        users.add("anna", PASSWORD, "viewer")


def test_password_change_and_disable_bump_the_epoch(users):
    acc = users.add("rad1", PASSWORD, "radiologist")
    changed = users.set_password("rad1", "another long password")
    assert changed.epoch == acc.epoch + 1
    assert users.authenticate("rad1", PASSWORD) is None
    assert users.authenticate("rad1", "another long password") is not None
    disabled = users.set_disabled("rad1", True)
    assert disabled.disabled and disabled.epoch == changed.epoch + 1
    assert users.authenticate("rad1", "another long password") is None
    assert users.set_disabled("rad1", False).disabled is False


def test_the_last_enabled_admin_cannot_be_removed_demoted_or_disabled(users):
    users.add("root", PASSWORD, "admin")
    for action in (lambda: users.remove("root"), lambda: users.set_role("root", "viewer"),
                   lambda: users.set_disabled("root", True)):
        with pytest.raises(UserError, match="only enabled administrator"):
            action()
    users.add("second", PASSWORD, "admin")
    users.set_role("root", "viewer")          # now allowed: another admin remains
    assert users.by_name("root").role is Role.VIEWER


def test_ensure_admin_creates_once_and_returns_the_password_once(users):
    created = users.ensure_admin()
    assert created is not None
    account, password = created
    assert account.role is Role.ADMIN and len(password) >= MIN_PASSWORD_LENGTH
    assert users.authenticate("admin", password) is not None
    assert users.ensure_admin() is None


def test_ensure_admin_promotes_an_existing_account_of_that_name(users):
    users.add("admin", PASSWORD, "viewer")
    account, password = users.ensure_admin()
    assert account.role is Role.ADMIN and users.authenticate("admin", password) is not None
    assert users.authenticate("admin", PASSWORD) is None


def test_tokens_are_stored_hashed_and_authenticate_their_user(users, archive):
    rad = users.add("rad1", PASSWORD, "radiologist")
    info, secret = users.create_token("rad1", "OHIF")
    assert secret.startswith("dsm_") and len(secret) > 40 and info.prefix == secret[:10]
    with archive.index.read():
        stored = ApiToken.get_by_id(info.id)
    assert secret not in stored.token_hash and stored.token_hash != secret
    assert users.authenticate_token(secret).id == rad.id
    assert users.authenticate_token(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert users.authenticate_token("not a token") is None
    assert users.tokens("rad1")[0].last_used_at is not None
    users.set_disabled("rad1", True)
    assert users.authenticate_token(secret) is None
    users.set_disabled("rad1", False)
    assert users.revoke_token(info.id, username="someone else") is False
    assert users.revoke_token(info.id) is True
    assert users.authenticate_token(secret) is None


def test_removing_a_user_removes_their_tokens(users):
    users.add("rad1", PASSWORD, "radiologist")
    _, secret = users.create_token("rad1")
    users.remove("rad1")
    assert users.by_name("rad1") is None and users.tokens() == []
    assert users.authenticate_token(secret) is None
