"""The audit trail, newest first, filtered by user, action or study."""
from __future__ import annotations

from flask import render_template, request

from dsmpacs.archive.audit import AuditAction
from dsmpacs.web.admin import PAGE_SIZE, bp, page_args
from dsmpacs.web.services import services


@bp.route("/audit")
def audit_trail():
    page, offset = page_args()
    filters = {"actor": request.args.get("actor", "").strip()[:64] or None,
               "action": request.args.get("action", "").strip()[:32] or None,
               "study_instance_uid": request.args.get("study", "").strip()[:64] or None}
    entries = services().audit.recent(limit=PAGE_SIZE + 1, offset=offset, **filters)
    return render_template("admin/audit.html", entries=entries[:PAGE_SIZE], has_next=len(entries) > PAGE_SIZE,
                           page=page, actions=[a.value for a in AuditAction],
                           actor=filters["actor"] or "", action=filters["action"] or "",
                           study=filters["study_instance_uid"] or "")
