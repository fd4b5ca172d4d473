"""The administrator links each referring physician's account to the DICOM name
their patients' studies carry in Referring Physician's Name (archive/referring.py)."""
from __future__ import annotations

from flask import redirect, render_template, request, url_for

from dsmpacs.archive.audit import AuditAction
from dsmpacs.archive.users import Permission, Role
from dsmpacs.web import audit, auth, share_session
from dsmpacs.web.i18n import notify
from dsmpacs.web.services import services
from dsmpacs.web.shares import bp


@bp.route("/admin/referring", methods=["GET", "POST"])
@auth.requires(Permission.ADMIN)
def referring_names():
    links = share_session.referring()
    users = [u for u in services().users.list() if u.role is Role.REFERRING]
    if request.method == "POST":
        username = request.form.get("username", "")
        if username not in {u.username for u in users}:
            notify("referring.unknown", "error")
        else:
            name = request.form.get("dicom_name", "")
            links.link(username, name, by=auth.current_user().username)
            audit.record(AuditAction.USER_CHANGE, detail=f"{username}: referring physician name {name.strip()!r}")
            notify("referring.saved", username=username)
        return redirect(url_for("shares.referring_names"))
    return render_template("shares/referring.html", users=users, names=links.links())
