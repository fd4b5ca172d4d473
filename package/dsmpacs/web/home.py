"""The landing page and the user's own account page."""
from __future__ import annotations

from flask import Blueprint, current_app, redirect, render_template, request, url_for

from dsmpacs.archive.audit import AuditAction
from dsmpacs.archive.users import MIN_PASSWORD_LENGTH, UserError
from dsmpacs.web import audit, auth
from dsmpacs.web.i18n import notify
from dsmpacs.web.services import services

bp = Blueprint("home", __name__)

STUDY_BROWSER_ENDPOINT = "studies.index"


@bp.route("/")
def index():
    """The study browser once it is registered; until then the archive's summary
    and the studies received last."""
    if STUDY_BROWSER_ENDPOINT in current_app.view_functions:
        return redirect(url_for(STUDY_BROWSER_ENDPOINT))
    svc = services()
    return render_template("home.html", totals=svc.statistics.totals(),
                           studies=svc.statistics.recent_studies(limit=20))


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
                auth.start_session(updated)       # other sessions end; this one continues
                notify("account.changed")
                return redirect(url_for("home.account"))
    return render_template("account.html", error=error, min_length=MIN_PASSWORD_LENGTH), (400 if error else 200)
