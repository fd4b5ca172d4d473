"""Study grants: access to one study for one user beyond their institutions.

Institutions decide what a user sees by default (archive/visibility.py, where
present); a grant adds single studies: a reading assignment gives the assignee
the study (and, if its rule says so, the patient's prior studies for comparison)
until the report is final plus a grace period. A grant ends when it expires or is
revoked; revoked rows stay, so the audit trail and the record agree on who could
see what and when. Nothing here audits or speaks HTTP: callers (the reading
worklist, the admin pages) write the audit rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from dsmpacs.archive.database import statement
from dsmpacs.archive.index import Index
from dsmpacs.archive.models import StudyGrant, utcnow
from dsmpacs.archive.uids import is_valid_uid

REASONS = ("assignment", "prior", "manual")


class GrantError(ValueError):
    """A grant that cannot be recorded as asked (the message says why)."""


@dataclass(frozen=True)
class Grant:
    id: int
    username: str
    study_instance_uid: str
    reason: str
    source: str
    granted_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime

    def active(self, now: datetime | None = None) -> bool:
        now = now or utcnow()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


def _grant(row: StudyGrant) -> Grant:
    return Grant(row.id, row.username, row.study_instance_uid, row.reason, row.source, row.granted_by,
                 row.expires_at, row.revoked_at, row.created_at)


class Grants:
    def __init__(self, index: Index):
        self.index = index

    def grant(self, username: str, study_instance_uid: str, *, reason: str, source: str = "",
              granted_by: str = "", expires_at: datetime | None = None) -> Grant:
        """Give ``username`` the study. An active grant with the same reason and source
        is extended (its expiry becomes the later one, or None), not duplicated."""
        if reason not in REASONS:
            raise GrantError(f"unknown grant reason {reason!r} (one of {', '.join(REASONS)})")
        if not username or not is_valid_uid(study_instance_uid):
            raise GrantError("a grant needs a user name and a valid Study Instance UID")
        now = utcnow()
        with self.index.write():
            existing = (StudyGrant.select()
                        .where(StudyGrant.username == username,
                               StudyGrant.study_instance_uid == study_instance_uid,
                               StudyGrant.reason == reason, StudyGrant.source == source,
                               StudyGrant.revoked_at.is_null(True))
                        .first())
            if existing is not None and (existing.expires_at is None or existing.expires_at > now):
                if existing.expires_at is not None and (expires_at is None or expires_at > existing.expires_at):
                    existing.expires_at = expires_at
                    existing.save()
                return _grant(existing)
            row = StudyGrant.create(username=username, study_instance_uid=study_instance_uid, reason=reason,
                                    source=source, granted_by=granted_by, expires_at=expires_at)
            return _grant(row)

    def revoke(self, *, source: str, username: str | None = None, reason: str | None = None) -> int:
        """End the active grants from ``source`` (for one user, one reason); how many."""
        query = StudyGrant.update(revoked_at=utcnow()).where(StudyGrant.source == source,
                                                              StudyGrant.revoked_at.is_null(True))
        if username is not None:
            query = query.where(StudyGrant.username == username)
        if reason is not None:
            query = query.where(StudyGrant.reason == reason)
        with self.index.write():
            return query.execute()

    def expire(self, *, source: str, at: datetime) -> int:
        """Set the end of the active grants from ``source`` (a report final: grace period)."""
        with self.index.write():
            return (StudyGrant.update(expires_at=at)
                    .where(StudyGrant.source == source, StudyGrant.revoked_at.is_null(True))
                    .execute())

    def studies_for(self, username: str, now: datetime | None = None) -> set[str]:
        """The Study Instance UIDs ``username`` holds an active grant for."""
        now = now or utcnow()
        # Asked on every web request of a user bound to institutions: a prepared text.
        sql = statement(self.index.db, "grants.studies_for", lambda q, p: (
            f"SELECT {q('study_instance_uid')} FROM {q('study_grant')} WHERE {q('username')} = {p} "
            f"AND {q('revoked_at')} IS NULL AND ({q('expires_at')} IS NULL OR {q('expires_at')} > {p})"))
        with self.index.read():
            rows = self.index.db.execute_sql(sql, [username, StudyGrant.expires_at.db_value(now)]).fetchall()
        return {row[0] for row in rows}

    def allows(self, username: str, study_instance_uid: str, now: datetime | None = None) -> bool:
        return study_instance_uid in self.studies_for(username, now)

    def for_study(self, study_instance_uid: str) -> list[Grant]:
        """Every grant of the study, revoked and expired ones included (for the record)."""
        with self.index.read():
            rows = (StudyGrant.select().where(StudyGrant.study_instance_uid == study_instance_uid)
                    .order_by(StudyGrant.id))
            return [_grant(r) for r in rows]
