"""The audit trail: every view, export and deletion, every login and admin change.

Protocol layers call ``AuditTrail.record`` with the acting user's name, an
action from ``AuditAction`` (or a new value added there), the study concerned
when there is one, a short free-text detail and the client address. A failed
write raises (IndexUnavailable): an action that cannot be audited should not
silently happen.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from dsmpacs.archive.index import Index
from dsmpacs.archive.models import AuditEvent, utcnow


class AuditAction(str, Enum):
    LOGIN = "login"
    LOGIN_FAILED = "login-failed"
    LOGIN_THROTTLED = "login-throttled"
    LOGOUT = "logout"
    PASSWORD_CHANGE = "password-change"
    # reading and moving patient data
    VIEW = "view"
    EXPORT = "export"
    SEND = "send"
    DELETE = "delete"
    STORE = "store"
    # administration
    USER_ADD = "user-add"
    USER_CHANGE = "user-change"
    USER_REMOVE = "user-remove"
    TOKEN_CREATE = "token-create"
    TOKEN_REVOKE = "token-revoke"
    PEER_ADD = "peer-add"
    PEER_CHANGE = "peer-change"
    PEER_REMOVE = "peer-remove"
    PEER_ECHO = "peer-echo"
    SETTINGS_CHANGE = "settings-change"
    # sessions, second factor, re-authentication (archive/sessions.py, archive/totp.py)
    SESSION_END = "session-end"
    TOTP_ENROL = "totp-enrol"
    TOTP_RESET = "totp-reset"
    TOTP_FAILED = "totp-failed"
    REAUTH = "reauth"
    SECURITY_ALERT = "security-alert"


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    actor: str
    action: str
    outcome: str
    study_instance_uid: str
    detail: str
    address: str


class AuditTrail:
    def __init__(self, index: Index):
        self.index = index

    def record(self, actor: str, action: AuditAction | str, *, study_instance_uid: str = "",
               detail: str = "", address: str = "", outcome: str = "ok") -> None:
        action = action.value if isinstance(action, AuditAction) else str(action)
        with self.index.write():
            AuditEvent.create(at=utcnow(), actor=actor[:64], action=action[:32], outcome=outcome[:16],
                              study_instance_uid=study_instance_uid[:64], detail=detail[:1024],
                              address=address[:64])

    def _query(self, actor: str | None, action: str | None, study_instance_uid: str | None):
        query = AuditEvent.select()
        if actor:
            query = query.where(AuditEvent.actor == actor)
        if action:
            query = query.where(AuditEvent.action == action)
        if study_instance_uid:
            query = query.where(AuditEvent.study_instance_uid == study_instance_uid)
        return query

    def recent(self, *, limit: int = 50, offset: int = 0, actor: str | None = None,
               action: str | None = None, study_instance_uid: str | None = None) -> list[AuditEntry]:
        """Newest first."""
        with self.index.read():
            rows = (self._query(actor, action, study_instance_uid)
                    .order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit).offset(offset))
            return [AuditEntry(r.at, r.actor, r.action, r.outcome, r.study_instance_uid, r.detail,
                               r.address) for r in rows]

    def count(self, *, actor: str | None = None, action: str | None = None,
              study_instance_uid: str | None = None) -> int:
        with self.index.read():
            return self._query(actor, action, study_instance_uid).count()
