"""Who sees and changes which reading tasks, for the worklist page and UPS-RS.

A coordinator (the global admin; with institutions, an institution-admin of the
task's institution) assigns tasks to any radiologist of any institution; every
reader sees the tasks of the studies their Scope allows (archive/visibility.py:
their institutions, plus their grants) and every task assigned to them. An
archive with only the default institution behaves as before: everyone sees
everything.
"""
from __future__ import annotations

from flask import g

from dsmpacs.archive.models import Institution, Membership, User
from dsmpacs.archive.reading import Task
from dsmpacs.archive.users import Permission, Role
from dsmpacs.web import auth
from dsmpacs.web.services import services

READER_ROLES = (Role.ADMIN.value, Role.RADIOLOGIST.value)


def is_coordinator(task: Task | None = None) -> bool:
    user = auth.current_user()
    if user is None:
        return False
    if user.is_admin:
        return True
    return bool(task is not None and task.institution
                and task.institution in administered(user.username))


def administered(username: str) -> set[str]:
    """Codes of the institutions ``username`` is an institution-admin of (asked
    once per request: the worklist asks it for every task)."""
    cache = g.setdefault("reading_administered", {})
    if username not in cache:
        with services().archive.index.read():
            rows = (Membership.select(Institution.code).join(Institution)
                    .switch(Membership).join(User)
                    .where(User.username == username, Membership.role == "institution-admin").tuples())
            cache[username] = {code for (code,) in rows}
    return cache[username]


def coordinates_any() -> bool:
    """May the current user coordinate some tasks (see the rules and assign)?"""
    user = auth.current_user()
    return user is not None and (user.is_admin or bool(administered(user.username)))


def may_read() -> bool:
    user = auth.current_user()
    return user is not None and user.role.value in READER_ROLES


def visible(task: Task) -> bool:
    user = auth.current_user()
    if user is None or not user.can(Permission.VIEW):
        return False
    if user.is_admin or task.assignee == user.username or is_coordinator(task):
        return True
    return bool(services().scope().allows(task.study_instance_uid))
