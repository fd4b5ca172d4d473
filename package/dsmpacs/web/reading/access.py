"""Who sees and changes which reading tasks, for the worklist page and UPS-RS.

A coordinator (the global admin; with institutions, an institution-admin of the
task's institution) sees every task and assigns any of them; a radiologist sees
the tasks of the studies their Scope allows (archive/visibility.py: their
institutions, plus grants) and every task assigned to them. Without
institutions every user who may view studies sees every task, as they see
every study.
"""
from __future__ import annotations

from dsmpacs.archive.reading import Task
from dsmpacs.archive.users import Permission, Role
from dsmpacs.web import auth
from dsmpacs.web.services import services

READER_ROLES = (Role.ADMIN.value, Role.RADIOLOGIST.value)


def _scope():
    scope = getattr(services(), "scope", None)
    return scope() if callable(scope) else None


def is_coordinator(task: Task | None = None) -> bool:
    user = auth.current_user()
    if user is None:
        return False
    if user.is_admin:
        return True
    admin_of = getattr(user, "administers", None)      # institution-admin, where institutions exist
    return bool(task is not None and callable(admin_of) and task.institution and admin_of(task.institution))


def may_read() -> bool:
    user = auth.current_user()
    return user is not None and user.role.value in READER_ROLES


def visible(task: Task) -> bool:
    user = auth.current_user()
    if user is None or not user.can(Permission.VIEW):
        return False
    if user.is_admin or task.assignee == user.username or is_coordinator(task):
        return True
    scope = _scope()
    return True if scope is None else bool(scope.allows(task.study_instance_uid))
