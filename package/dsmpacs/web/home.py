"""The user's own account page (the landing page is the study browser)."""
from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for

from dsmpacs.archive.audit import AuditAction
from dsmpacs.archive.users import MIN_PASSWORD_LENGTH, UserError
from dsmpacs.web import account_security, audit, auth
from dsmpacs.web.i18n import notify
from dsmpacs.web.services import services

bp = Blueprint("home", __name__)

@bp.route("/account", methods=["GET", "POST"])
def account():
    user = auth.current_user()
    error = None
    if request.method == "POST":
        current = request.form.get("current_password", "")
        new = request.form.get("new_password", "")
        if new != request.form.get("confirm_password", ""):
            error = "account.mismatch"
        elif services().users.authenticate(user.username, current) is None:
            error = "account.wrong_current"
            audit.record(AuditAction.PASSWORD_CHANGE, outcome="failed", detail="wrong current password")
        else:
            try:
                updated = services().users.set_password(user.username, new)
            except UserError:
                error = "account.too_short"
            else:
                audit.record(AuditAction.PASSWORD_CHANGE, detail=user.username)
                auth.keep_session_after_password_change(updated)   # the others end
                notify("account.changed")
                return redirect(url_for("home.account"))
    return render_template("account.html", error=error, min_length=MIN_PASSWORD_LENGTH,
                           **account_security.account_context(user)), (400 if error else 200)
