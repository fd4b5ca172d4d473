"""The study browser and the viewer: server-rendered pages over archive/browse.py
and frames rendered on the server by dsmpacs.imaging.

Every route needs a signed-in user with VIEW (an auditor has none); actions
check their own permission: download needs EXPORT, send SEND, delete DELETE.
"""
from __future__ import annotations

from flask import Blueprint, redirect, request, url_for

from dsmpacs.archive.users import Permission
from dsmpacs.web import auth, scoping

bp = Blueprint("studies", __name__)


@bp.before_request
def _readers_only():
    """Patient data needs VIEW; an auditor landing on the study list goes to the trail."""
    user = auth.current_user()
    if (user is not None and not user.can(Permission.VIEW) and user.can(Permission.AUDIT)
            and request.endpoint == "studies.index" and not request.args):
        return redirect(url_for("admin.audit_trail"))
    auth.require(Permission.VIEW)
    return None


# Every study named in a path or query must be in the user's scope (web/scoping.py).
bp.before_request(scoping.guard_study_arguments)

# Routes register themselves on bp when their module is imported. ``annotations`` is
# imported by its full name: in a from-import it would be this module's __future__
# feature of that name, and the submodule would never load.
import dsmpacs.web.browse.annotations  # noqa: E402,F401
from dsmpacs.web.browse import mpr, search, study, transfers, viewer  # noqa: E402,F401
