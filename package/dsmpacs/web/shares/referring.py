"""The administrator links each referring physician (a member with the role
"referring" in some institution, archive/visibility.py) to the DICOM name their
patients' studies carry in Referring Physician's Name (archive/referring.py)."""
from __future__ import annotations

from flask import redirect, render_template, request, url_for

from dsmpacs.archive.audit import AuditAction
from dsmpacs.archive.models import Membership, User
from dsmpacs.archive.users import Permission
from dsmpacs.web import audit, auth
from dsmpacs.web.i18n import notify
from dsmpacs.web.services import services
from dsmpacs.web.shares import bp


def _referring_members() -> list[str]:
    index = services().archive.index
    with index.read():
        rows = (User.select(User.username).join(Membership, on=(Membership.user == User.id))
                .where(Membership.role == "referring").distinct().order_by(User.username))
        return [r.username for r in rows]


@bp.route("/admin/referring", methods=["GET", "POST"])
@auth.requires(Permission.ADMIN)
def referring_names():
    links = services().archive.referring
    users = _referring_members()
    if request.method == "POST":
        username = request.form.get("username", "")
        if username not in users:
            notify("referring.unknown", "error")
        else:
            name = request.form.get("dicom_name", "")
            links.link(username, name, by=auth.current_user().username)
            audit.record(AuditAction.USER_CHANGE, detail=f"{username}: referring physician name {name.strip()!r}")
            notify("referring.saved", username=username)
        return redirect(url_for("shares.referring_names"))
    return render_template("shares/referring.html", users=users, names=links.links())
