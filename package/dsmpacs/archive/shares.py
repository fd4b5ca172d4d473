"""Share links: one study opened read-only by someone without an account.

A link carries a 256-bit random token; only its SHA-256 is stored (like API
tokens in archive/users.py: the token has far more entropy than a password, so
a fast hash loses nothing and every request can be checked cheaply). An
optional access code, told to the recipient by another channel, is hashed with
scrypt like a password. A link ends at its expiry (at most MAX_DAYS after it was
made) or when revoked; the row stays for the record.

No HTTP here: web/shares/ and web/share_session.py turn the results into pages,
sessions, rate limiting and audit rows.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from dsmpacs.archive.index import Index
from dsmpacs.archive.models import Study, StudyShare, utcnow
from dsmpacs.archive.uids import is_valid_uid
from dsmpacs.archive.users import MAX_PASSWORD_LENGTH, hash_password, hash_token, verify_password

MAX_DAYS = 30
DEFAULT_DAYS = 7
MIN_CODE_LENGTH = 4
TOKEN_BYTES = 32          # 256 bits


class ShareError(ValueError):
    """A share that cannot be made as asked; ``code`` names the problem."""

    def __init__(self, message: str, code: str = "invalid", **params):
        super().__init__(message)
        self.code, self.params = code, params


class State(str, Enum):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True)
class Share:
    id: int
    study_instance_uid: str
    label: str
    has_code: bool
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_by: str
    uses: int
    last_used_at: datetime | None

    def state(self, now: datetime | None = None) -> State:
        if self.revoked_at is not None:
            return State.REVOKED
        if self.expires_at <= (now or utcnow()):
            return State.EXPIRED
        return State.ACTIVE

    @property
    def principal(self) -> str:
        """The name audit rows and the viewer give whoever uses the link; the colon
        makes it one no account can have (archive/users.py), so it owns nothing of a user's."""
        return f"share:{self.id}"


def _share(row: StudyShare) -> Share:
    return Share(row.id, row.study_instance_uid, row.label, row.code_hash is not None, row.created_by,
                 row.created_at, row.expires_at, row.revoked_at, row.revoked_by, row.uses, row.last_used_at)


class Shares:
    def __init__(self, index: Index):
        self.index = index

    def create(self, study_instance_uid: str, *, created_by: str, days: float = DEFAULT_DAYS,
               code: str = "", label: str = "") -> tuple[Share, str]:
        """A new link; the token is returned once and never stored."""
        if not is_valid_uid(study_instance_uid):
            raise ShareError("not a valid Study Instance UID", "uid")
        if not 0 < days <= MAX_DAYS:
            raise ShareError(f"a share link lasts more than 0 and at most {MAX_DAYS} days", "days",
                             value=MAX_DAYS)
        code = code.strip()
        if code and not MIN_CODE_LENGTH <= len(code) <= MAX_PASSWORD_LENGTH:
            raise ShareError(f"an access code has at least {MIN_CODE_LENGTH} characters", "code",
                             value=MIN_CODE_LENGTH)
        token = secrets.token_urlsafe(TOKEN_BYTES)
        code_hash = hash_password(code) if code else None
        with self.index.write():
            if not Study.select().where(Study.study_instance_uid == study_instance_uid).exists():
                raise ShareError("no such study", "unknown")
            row = StudyShare.create(study_instance_uid=study_instance_uid, token_hash=hash_token(token),
                                    code_hash=code_hash, label=label.strip()[:128], created_by=created_by,
                                    expires_at=utcnow() + timedelta(days=days))
        return _share(row), token

    def get(self, share_id: int) -> Share | None:
        with self.index.read():
            row = StudyShare.get_or_none(StudyShare.id == share_id)
        return _share(row) if row else None

    def by_token(self, token: str) -> Share | None:
        """The share of a link, whatever its state (the caller tells expired from unknown)."""
        if not token or len(token) > 128:
            return None
        with self.index.read():
            row = StudyShare.get_or_none(StudyShare.token_hash == hash_token(token))
        return _share(row) if row else None

    def check_code(self, share_id: int, code: str) -> bool:
        """True when the share needs no code or ``code`` is its code."""
        with self.index.read():
            row = StudyShare.get_or_none(StudyShare.id == share_id)
        if row is None:
            return False
        if row.code_hash is None:
            return True
        return len(code) <= MAX_PASSWORD_LENGTH and verify_password(code, row.code_hash)

    def record_use(self, share_id: int) -> None:
        with self.index.write():
            StudyShare.update(uses=StudyShare.uses + 1, last_used_at=utcnow()).where(
                StudyShare.id == share_id).execute()

    def revoke(self, share_id: int, *, by: str, study_instance_uid: str | None = None) -> Share | None:
        """End a link now (only one of ``study_instance_uid``, when given); None if unknown."""
        with self.index.write():
            query = StudyShare.update(revoked_at=utcnow(), revoked_by=by).where(
                StudyShare.id == share_id, StudyShare.revoked_at.is_null(True))
            if study_instance_uid is not None:
                query = query.where(StudyShare.study_instance_uid == study_instance_uid)
            query.execute()
        share = self.get(share_id)
        if share is None or (study_instance_uid is not None and share.study_instance_uid != study_instance_uid):
            return None
        return share

    def for_study(self, study_instance_uid: str) -> list[Share]:
        """Every link of the study, newest first, ended ones included."""
        with self.index.read():
            rows = (StudyShare.select().where(StudyShare.study_instance_uid == study_instance_uid)
                    .order_by(StudyShare.id.desc()))
            return [_share(r) for r in rows]
