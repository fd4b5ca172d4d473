"""People who use the archive through the web: accounts, roles, passwords, API tokens.

Passwords are hashed with scrypt (memory-hard, in the standard library, no
native dependency to bundle). The parameters are part of the stored string,
so they can be raised later: ``authenticate`` rehashes a password whose
parameters are older than the current ones.

API tokens are 256-bit random strings. Only their SHA-256 is stored: a token
has far more entropy than a password, so a slow hash would add cost without
adding safety, and a fast one lets every DICOMweb request be checked cheaply.

No protocol lives here: the web layer turns these results into sessions and
HTTP statuses, the CLI into messages.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

import peewee

from dsmpacs.archive.database import statement
from dsmpacs.archive.index import Index
from dsmpacs.archive.models import ApiToken, User, utcnow


class Role(str, Enum):
    ADMIN = "admin"
    RADIOLOGIST = "radiologist"
    VIEWER = "viewer"
    AUDITOR = "auditor"    # reads the audit trail, nothing else (no patient data)


class Permission(Enum):
    VIEW = "view"          # search, open studies, view images, DICOMweb read
    EXPORT = "export"      # download (ZIP, WADO of whole studies), STOW upload
    SEND = "send"          # push to a remote AE
    DELETE = "delete"      # remove studies from the archive
    ADMIN = "admin"        # users, remote AEs, policy
    AUDIT = "audit"        # read and verify the audit trail


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.RADIOLOGIST: frozenset({Permission.VIEW, Permission.EXPORT, Permission.SEND}),
    Role.VIEWER: frozenset({Permission.VIEW}),
    Role.AUDITOR: frozenset({Permission.AUDIT}),
}

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024       # scrypt takes any length; this bounds the work per attempt
TOKEN_PREFIX = "dsm_"
_USERNAME_RE = re.compile(r"^[\w.@+-]{1,64}$")

# scrypt with N=2^15, r=8, p=1 takes 32 MiB and roughly 0.1 s on a NAS-class CPU.
_SCRYPT_N_LOG2, _SCRYPT_R, _SCRYPT_P = 15, 8, 1
_SCRYPT_MAXMEM = 64 * 2**20


class UserError(ValueError):
    """An account operation cannot be done (invalid input, unknown user, last admin).
    ``code`` names the problem and ``params`` its values, for a user interface's own words."""

    def __init__(self, message: str, code: str = "invalid", **params):
        super().__init__(message)
        self.code, self.params = code, params


@dataclass(frozen=True)
class Account:
    """An account as the rest of the program sees it (never the hash)."""
    id: int
    username: str
    role: Role
    disabled: bool
    epoch: int
    created_at: datetime
    last_login_at: datetime | None

    @property
    def permissions(self) -> frozenset[Permission]:
        return ROLE_PERMISSIONS[self.role]

    def can(self, permission: Permission) -> bool:
        return not self.disabled and permission in self.permissions

    @property
    def is_admin(self) -> bool:
        return self.can(Permission.ADMIN)

    @classmethod
    def from_row(cls, row: User) -> "Account":
        return cls(row.id, row.username, Role(row.role), bool(row.disabled), row.epoch,
                   row.created_at, row.last_login_at)


@dataclass(frozen=True)
class TokenInfo:
    id: int
    username: str
    label: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None


# --- passwords ----------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=2**_SCRYPT_N_LOG2, r=_SCRYPT_R,
                            p=_SCRYPT_P, maxmem=_SCRYPT_MAXMEM, dklen=32)
    return f"scrypt${_SCRYPT_N_LOG2}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, n_log2, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(password.encode("utf-8"), salt=_unb64(salt), n=2**int(n_log2),
                                r=int(r), p=int(p), maxmem=_SCRYPT_MAXMEM, dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def needs_rehash(encoded: str) -> bool:
    return not encoded.startswith(f"scrypt${_SCRYPT_N_LOG2}${_SCRYPT_R}${_SCRYPT_P}$")


# Verified against when the user does not exist, so an unknown name takes as
# long to refuse as a wrong password (no user enumeration by timing).
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def generate_password() -> str:
    """A password for a new account or a reset: 16 characters, about 95 bits."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
    return "".join(secrets.choice(alphabet) for _ in range(16))


def check_password_quality(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters", "password_short",
                        value=MIN_PASSWORD_LENGTH)
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserError(f"the password must have at most {MAX_PASSWORD_LENGTH} characters", "password_long",
                        value=MAX_PASSWORD_LENGTH)


def username_key(username: str) -> str:
    return unicodedata.normalize("NFKC", username).strip().casefold()


def check_username(username: str) -> str:
    name = unicodedata.normalize("NFKC", username).strip()
    if not _USERNAME_RE.match(name):
        raise UserError("a user name has 1-64 letters, digits or . _ - @ + (no spaces or colons)", "username")
    return name


def _join(row: User, institution: int | None) -> None:
    # Every user belongs somewhere (archive/visibility.py): the default institution
    # unless the caller named one, with the membership role nearest their global role.
    from dsmpacs.archive.models import DEFAULT_INSTITUTION_ID, Institution, Membership
    from dsmpacs.archive.visibility import membership_role_for

    if institution is not None and Institution.get_or_none(Institution.id == institution) is None:
        # Never fall back to the default institution: it may hold every older study.
        raise UserError(f"no institution {institution}", "invalid")
    Membership.create(user=row.id, institution=institution or DEFAULT_INSTITUTION_ID,
                      role=membership_role_for(row.role))


def _role(value: str | Role) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise UserError(f"unknown role {value!r}; one of {', '.join(r.value for r in Role)}", "role",
                        value=value) from None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Users:
    def __init__(self, index: Index):
        self.index = index

    # --- look-ups --------------------------------------------------------------
    def list(self) -> list[Account]:
        with self.index.read():
            return [Account.from_row(r) for r in User.select().order_by(User.username_key)]

    def get(self, user_id: int) -> Account | None:
        """The account by id: every request with a remembered credential asks this (is it
        still enabled, same epoch?), so the query is a prepared text (database.statement)."""
        sql = statement(self.index.db, "users.get", lambda q, p: (
            f"SELECT {q('id')}, {q('username')}, {q('role')}, {q('disabled')}, {q('epoch')}, "
            f"{q('created_at')}, {q('last_login_at')} FROM {q('user')} WHERE {q('id')} = {p}"))
        with self.index.read():
            row = self.index.db.execute_sql(sql, [int(user_id)]).fetchone()
        if row is None:
            return None
        return Account(row[0], row[1], Role(row[2]), bool(row[3]), row[4],
                       User.created_at.python_value(row[5]), User.last_login_at.python_value(row[6]))

    def by_name(self, username: str) -> Account | None:
        with self.index.read():
            row = User.get_or_none(User.username_key == username_key(username))
        return Account.from_row(row) if row else None

    def _row(self, username: str) -> User:
        row = User.get_or_none(User.username_key == username_key(username))
        if row is None:
            raise UserError(f"no user named {username!r}", "unknown", value=username)
        return row

    def admin_exists(self) -> bool:
        with self.index.read():
            return User.select().where((User.role == Role.ADMIN.value) & (~User.disabled)).exists()

    # --- changes -----------------------------------------------------------------
    def add(self, username: str, password: str, role: Role | str, institution: int | None = None) -> Account:
        """``institution``: the one the new user joins (default: the default institution)."""
        name = check_username(username)
        check_password_quality(password)
        role = _role(role)
        encoded = hash_password(password)
        try:
            with self.index.write():
                row = User.create(username=name, username_key=username_key(name),
                                  password_hash=encoded, role=role.value)
                _join(row, institution)
        except peewee.IntegrityError:
            raise UserError(f"a user named {name!r} already exists", "exists", value=name) from None
        return Account.from_row(row)

    def add_hashed(self, username: str, encoded: str, role: Role | str) -> Account:
        """Add an account whose password was hashed elsewhere (the DSM install wizard
        hands over a hash, never the password)."""
        name = check_username(username)
        if not encoded.startswith("scrypt$"):
            raise UserError("not a password hash this archive can check", "hash")
        try:
            with self.index.write():
                row = User.create(username=name, username_key=username_key(name),
                                  password_hash=encoded, role=_role(role).value)
                _join(row, None)
        except peewee.IntegrityError:
            raise UserError(f"a user named {name!r} already exists", "exists", value=name) from None
        return Account.from_row(row)

    def set_password(self, username: str, password: str) -> Account:
        check_password_quality(password)
        encoded = hash_password(password)
        with self.index.write():
            row = self._row(username)
            User.update(password_hash=encoded, epoch=User.epoch + 1, updated_at=utcnow()
                        ).where(User.id == row.id).execute()
            return Account.from_row(User.get_by_id(row.id))

    def set_role(self, username: str, role: Role | str) -> Account:
        role = _role(role)
        with self.index.write():
            row = self._row(username)
            if role is not Role.ADMIN:
                self._keep_an_admin(row, "take the admin role from")
            # A new epoch ends the account's sessions: the new role applies from a fresh sign-in.
            User.update(role=role.value, epoch=User.epoch + 1, updated_at=utcnow()
                        ).where(User.id == row.id).execute()
            return Account.from_row(User.get_by_id(row.id))

    def set_disabled(self, username: str, disabled: bool) -> Account:
        with self.index.write():
            row = self._row(username)
            if disabled:
                self._keep_an_admin(row, "disable")
                User.update(disabled=True, epoch=User.epoch + 1, updated_at=utcnow()
                            ).where(User.id == row.id).execute()
            else:
                User.update(disabled=False, updated_at=utcnow()).where(User.id == row.id).execute()
            return Account.from_row(User.get_by_id(row.id))

    def remove(self, username: str) -> None:
        with self.index.write():
            row = self._row(username)
            self._keep_an_admin(row, "remove")
            ApiToken.delete().where(ApiToken.user == row.id).execute()
            row.delete_instance()

    @staticmethod
    def _keep_an_admin(row: User, verb: str) -> None:
        """Refuse a change that would leave no enabled administrator (nobody could
        manage the archive from the UI any more)."""
        if row.role != Role.ADMIN.value or row.disabled:
            return
        others = User.select().where((User.role == Role.ADMIN.value) & (~User.disabled)
                                     & (User.id != row.id)).count()
        if others == 0:
            raise UserError(f"cannot {verb} {row.username!r}: it is the only enabled administrator", "last_admin",
                            value=row.username)

    def ensure_admin(self, username: str = "admin") -> tuple[Account, str] | None:
        """Create an administrator with a generated password when none is enabled.
        Returns the account and the password (to be shown once), or None."""
        if self.admin_exists():
            return None
        password = generate_password()
        existing = self.by_name(username)
        if existing is None:
            return self.add(username, password, Role.ADMIN), password
        # An account of that name exists but is not an enabled admin: promote and reset it.
        with self.index.write():
            User.update(role=Role.ADMIN.value, disabled=False, password_hash=hash_password(password),
                        epoch=User.epoch + 1, updated_at=utcnow()).where(User.id == existing.id).execute()
        return self.get(existing.id), password

    # --- authentication ------------------------------------------------------------
    def authenticate(self, username: str, password: str) -> Account | None:
        """The account when the password is right and the account enabled, else None."""
        if len(password) > MAX_PASSWORD_LENGTH:
            return None
        with self.index.read():
            row = User.get_or_none(User.username_key == username_key(username))
        if row is None:
            verify_password(password, _DUMMY_HASH)
            return None
        if not verify_password(password, row.password_hash) or row.disabled:
            return None
        changes = {User.last_login_at: utcnow()}
        if needs_rehash(row.password_hash):
            changes[User.password_hash] = hash_password(password)
        with self.index.write():
            User.update(changes).where(User.id == row.id).execute()
            return Account.from_row(User.get_by_id(row.id))

    # --- API tokens ----------------------------------------------------------------
    def create_token(self, username: str, label: str = "") -> tuple[TokenInfo, str]:
        """A new token; the secret is returned once and never stored."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        label = label.strip()[:64]
        with self.index.write():
            row = self._row(username)
            token = ApiToken.create(user=row.id, label=label, token_hash=hash_token(secret),
                                    prefix=secret[:10])
        return TokenInfo(token.id, row.username, label, token.prefix, token.created_at, None), secret

    def tokens(self, username: str | None = None) -> list[TokenInfo]:
        with self.index.read():
            query = (ApiToken.select(ApiToken, User).join(User).order_by(User.username_key, ApiToken.id))
            if username is not None:
                query = query.where(User.username_key == username_key(username))
            return [TokenInfo(t.id, t.user.username, t.label, t.prefix, t.created_at, t.last_used_at)
                    for t in query]

    def revoke_token(self, token_id: int, username: str | None = None) -> bool:
        """Delete a token (only if it belongs to ``username``, when given)."""
        with self.index.write():
            query = ApiToken.delete().where(ApiToken.id == token_id)
            if username is not None:
                query = query.where(ApiToken.user.in_(
                    User.select(User.id).where(User.username_key == username_key(username))))
            return query.execute() > 0

    def authenticate_token(self, secret: str) -> Account | None:
        if not secret.startswith(TOKEN_PREFIX) or len(secret) > 128:
            return None
        with self.index.read():
            token = (ApiToken.select(ApiToken, User).join(User)
                     .where(ApiToken.token_hash == hash_token(secret)).first())
        if token is None or token.user.disabled:
            return None
        now = utcnow()
        # Record use at most every few minutes: not one write per DICOMweb request.
        if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=5):
            with self.index.write():
                ApiToken.update(last_used_at=now).where(ApiToken.id == token.id).execute()
        return Account.from_row(token.user)
