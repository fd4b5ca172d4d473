"""Administration pages (admin role only): storage, activity, remote AEs, access
policy, users and tokens, quarantine; and the audit trail (admins and auditors)."""
from __future__ import annotations

from flask import Blueprint, request

from dsmpacs.archive.users import Permission
from dsmpacs.web import auth

bp = Blueprint("admin", __name__)
PAGE_SIZE = 50


AUDIT_ENDPOINTS = {"admin.audit_trail"}


@bp.before_request
def _admins_only():
    auth.require(Permission.AUDIT if request.endpoint in AUDIT_ENDPOINTS else Permission.ADMIN)


@bp.context_processor
def _integrity_alert() -> dict:
    """Every admin page carries the alert while instances are marked corrupt (an
    indexed count, cheap enough for each page)."""
    from dsmpacs.archive.integrity import corrupt_count
    from dsmpacs.web.services import services

    return {"corrupt_count": corrupt_count(services().archive.index)}


@bp.context_processor
def _system_notices() -> dict:
    """Every admin page shows what the administrator must hear about (notices.py): a
    crashed or given-up service, storage filling up, an expiring certificate. Failed
    verification has its own alert above (corrupt_count)."""
    from dsmpacs import notices
    from dsmpacs.web.services import services

    svc = services()
    found = [n for n in notices.current(svc.settings, svc.archive) if n.kind != "verification-failed"]
    return {"system_notices": found}


def page_args() -> tuple[int, int]:
    """(page number from 1, offset) from ?page=."""
    try:
        page = max(1, int(request.args.get("page", "1")))
    except ValueError:
        page = 1
    return page, (page - 1) * PAGE_SIZE


# Each module adds its routes to bp when imported.
from dsmpacs.web.admin import activity, institutions, overview, peers, policy, trail, users  # noqa: E402,F401
