"""Signing in and out, and choosing the UI language."""
from __future__ import annotations

from flask import Blueprint, make_response, redirect, render_template, request, url_for

from dsmpacs.archive.audit import AuditAction
from dsmpacs.archive.sessions import STAGE_ENROL, STAGE_TOTP
from dsmpacs.web import audit, auth, i18n
from dsmpacs.web.services import services

bp = Blueprint("auth", __name__)


def safe_next(target: str | None) -> str:
    """Only a path on this site: never //host or a scheme (open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("studies.index")
    return target


@bp.route("/login", methods=["GET", "POST"])
@auth.public
def login():
    nxt = request.values.get("next", "")
    if request.method == "GET":
        if auth.current_user() is not None:
            return redirect(safe_next(nxt))
        return render_template("login.html", next=nxt, error=None)
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    auth.check_throttle(username)
    account = services().users.authenticate(username, password) if username and password else None
    if account is None:
        auth.login_failed(username, "form")
        return render_template("login.html", next=nxt, error="login.failed", username=username), 401
    svc = services()
    stage = svc.second_factor.stage_after_password(account, svc.settings.require_totp_roles)
    auth.start_session(account, stage)
    if stage == STAGE_TOTP:
        return redirect(url_for("security.totp_step", next=nxt))
    if stage == STAGE_ENROL:
        return redirect(url_for("security.enrol", next=nxt))
    auth.login_succeeded(account, "form")
    return redirect(safe_next(nxt))


@bp.route("/logout", methods=["POST"])
@auth.public
def logout():
    state = auth.current_session()
    if state is not None:
        audit.record(AuditAction.LOGOUT, actor=state.account.username)
    auth.end_session()
    return redirect(url_for("auth.login"))


@bp.route("/language", methods=["POST"])
@auth.public
def language():
    lang = request.form.get("lang", "")
    response = make_response(redirect(safe_next(request.form.get("next"))))
    if lang in i18n.LANGUAGES:
        response.set_cookie(i18n.COOKIE, lang, max_age=365 * 86400, httponly=True, samesite="Lax",
                            secure=services().settings.web_secure_cookies or request.is_secure)
    return response
