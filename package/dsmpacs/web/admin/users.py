"""Users: add, change role, reset password, disable/enable, remove, API tokens.

Every change needs a recent re-authentication (auth.reauth_required).

Generated passwords and new tokens are shown once, in the response to the
POST that made them, and never stored in clear.
"""
from __future__ import annotations

from flask import abort, redirect, render_template, request, url_for

from dsmpacs.archive.audit import AuditAction
from dsmpacs.archive.users import Role, UserError, generate_password
from dsmpacs.web import audit, auth
from dsmpacs.web.admin import bp
from dsmpacs.web.i18n import _, notify
from dsmpacs.web.labels import user_error
from dsmpacs.web.services import services

ROLES = [r.value for r in Role]


def _list(**extra):
    svc = services()
    from dsmpacs.archive.institutions import Institutions

    return render_template("admin/users.html", accounts=svc.users.list(), roles=ROLES,
                           tokens=svc.users.tokens(), session_counts=svc.sessions.counts(),
                           institutions=Institutions(svc.archive.index).all(),
                           **{"error": None, "form": None, **extra})


@bp.route("/users")
def users():
    return _list()


@bp.route("/users", methods=["POST"])
@auth.reauth_required
def user_add():
    form = request.form
    password = form.get("password", "")
    generated = not password
    if generated:
        password = generate_password()
    try:
        account = services().users.add(form.get("username", ""), password, form.get("role", "viewer"),
                                       institution=_institution_id(form.get("institution", "")))
    except UserError as exc:
        return _list(error=user_error(exc), form=form), 400
    audit.record(AuditAction.USER_ADD, detail=f"{account.username} ({account.role.value})")
    notify("admin.users.added", name=account.username)
    return _list(shown_password=(account.username, password) if generated else None)


def _institution_id(value: str) -> int | None:
    """The institution a new user joins (web/admin/institutions.py keeps them); the
    default one when none or an unknown one is named."""
    return int(value) if value.isdigit() else None


def _account_or_404(username: str):
    account = services().users.by_name(username)
    if account is None:
        abort(404)
    return account


@bp.route("/users/<path:username>/role", methods=["POST"])
@auth.reauth_required
def user_role(username: str):
    account = _account_or_404(username)
    role = request.form.get("role", "")
    try:
        updated = services().users.set_role(account.username, role)
    except UserError as exc:
        return _list(error=user_error(exc)), 400
    audit.record(AuditAction.USER_CHANGE, detail=f"{updated.username}: role {updated.role.value}")
    notify("admin.users.role_changed", name=updated.username, role=updated.role.value)
    return redirect(url_for("admin.users"))


@bp.route("/users/<path:username>/state", methods=["POST"])
@auth.reauth_required
def user_state(username: str):
    account = _account_or_404(username)
    disable = request.form.get("disabled") == "1"
    try:
        updated = services().users.set_disabled(account.username, disable)
    except UserError as exc:
        return _list(error=user_error(exc)), 400
    audit.record(AuditAction.USER_CHANGE,
                 detail=f"{updated.username}: {'disabled' if disable else 'enabled'}")
    notify("admin.users.disabled_msg" if disable else "admin.users.enabled_msg", name=updated.username)
    return redirect(url_for("admin.users"))


@bp.route("/users/<path:username>/password", methods=["POST"])
@auth.reauth_required
def user_password(username: str):
    account = _account_or_404(username)
    password = request.form.get("password", "")
    generated = not password
    if generated:
        password = generate_password()
    try:
        updated = services().users.set_password(account.username, password)
    except UserError as exc:
        return _list(error=user_error(exc)), 400
    audit.record(AuditAction.PASSWORD_CHANGE, detail=f"{updated.username} (reset by an administrator)")
    if updated.id == auth.current_user().id:
        auth.keep_session_after_password_change(updated)
    notify("admin.users.password_reset", name=updated.username)
    return _list(shown_password=(updated.username, password) if generated else None)


@bp.route("/users/<path:username>/remove", methods=["POST"])
@auth.reauth_required
def user_remove(username: str):
    account = _account_or_404(username)
    if account.id == auth.current_user().id:
        return _list(error=_("admin.users.cannot_remove_self")), 400
    try:
        services().users.remove(account.username)
    except UserError as exc:
        return _list(error=user_error(exc)), 400
    audit.record(AuditAction.USER_REMOVE, detail=account.username)
    notify("admin.users.removed", name=account.username)
    return redirect(url_for("admin.users"))


@bp.route("/users/<path:username>/tokens", methods=["POST"])
@auth.reauth_required
def token_create(username: str):
    account = _account_or_404(username)
    info, secret = services().users.create_token(account.username, request.form.get("label", ""))
    audit.record(AuditAction.TOKEN_CREATE, detail=f"{info.username}: {info.prefix}… {info.label}".strip())
    return _list(shown_token=(info.username, secret))


@bp.route("/tokens/<int:token_id>/revoke", methods=["POST"])
def token_revoke(token_id: int):
    if not services().users.revoke_token(token_id):
        abort(404)
    audit.record(AuditAction.TOKEN_REVOKE, detail=f"token {token_id}")
    notify("admin.users.token_revoked")
    return redirect(url_for("admin.users"))
