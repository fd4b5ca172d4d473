"""Share links (create and revoke on the study page; the public /s/<token>),
notifications (the bell and its page) and the administrator's links of referring
physicians to their DICOM names.

Thin adapters over archive/shares.py, archive/notifications.py and
archive/referring.py; who may reach what inside a share session is decided in
web/share_session.py, called by web/auth.py for every request.
"""
from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request, url_for
from werkzeug.exceptions import Forbidden, TooManyRequests

from dsmpacs.archive.audit import AuditAction
from dsmpacs.archive.shares import DEFAULT_DAYS, MAX_DAYS, ShareError, State
from dsmpacs.archive.users import Role
from dsmpacs.web import audit, auth, scoping, share_session
from dsmpacs.web.i18n import notify
from dsmpacs.web.services import services

bp = Blueprint("shares", __name__)
SHARING_ROLES = (Role.ADMIN, Role.RADIOLOGIST)

# Only a study the user can see can be shared: outside their Scope it is 404 (web/scoping.py).
bp.before_request(scoping.guard_study_arguments)


def may_share() -> bool:
    user = auth.current_user()
    return user is not None and not user.disabled and user.role in SHARING_ROLES \
        and share_session.current_share() is None


@bp.app_context_processor
def _globals() -> dict:
    return {"may_share": may_share, "study_shares": lambda uid: share_session.shares().for_study(uid),
            "ShareState": State, "share_max_days": MAX_DAYS, "share_default_days": DEFAULT_DAYS}


def _sharer_only() -> None:
    if not may_share():
        audit.record_refusal(403, "needs the admin or radiologist role to share")
        raise Forbidden("share")


# --- on the study page --------------------------------------------------------------
@bp.route("/studies/<study_uid>/shares", methods=["POST"])
def create(study_uid: str):
    _sharer_only()
    try:
        days = float(request.form.get("days", DEFAULT_DAYS))
    except ValueError:
        days = -1
    try:
        share, token = share_session.shares().create(
            study_uid, created_by=auth.current_user().username, days=days,
            code=request.form.get("code", ""), label=request.form.get("label", ""))
    except ShareError as exc:
        if exc.code == "unknown":
            abort(404)
        notify(f"share.error.{exc.code}", "error", value=exc.params.get("value", ""))
        return redirect(url_for("studies.study", study_uid=study_uid))
    audit.record(AuditAction.SHARE_CREATE, study_instance_uid=study_uid,
                 detail=f"share {share.id} until {share.expires_at:%Y-%m-%d %H:%M} UTC"
                        f"{' with access code' if share.has_code else ''}; {share.label}")
    # The link is shown this once, on this page; it is never stored.
    link = url_for("shares.open_link", token=token, _external=True)
    return render_template("shares/created.html", share=share, link=link, study_uid=study_uid), 201


@bp.route("/studies/<study_uid>/shares/<int:share_id>/revoke", methods=["POST"])
def revoke(study_uid: str, share_id: int):
    _sharer_only()
    share = share_session.shares().revoke(share_id, by=auth.current_user().username,
                                          study_instance_uid=study_uid)
    if share is None:
        abort(404)
    audit.record(AuditAction.SHARE_REVOKE, study_instance_uid=study_uid, detail=f"share {share.id}")
    notify("share.revoked")
    return redirect(url_for("studies.study", study_uid=study_uid))


# --- the public link -------------------------------------------------------------------
def _throttle_key(share_id: int) -> str:
    return f"share:{share_id}"


@bp.route("/s/<token>", methods=["GET", "POST"])
@auth.public
def open_link(token: str):
    svc = services()
    found = share_session.shares().by_token(token)
    if found is None:
        audit.record_refusal(404, "unknown share link")
        abort(404)
    state = found.state()
    if state is not State.ACTIVE:
        audit.record(AuditAction.SHARE_USE, study_instance_uid=found.study_instance_uid, outcome="refused",
                     actor=found.principal, role="", detail=f"share {found.id} {state.value}")
        return render_template("shares/gone.html", state=state.value), 410
    address = auth.client_address()
    if found.has_code:
        if request.method != "POST":
            return render_template("shares/code.html", error=None)
        wait = svc.throttle.retry_after(_throttle_key(found.id), address)
        if wait > 0:
            audit.record_once(("share-throttled", found.id, address), AuditAction.SHARE_USE, outcome="refused",
                              actor=found.principal, role="", study_instance_uid=found.study_instance_uid,
                              detail=f"share {found.id}: access code attempts throttled")
            exc = TooManyRequests()
            exc.retry_after = int(wait) + 1
            raise exc
        if not share_session.shares().check_code(found.id, request.form.get("code", "")):
            svc.throttle.failure(_throttle_key(found.id), address)
            audit.record(AuditAction.SHARE_USE, study_instance_uid=found.study_instance_uid, outcome="failed",
                         actor=found.principal, role="", detail=f"share {found.id}: wrong access code")
            return render_template("shares/code.html", error="share.code.wrong"), 403
        svc.throttle.success(_throttle_key(found.id), address)
    share_session.shares().record_use(found.id)
    audit.record(AuditAction.SHARE_USE, study_instance_uid=found.study_instance_uid, actor=found.principal,
                 role="", detail=f"share {found.id} opened")
    if auth.current_user() is None:
        share_session.bind(found)
    # Away from the token's URL at once: it must not linger in the address bar or a Referer.
    return redirect(url_for("studies.viewer", study=found.study_instance_uid))


# Routes register themselves on bp when their module is imported.
from dsmpacs.web.shares import notices, referring  # noqa: E402,F401
