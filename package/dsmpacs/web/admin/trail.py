"""The audit trail, newest first, filtered by user, action, patient or study, with the
state of its chain (intact, or broken at record N)."""
from __future__ import annotations

from flask import render_template, request

from dsmpacs.archive.audit import AuditAction
from dsmpacs.web import audit
from dsmpacs.web.admin import PAGE_SIZE, bp, page_args
from dsmpacs.web.services import services


@bp.route("/audit")
def audit_trail():
    page, offset = page_args()
    filters = {"actor": request.args.get("actor", "").strip()[:64] or None,
               "action": request.args.get("action", "").strip()[:32] or None,
               "patient_id": request.args.get("patient", "").strip()[:64] or None,
               "study_instance_uid": request.args.get("study", "").strip()[:64] or None}
    trail = services().audit
    # Reading the trail is itself audited (once per user in a while, not per page).
    audit.record_once(("audit-read", audit._actor()), AuditAction.AUDIT_READ,
                      detail="audit trail page")
    chain = trail.status(services().settings.audit_page_verify_rows)
    entries = trail.recent(limit=PAGE_SIZE + 1, offset=offset, **filters)
    return render_template("admin/audit.html", entries=entries[:PAGE_SIZE], has_next=len(entries) > PAGE_SIZE,
                           page=page, actions=[a.value for a in AuditAction], chain=chain,
                           full_at=trail.last_full_verification(),
                           actor=filters["actor"] or "", action=filters["action"] or "",
                           patient=filters["patient_id"] or "", study=filters["study_instance_uid"] or "")
