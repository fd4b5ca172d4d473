"""What a user or a DICOM peer may see: the one place that decides it.

Several institutions share one archive without mixing. Every study belongs to one
institution (``Study.institution``, set when it first arrives: see ``placement``).
A user sees the studies of the institutions they are a member of, plus the single
studies granted to them (archive/grants.py); the global admin sees everything. A
DICOM peer bound to an institution (``RemoteAE.institution``) sees only that
institution; an unbound or unregistered peer sees everything, as before
institutions existed. An archive upgraded from a single room has one default
institution holding every study and every user, so nothing changes for it.

Callers ask ``Scope.allows(uid)`` before serving one study and ``Scope.restrict``
to narrow a query over Study: one indexed condition
``institution IN (...) OR study_instance_uid IN (grants)``. Nothing here speaks
HTTP or DICOM; a study outside the scope is, to the caller, a study that does not
exist (404 on the web, no match in C-FIND).
"""
from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

import peewee

from dsmpacs.archive.database import statement
from dsmpacs.archive.models import (
    DEFAULT_INSTITUTION_ID,
    Institution,
    InstitutionAlias,
    RemoteAE,
    Study,
)

# Roles within an institution (Membership.role).
MEMBERSHIP_ROLES = ("registrar", "technologist", "radiologist", "referring", "institution-admin")
DEFAULT_CODE = "default"
DEFAULT_NAME = "Default institution"


def membership_role_for(global_role: str) -> str:
    """The membership role a user of ``global_role`` gets in the default institution
    (an upgrade, a new user): the nearest one that changes nothing for them. Never
    "referring", which narrows what a user sees."""
    return {"admin": "institution-admin", "radiologist": "radiologist"}.get(global_role, "technologist")


def ensure_default_institution() -> None:
    """Create institution 1, the default, if it is missing (fresh schema, upgrade)."""
    if Institution.get_or_none(Institution.id == DEFAULT_INSTITUTION_ID) is None:
        Institution.insert(id=DEFAULT_INSTITUTION_ID, code=DEFAULT_CODE, name=DEFAULT_NAME).execute()


def alias_key(name: str) -> str:
    """An Institution Name as matched: NFKC, casefolded, inner spaces collapsed."""
    return " ".join(unicodedata.normalize("NFKC", name or "").casefold().split())[:128]


# How a referring physician's studies are told apart within an institution where
# their membership role is "referring" (the sharing feature provides it: e.g. the
# studies whose Referring Physician's Name matches their linked DICOM name). A
# function of the user name returning a condition over Study; None registered:
# such a member sees none of that institution's studies beyond their grants.
_referring_filter: Callable[[str], peewee.Expression] | None = None


def register_referring_filter(function: Callable[[str], peewee.Expression] | None) -> None:
    global _referring_filter
    _referring_filter = function


@dataclass(frozen=True)
class Scope:
    """The studies one user or peer may see. ``institutions`` None: everything.
    ``referring``: institutions where the user is only a referring physician (they
    see there what ``referring_filter`` lets through)."""
    institutions: frozenset[int] | None
    granted: frozenset[str] = field(default_factory=frozenset)
    who: str = ""
    referring: frozenset[int] = field(default_factory=frozenset)

    # --- construction ---------------------------------------------------------
    @classmethod
    def everything(cls, who: str = "") -> "Scope":
        return cls(None, frozenset(), who)

    @classmethod
    def nothing(cls, who: str = "") -> "Scope":
        return cls(frozenset(), frozenset(), who)

    @classmethod
    def for_user(cls, index, grants, username: str) -> "Scope":
        """The global admin sees everything; anyone else their institutions and grants.
        An unknown user sees nothing."""
        # Every web request asks this: one prepared query (database.statement) for the
        # account and its memberships together.
        sql = statement(index.db, "scope.for_user", lambda q, p: (
            f"SELECT u.{q('disabled')}, u.{q('role')}, m.{q('institution_id')}, m.{q('role')} "
            f"FROM {q('user')} u LEFT JOIN {q('membership')} m ON m.{q('user_id')} = u.{q('id')} "
            f"WHERE u.{q('username')} = {p} ORDER BY u.{q('id')}"))
        with index.read():
            found = index.db.execute_sql(sql, [username]).fetchall()
        if not found:
            return cls.nothing(username)
        # usernames are unique by their key (NFKC casefolded); the first row's account
        # is the one User.get_or_none would have returned.
        disabled, role = found[0][0], found[0][1]
        if disabled:
            return cls.nothing(username)
        if role == "admin":
            return cls.everything(username)
        roles = [(row[2], row[3]) for row in found if row[2] is not None]
        ids = frozenset(i for i, role in roles if role != "referring")
        referring = frozenset(i for i, role in roles if role == "referring") - ids
        granted = frozenset(grants.studies_for(username)) if grants is not None else frozenset()
        return cls(ids, granted, username, referring)

    @classmethod
    def for_ae(cls, index, ae: str) -> "Scope":
        """A peer by its AE title: bound registrations restrict it to their institutions;
        unbound or unregistered, it sees everything (documented in conformance.md)."""
        title = (ae or "").strip()
        with index.read():
            bound = {r.institution for r in RemoteAE.select(RemoteAE.institution)
                     .where(RemoteAE.ae_title == title, RemoteAE.institution.is_null(False))}
        return cls(frozenset(bound), frozenset(), title) if bound else cls.everything(title)

    # --- questions ------------------------------------------------------------
    @property
    def is_everything(self) -> bool:
        return self.institutions is None

    def condition(self, model=Study) -> peewee.Expression | None:
        """The SQL condition over ``model`` (Study, or anything with ``institution``
        and ``study_instance_uid``); None when nothing needs restricting."""
        if self.institutions is None:
            return None
        cond = None
        if self.institutions:
            cond = model.institution.in_(sorted(self.institutions))
        if self.referring and _referring_filter is not None:
            theirs = model.institution.in_(sorted(self.referring)) & _referring_filter(self.who)
            cond = theirs if cond is None else (cond | theirs)
        if self.granted:
            by_grant = model.study_instance_uid.in_(sorted(self.granted))
            cond = by_grant if cond is None else (cond | by_grant)
        # No institution and no grant: a condition that is never true.
        return cond if cond is not None else (model.id < 0)

    def restrict(self, query: peewee.ModelSelect, model=Study) -> peewee.ModelSelect:
        """``query`` (which must select from or join Study) narrowed to this scope."""
        cond = self.condition(model)
        return query if cond is None else query.where(cond)

    def allows(self, study_instance_uid: str, index=None) -> bool:
        """May this scope see the study? A study not in the index is not allowed to a
        restricted scope (nothing to see; and no hint that it might exist)."""
        if self.institutions is None:
            return True
        if study_instance_uid in self.granted:
            return True
        if not self.institutions and not (self.referring and _referring_filter is not None):
            return False
        if index is not None and self.institutions and not self.referring:
            # The common case on every request (a member of institutions, the study not
            # granted): condition() reduces to the institutions, as a prepared query.
            ids = sorted(self.institutions)
            sql = statement(index.db, f"scope.allows.{len(ids)}", lambda q, p: (
                f"SELECT 1 FROM {q('study')} WHERE {q('study_instance_uid')} = {p} "
                f"AND {q('institution')} IN ({', '.join([p] * len(ids))}) LIMIT 1"))
            with index.read():
                return index.db.execute_sql(sql, [study_instance_uid, *ids]).fetchone() is not None
        # The same condition as the lists, so a page and the list never disagree.
        query = Study.select(Study.id).where(Study.study_instance_uid == study_instance_uid,
                                             self.condition())
        if index is not None:
            with index.read():
                return query.exists()
        return query.exists()

    def allows_institution(self, institution_id: int) -> bool:
        return self.institutions is None or institution_id in self.institutions

    def orders_condition(self, model):
        """Orders are scoped by institution only (grants are per study)."""
        if self.institutions is None:
            return None
        return model.institution.in_(sorted(self.institutions)) if self.institutions else (model.id < 0)


def ae_binding(calling_ae: str) -> int | None:
    """The institution a registered AE is bound to; None for an unbound or unknown AE."""
    title = (calling_ae or "").strip()
    if not title:
        return None
    row = (RemoteAE.select(RemoteAE.institution)
           .where(RemoteAE.ae_title == title, RemoteAE.institution.is_null(False))
           .order_by(RemoteAE.id).first())
    return row.institution if row is not None else None


_LOOK_UP = object()


def placement(calling_ae: str, institution_name: str, bound: object = _LOOK_UP) -> int:
    """The institution a newly arriving study belongs to: the sending AE's binding,
    else its Institution Name (0008,0080) through the admin-kept aliases, else the
    default. Runs inside the index's write transaction. ``bound``: the AE's binding
    when the caller already knows it (None: unbound)."""
    if bound is _LOOK_UP:
        bound = ae_binding(calling_ae)
    if bound is not None:
        return bound
    key = alias_key(institution_name)
    if key:
        alias = InstitutionAlias.get_or_none(InstitutionAlias.name_key == key)
        if alias is not None:
            return alias.institution_id
    return DEFAULT_INSTITUTION_ID
