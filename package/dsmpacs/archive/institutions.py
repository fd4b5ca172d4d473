"""Keeping the institutions: create them, their members, the Institution Name
aliases senders use, the binding of DICOM peers, and moving a study between them.

What each user or peer then sees is decided in archive/visibility.py. Nothing here
audits or speaks HTTP: the admin pages (web/admin/institutions.py) write the audit
rows, the moving of a study included.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import peewee

from dsmpacs.archive.index import Index
from dsmpacs.archive.models import (
    DEFAULT_INSTITUTION_ID,
    Institution,
    InstitutionAlias,
    Membership,
    Order,
    ReadingTask,
    RemoteAE,
    Study,
    User,
    utcnow,
)
from dsmpacs.archive.visibility import MEMBERSHIP_ROLES, alias_key

_CODE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


class InstitutionError(ValueError):
    """An institution operation that cannot be done (``code`` names the problem)."""

    def __init__(self, message: str, code: str = "invalid"):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class InstitutionInfo:
    id: int
    code: str
    name: str
    studies: int = 0
    members: int = 0


@dataclass(frozen=True)
class Member:
    username: str
    institution_id: int
    institution_code: str
    role: str


class Institutions:
    def __init__(self, index: Index):
        self.index = index

    # --- institutions -----------------------------------------------------------
    def create(self, code: str, name: str) -> InstitutionInfo:
        code = (code or "").strip().lower()
        name = (name or "").strip()
        if not _CODE.match(code):
            raise InstitutionError("a code is 1-32 lowercase letters, digits, - or _", "code")
        if not name or len(name) > 128:
            raise InstitutionError("a name is 1-128 characters", "name")
        try:
            with self.index.write():
                row = Institution.create(code=code, name=name)
        except peewee.IntegrityError:
            raise InstitutionError(f"an institution with code {code!r} exists", "exists") from None
        return InstitutionInfo(row.id, row.code, row.name)

    def all(self) -> list[InstitutionInfo]:
        with self.index.read():
            studies = dict(Study.select(Study.institution, peewee.fn.COUNT(Study.id))
                           .group_by(Study.institution).tuples())
            members = dict(Membership.select(Membership.institution, peewee.fn.COUNT(Membership.id))
                           .group_by(Membership.institution).tuples())
            return [InstitutionInfo(r.id, r.code, r.name, studies.get(r.id, 0), members.get(r.id, 0))
                    for r in Institution.select().order_by(Institution.id)]

    def get(self, code_or_id: str | int) -> InstitutionInfo:
        with self.index.read():
            if isinstance(code_or_id, int) or str(code_or_id).isdigit():
                row = Institution.get_or_none(Institution.id == int(code_or_id))
            else:
                row = Institution.get_or_none(Institution.code == str(code_or_id).strip().lower())
        if row is None:
            raise InstitutionError(f"no institution {code_or_id!r}", "unknown")
        return InstitutionInfo(row.id, row.code, row.name)

    # --- members -----------------------------------------------------------------
    def add_member(self, username: str, institution: str | int, role: str) -> Member:
        if role not in MEMBERSHIP_ROLES:
            raise InstitutionError(f"role is one of {', '.join(MEMBERSHIP_ROLES)}", "role")
        inst = self.get(institution)
        with self.index.write():
            user = User.get_or_none(User.username == username)
            if user is None:
                raise InstitutionError(f"no user {username!r}", "user")
            row = Membership.get_or_none(Membership.user == user.id, Membership.institution == inst.id)
            if row is None:
                Membership.create(user=user.id, institution=inst.id, role=role)
            else:
                Membership.update(role=role).where(Membership.id == row.id).execute()
        return Member(username, inst.id, inst.code, role)

    def remove_member(self, username: str, institution: str | int) -> bool:
        inst = self.get(institution)
        with self.index.write():
            user = User.get_or_none(User.username == username)
            if user is None:
                return False
            return bool(Membership.delete().where(Membership.user == user.id,
                                                  Membership.institution == inst.id).execute())

    def members(self, institution: str | int | None = None) -> list[Member]:
        query = (Membership.select(User.username, Membership.institution, Institution.code, Membership.role)
                 .join(User).switch(Membership).join(Institution))
        if institution is not None:
            query = query.where(Membership.institution == self.get(institution).id)
        with self.index.read():
            return [Member(*row) for row in query.order_by(Institution.id, User.username).tuples()]

    def memberships_of(self, username: str) -> list[Member]:
        return [m for m in self.members() if m.username == username]

    # --- aliases and bindings ------------------------------------------------------
    def add_alias(self, name: str, institution: str | int) -> str:
        key = alias_key(name)
        if not key:
            raise InstitutionError("an alias needs an Institution Name", "name")
        inst = self.get(institution)
        with self.index.write():
            InstitutionAlias.delete().where(InstitutionAlias.name_key == key).execute()
            InstitutionAlias.create(name=name.strip()[:128], name_key=key, institution=inst.id)
        return key

    def by_alias(self, name: str) -> int | None:
        """The institution an Institution Name alias names (the same aliases as arriving
        studies', archive/visibility.py ``placement``); None when none does."""
        key = alias_key(name)
        if not key:
            return None
        with self.index.read():
            row = InstitutionAlias.get_or_none(InstitutionAlias.name_key == key)
        return row.institution_id if row is not None else None

    def remove_alias(self, name: str) -> bool:
        with self.index.write():
            return bool(InstitutionAlias.delete().where(InstitutionAlias.name_key == alias_key(name)).execute())

    def aliases(self) -> list[tuple[str, str]]:
        with self.index.read():
            return list(InstitutionAlias.select(InstitutionAlias.name, Institution.code)
                        .join(Institution).order_by(InstitutionAlias.name_key).tuples())

    def bind_ae(self, peer_name: str, institution: str | int | None) -> None:
        """Bind a registered peer (by its registry name) to an institution; None unbinds."""
        inst_id = None if institution in (None, "") else self.get(institution).id
        with self.index.write():
            changed = (RemoteAE.update(institution=inst_id, updated_at=utcnow())
                       .where(RemoteAE.name == peer_name).execute())
        if not changed:
            raise InstitutionError(f"no registered peer {peer_name!r}", "peer")

    def bindings(self) -> list[tuple[str, str, str]]:
        """(peer name, AE title, institution code or "") of every registered peer."""
        with self.index.read():
            codes = dict(Institution.select(Institution.id, Institution.code).tuples())
            return [(r.name, r.ae_title, codes.get(r.institution, "") if r.institution else "")
                    for r in RemoteAE.select().order_by(RemoteAE.name)]

    # --- studies and orders -----------------------------------------------------
    def institution_of(self, study_instance_uid: str) -> int | None:
        with self.index.read():
            row = Study.select(Study.institution).where(Study.study_instance_uid == study_instance_uid).first()
        return row.institution if row else None

    def move_study(self, study_instance_uid: str, institution: str | int) -> tuple[int, int]:
        """Put a study in another institution; returns (from, to). The caller audits.
        Its reading task (archive/reading.py), which keeps the institution's code for the
        worklist's filters and coordinators, follows in the same transaction, so no
        worklist ever shows the task under the institution the study left."""
        inst = self.get(institution)
        with self.index.write():
            row = Study.select(Study.id, Study.institution).where(
                Study.study_instance_uid == study_instance_uid).first()
            if row is None:
                raise InstitutionError("no such study", "study")
            Study.update(institution=inst.id).where(Study.id == row.id).execute()
            ReadingTask.update(institution=inst.code, updated_at=utcnow()).where(
                ReadingTask.study_instance_uid == study_instance_uid).execute()
        return row.institution, inst.id

    def default_for(self, username: str) -> int | None:
        """The institution a user's new orders and uploads go to when they name none:
        their only one; None when they have several (they must choose) or none."""
        ids = {m.institution_id for m in self.memberships_of(username)}
        return next(iter(ids)) if len(ids) == 1 else None

    def set_order_institution(self, accession_number: str, institution: int) -> None:
        with self.index.write():
            Order.update(institution=institution).where(Order.accession_number == accession_number).execute()


def destination_refusal(index: Index, ae_title: str, study_uids: Iterable[str], *,
                        peer_name: str | None = None) -> str | None:
    """Why a registered destination may not receive these studies, or None.

    A remote AE bound to an institution is that hospital's: it receives only that
    institution's studies, by C-MOVE (dicom/move.py) or the web's "send study", as it
    finds and retrieves only those. An unbound destination receives anything the
    sender may see. ``peer_name`` names the registry entry (the web's choice); else
    every entry with ``ae_title`` that may receive counts, and one bound elsewhere
    refuses (the C-MOVE request names only the AE title)."""
    uids = sorted(set(study_uids))
    with index.read():
        query = RemoteAE.select(RemoteAE.institution).where(RemoteAE.institution.is_null(False))
        query = query.where(RemoteAE.name == peer_name) if peer_name is not None else query.where(
            RemoteAE.ae_title == ae_title.strip(), RemoteAE.is_move_destination == True)  # noqa: E712
        bound = {r.institution for r in query}
        if not bound or not uids:
            return None
        owners: set[int] = set()
        for start in range(0, len(uids), 500):      # bound parameter lists stay short
            owners |= {r.institution for r in Study.select(Study.institution).where(
                Study.study_instance_uid.in_(uids[start:start + 500])).distinct()}
        foreign = owners - bound
        if not foreign:
            return None
        codes = dict(Institution.select(Institution.id, Institution.code).tuples())
    return (f"destination {ae_title.strip()} is bound to institution "
            f"{', '.join(sorted(codes.get(i, str(i)) for i in bound))}; the study belongs to "
            f"{', '.join(sorted(codes.get(i, str(i)) for i in foreign))}")


__all__ = ["DEFAULT_INSTITUTION_ID", "InstitutionError", "destination_refusal", "InstitutionInfo", "Institutions", "Member"]
