"""The web's side of archive/visibility.py: a study outside the user's Scope is a
study that does not exist (404, never 403, so its existence is not revealed).

``guard_study_arguments`` runs before every view of the study browser, the viewer
and DICOMweb: it checks each Study Instance UID the request names (in the path or in
the query) once, so a new route with a ``study_uid``/``study`` argument is covered
without remembering to. Lists (the study list, the patient timeline, QIDO-RS)
narrow their queries with ``Scope.restrict`` where they are built.
"""
from __future__ import annotations

from flask import abort, request

from dsmpacs.archive.models import Study
from dsmpacs.web.services import services

PATH_ARGUMENTS = ("study_uid", "study")
QUERY_ARGUMENTS = ("study", "compare", "studyUID")


def _exists(index, uid: str) -> bool:
    with index.read():
        return Study.select(Study.id).where(Study.study_instance_uid == uid).exists()


def hidden(uid: str) -> bool:
    """Is this study outside the current user's scope (while it exists)? A study
    that is not stored is left to the view, which answers 404 (or, for STOW-RS to a
    new study, stores it)."""
    if not uid:
        return False
    svc = services()
    scope = svc.scope()
    if scope.is_everything or scope.allows(uid, svc.archive.index):
        return False
    return _exists(svc.archive.index, uid)


def guard_study_arguments():
    """before_request: 404 when the request names a study the user may not see."""
    scope_needed = [str(v) for k, v in (request.view_args or {}).items() if k in PATH_ARGUMENTS]
    scope_needed += [request.args.get(k, "").strip() for k in QUERY_ARGUMENTS if k in request.args]
    if not any(scope_needed):
        return None
    from dsmpacs.web.auth import current_user
    if current_user() is None:
        return None         # not signed in: the view's own check answers 401 / the login page
    for uid in scope_needed:
        if hidden(uid):
            abort(404)
    return None


def stow_institution() -> int | None:
    """Where the current user's STOW-RS puts new studies: the ``institution`` query
    parameter (a code or id among their memberships), else their only institution.
    None for a user who sees everything and names none (placement decides, as for
    any sender). 400 when a member of several names none."""
    from dsmpacs.archive.institutions import InstitutionError, Institutions
    from dsmpacs.web.auth import current_user
    from dsmpacs.web.dicomweb.common import fail

    svc = services()
    user = current_user()
    institutions = Institutions(svc.archive.index)
    named = request.args.get("institution", "").strip()
    scope = svc.scope()
    if named:
        try:
            inst = institutions.get(named)
        except InstitutionError:
            fail(400, f"no institution {named[:32]!r}")
        if not scope.allows_institution(inst.id):
            fail(400, f"you are not a member of institution {named[:32]!r}")
        return inst.id
    if scope.is_everything:
        return None
    only = institutions.default_for(user.username) if user else None
    if only is None:
        fail(400, "you belong to several institutions: name one with ?institution=<code>")
    return only
