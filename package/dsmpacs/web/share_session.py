"""The holder of a share link: who may reach which study without an account.
Called by web/auth.py for every request, so no route has to remember it.

A share session is the ``share`` entry of the signed cookie session, set when a
link (and its access code, if any) was accepted by web/shares/. Each request
re-reads the share's row, so a revoked or expired link stops working at once.
It admits only the read-only viewer endpoints below, with GET, and only for the
share's study: anything else is 401 (another route) or 404 (another study, so
the existence of other studies is not revealed). The principal is a VIEW-only
account named ``share:<id>`` (no account can have a colon in its name), so the viewer's own code and audit rows need no
special case.

(Referring physicians are ordinary users: their narrower view is part of their
Scope, archive/visibility.py with archive/referring.py.)
"""
from __future__ import annotations

from enum import Enum

from flask import g, request, session
from werkzeug.exceptions import NotFound

from dsmpacs.archive.shares import Share, Shares, State
from dsmpacs.archive.users import Account, Role
from dsmpacs.archive.visibility import Scope
from dsmpacs.web import audit
from dsmpacs.web.services import services

SESSION_KEY = "share"

# The read-only viewer of one study: page, study JSON, instance info, frames,
# thumbnails, the (empty) annotations of the share principal, ROI statistics, MPR.
VIEWER_ENDPOINTS = frozenset({
    "studies.viewer", "studies.study_json", "studies.instance_info", "studies.render_frame",
    "studies.thumbnail", "studies.annotations_of_study", "studies.ellipse_statistics",
    "studies.mpr", "studies.mpr_volume", "studies.mpr_plane", "studies.mpr_rotate",
})
READ_METHODS = frozenset({"GET", "HEAD"})


class Verdict(Enum):
    NONE = "none"            # no share session: auth goes on as usual
    ADMITTED = "admitted"
    REFUSED = "refused"      # 401


def shares() -> Shares:
    return Shares(services().archive.index)


def current_share() -> Share | None:
    return g.get("share")


def bind(share: Share) -> None:
    """Tie this browser's session to one share (a fresh session: nothing from before survives)."""
    session.clear()
    session[SESSION_KEY] = {"id": share.id, "study": share.study_instance_uid}


def principal(share: Share) -> Account:
    return Account(id=0, username=share.principal, role=Role.VIEWER, disabled=False, epoch=0,
                   created_at=share.created_at, last_login_at=None)


def _requested_studies() -> list[str]:
    found = []
    for value in ((request.view_args or {}).get("study_uid"), request.args.get("study"),
                  request.args.get("compare")):
        if value:
            found.append(value)
    return found


def admit(view_is_public: bool) -> Verdict:
    """For a request without a signed-in user: is it a share session's, and may it pass?"""
    data = session.get(SESSION_KEY)
    if not isinstance(data, dict):
        return Verdict.NONE
    share = shares().get(int(data.get("id", 0) or 0))
    if share is None or share.state() is not State.ACTIVE:
        session.pop(SESSION_KEY, None)
        return Verdict.NONE
    g.share = share
    if view_is_public:
        return Verdict.ADMITTED
    if request.endpoint not in VIEWER_ENDPOINTS or request.method not in READ_METHODS:
        return Verdict.REFUSED
    studies = _requested_studies()
    if not studies or any(s != share.study_instance_uid for s in studies):
        audit.record_refusal(404, f"share {share.id} is for another study")
        raise NotFound()
    g.user = principal(share)
    g.auth_method = "share"
    # Its Scope (archive/visibility.py) is that one study, as if granted: the
    # browser's own scope guard and lists then agree with this check.
    g.scope = Scope(frozenset(), frozenset({share.study_instance_uid}), share.principal)
    return Verdict.ADMITTED
