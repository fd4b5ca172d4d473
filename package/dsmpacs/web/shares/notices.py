"""The notification bell (unread count in the nav) and the page listing them.

The overdue check (archive/notifications.py ``check_overdue``) runs in a background
thread of the web process every ``overdue_check_seconds`` (dsmpacs/app.py
``start_overdue_checks``), and also from here at most once a minute when a page
with the bell is drawn, so a notice is there when the bell is looked at.
"""
from __future__ import annotations

import threading
import time

from flask import current_app, redirect, render_template, request, url_for

from dsmpacs.web import auth, share_session
from dsmpacs.web.i18n import notify
from dsmpacs.web.services import services
from dsmpacs.web.shares import bp

OVERDUE_EVERY_SECONDS = 60
_lock = threading.Lock()


def _maybe_check_overdue() -> None:
    state = current_app.extensions.setdefault("dsmpacs.overdue_check", {"at": 0.0})
    now = time.monotonic()
    with _lock:
        if now - state["at"] < OVERDUE_EVERY_SECONDS:
            return
        state["at"] = now
    services().archive.notifications.check_overdue()


def unread_notifications() -> int:
    user = auth.current_user()
    if user is None or share_session.current_share() is not None:
        return 0
    _maybe_check_overdue()
    return services().archive.notifications.unread_count(user.username)


@bp.app_context_processor
def _bell() -> dict:
    return {"unread_notifications": unread_notifications}


@bp.route("/notifications")
def notifications():
    user = auth.current_user()
    _maybe_check_overdue()
    store = services().archive.notifications
    return render_template("shares/notifications.html", notes=store.list(user.username),
                           address=store.address(user.username), mail_on=store.mailer is not None)


@bp.route("/notifications/email", methods=["POST"])
def set_email():
    user = auth.current_user()
    try:
        services().archive.notifications.set_address(user.username, request.form.get("address", "")[:254])
    except ValueError:
        notify("notice.email_invalid", "error")
    else:
        notify("notice.email_saved")
    return redirect(url_for("shares.notifications"))


@bp.route("/notifications/read", methods=["POST"])
def mark_read():
    user = auth.current_user()
    raw = request.form.get("id", "")
    services().archive.notifications.mark_read(user.username, int(raw) if raw.isdigit() else None)
    return redirect(url_for("shares.notifications"))
