"""Second sign-in step, TOTP enrolment, re-authentication, and ending sessions.

The decisions are archive/'s (sessions.py, totp.py); these views turn them
into pages, redirects and audit records. The sign-in step and enrolment are
``public`` views because a half-signed-in session has no user yet: each one
checks the session's stage itself.
"""
from __future__ import annotations

import io

import segno
from flask import Blueprint, Response, abort, redirect, render_template, request, url_for

from dsmpacs.archive.audit import AuditAction
from dsmpacs.archive.sessions import STAGE_ENROL, STAGE_OK, STAGE_TOTP
from dsmpacs.archive.totp import CodeCheck
from dsmpacs.archive.users import Account, Permission
from dsmpacs.web import audit, auth
from dsmpacs.web.i18n import notify
from dsmpacs.web.login import safe_next
from dsmpacs.web.services import services

bp = Blueprint("security", __name__)


def _code_refused(account: Account, result: CodeCheck, how: str) -> str:
    """Audit and throttle a refused code; the message key for the page."""
    detail = f"{how}: {'code already used' if result is CodeCheck.REPLAY else 'wrong code'}"
    auth.login_failed(account.username, detail, AuditAction.TOTP_FAILED)
    return "totp.replayed" if result is CodeCheck.REPLAY else "totp.wrong"


# --- the second sign-in step ---------------------------------------------------------
@bp.route("/login/totp", methods=["GET", "POST"])
@auth.public
def totp_step():
    state = auth.current_session()
    nxt = request.values.get("next", "")
    if state is None or state.stage != STAGE_TOTP:
        return redirect(url_for("auth.login", next=nxt) if state is None else safe_next(nxt))
    account = state.account
    if request.method == "GET":
        return render_template("totp_step.html", next=nxt, error=None)
    auth.check_throttle(account.username)
    svc = services()
    result = svc.second_factor.verify(account, request.form.get("code", ""))
    if result is not CodeCheck.OK:
        error = _code_refused(account, result, "sign-in")
        return render_template("totp_step.html", next=nxt, error=error), 401
    svc.sessions.advance(state.id, STAGE_OK)
    auth.login_succeeded(account, "form+totp")
    return redirect(safe_next(nxt))


# --- enrolment -----------------------------------------------------------------------
def _enrolling_account() -> tuple[Account, bool]:
    """The account enrolling and whether enrolment is what sign-in waits for."""
    user = auth.current_user()
    if user is not None:
        return user, False
    state = auth.current_session()
    if state is not None and state.stage == STAGE_ENROL:
        return state.account, True
    abort(auth.unauthorized())


def _enrol_page(account: Account, required: bool, secret: str, error: str | None, status: int = 200):
    return render_template("totp_enrol.html", secret=secret, required=required, error=error,
                           next=request.values.get("next", "")), status


@bp.route("/account/totp/qr.svg")
@auth.public
def enrol_qr():
    """The QR code of the pending secret, drawn server-side (no script, no third party)."""
    account, _required = _enrolling_account()
    secret = services().second_factor.pending_secret(account.id)
    if secret is None:
        abort(404)
    uri = services().second_factor.provisioning_uri(account, secret)
    out = io.BytesIO()
    segno.make(uri, error="m").save(out, kind="svg", scale=5, dark="#000", light="#fff")
    response = Response(out.getvalue(), mimetype="image/svg+xml")
    response.headers["Cache-Control"] = "no-store"          # it is a secret
    return response


@bp.route("/account/totp", methods=["GET"])
@auth.public
def enrol():
    account, required = _enrolling_account()
    svc = services()
    if svc.second_factor.enrolled(account.id):
        return redirect(url_for("home.account"))
    if not required and not auth.reauthenticated():
        # Someone at an unattended browser must not add their phone to this account
        # (and so lock its owner out at the next sign-in).
        return auth.reauth_prompt()
    # A fresh secret per visit: one shown on an abandoned page is never confirmed.
    return _enrol_page(account, required, svc.second_factor.begin(account), None)


@bp.route("/account/totp", methods=["POST"])
@auth.public
def enrol_confirm():
    account, required = _enrolling_account()
    svc = services()
    secret = svc.second_factor.pending_secret(account.id)
    if secret is None:
        return redirect(url_for("security.enrol"))
    auth.check_throttle(account.username)
    codes = svc.second_factor.confirm(account, request.form.get("code", ""))
    if codes is None:
        error = _code_refused(account, CodeCheck.WRONG, "enrolment")
        return _enrol_page(account, required, secret, error, 400)
    audit.record(AuditAction.TOTP_ENROL, actor=account.username, detail=account.username)
    state = auth.current_session()
    if required and state is not None:
        svc.sessions.advance(state.id, STAGE_OK)
        auth.login_succeeded(account, "form+totp-enrolment")
    return render_template("totp_recovery.html", codes=codes, next=safe_next(request.form.get("next")))


@bp.route("/account/totp/remove", methods=["POST"])
@auth.reauth_required
def totp_remove():
    svc = services()
    user = auth.current_user()
    if svc.second_factor.required_for(user, svc.settings.require_totp_roles):
        abort(403, "your role requires a second factor")
    svc.second_factor.reset(user.username)
    audit.record(AuditAction.TOTP_RESET, detail=f"{user.username} (by themselves)")
    notify("totp.removed")
    return redirect(url_for("home.account"))


# --- re-authentication ---------------------------------------------------------------
@bp.route("/reauth", methods=["POST"])
def reauth():
    """Confirm identity, then re-send the carried form to where it was going (307)."""
    state = auth.current_session()
    svc = services()
    auth.check_throttle(state.account.username)
    code = request.form.get("reauth_code", "").strip()
    result = svc.sessions.reauthenticate(state, password=request.form.get("reauth_password", ""),
                                         code=code, users=svc.users, second_factor=svc.second_factor)
    if result is not True:
        how = f"re-authentication by {'code' if code else 'password'}"
        if code:
            _code_refused(state.account, CodeCheck.REPLAY if result == "replay" else CodeCheck.WRONG, how)
        else:
            auth.login_failed(state.account.username, how)
        return auth.reauth_prompt(error="reauth.wrong", status=401)
    audit.record(AuditAction.REAUTH, detail="code" if code else "password")
    # 307 re-sends the carried form with its method; a page asked for by GET is fetched again.
    method_kept = 303 if request.form.get("reauth_method") == "GET" else 307
    return redirect(safe_next(request.form.get("reauth_target")), code=method_kept)


# --- seeing and ending sessions --------------------------------------------------------
def account_context(user: Account) -> dict:
    """What the account page shows about sessions and the second factor."""
    svc = services()
    return {"sessions": svc.sessions.of_user(user.id), "this_session": auth.current_session(),
            "totp_enrolled": svc.second_factor.enrolled(user.id),
            "totp_required": svc.second_factor.required_for(user, svc.settings.require_totp_roles),
            "recovery_left": svc.second_factor.recovery_codes_left(user.id)}


@bp.route("/account/sessions/<int:session_id>/end", methods=["POST"])
def end_own_session(session_id: int):
    user = auth.current_user()
    if not services().sessions.end_one(session_id, user.id):
        abort(404)
    audit.record(AuditAction.SESSION_END, detail=f"{user.username}: session {session_id}")
    notify("sessions.ended")
    return redirect(url_for("home.account"))


@bp.route("/admin/users/<path:username>/sessions/end", methods=["POST"])
@auth.requires(Permission.ADMIN)
def end_user_sessions(username: str):
    svc = services()
    account = svc.users.by_name(username)
    if account is None:
        abort(404)
    state = auth.current_session()
    ended = svc.sessions.end_all(account.id, except_id=state.id if state else None)
    audit.record(AuditAction.SESSION_END, detail=f"{account.username}: {ended} sessions (by an administrator)")
    notify("sessions.ended_for", name=account.username, count=ended)
    return redirect(url_for("admin.users"))


def security_alert():
    """The newest security alert of the last 24 hours, for the admin pages' banner."""
    from datetime import timedelta

    from dsmpacs.archive.models import utcnow

    recent = services().audit.recent(limit=1, action=AuditAction.SECURITY_ALERT.value)
    if recent and recent[0].at > utcnow() - timedelta(hours=24):
        return recent[0]
    return None


def init_app(app) -> None:
    app.jinja_env.globals.update(security_alert=security_alert)
    app.register_blueprint(bp)
