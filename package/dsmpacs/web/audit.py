"""Audit records from web views: the acting user and the client address filled in.

``record`` for any action; ``record_view`` for looking at a study, which a
viewer does through dozens of requests (pages, frames, thumbnails): one row
per user and study every few minutes is the trail, not one per request.
"""
from __future__ import annotations

from flask import current_app, g, request

from dsmpacs.archive.audit import AuditAction, OncePer

VIEW_DEDUP_SECONDS = 600


def _actor() -> str:
    user = g.get("user")
    return user.username if user is not None else "anonymous"


def _role() -> str:
    user = g.get("user")
    return user.role.value if user is not None else ""


def record(action: AuditAction | str, *, study_instance_uid: str = "", detail: str = "",
           outcome: str = "ok", actor: str | None = None, patient_id: str = "",
           patient_name: str = "", role: str | None = None) -> None:
    from dsmpacs.web.services import services

    services().audit.record(actor if actor is not None else _actor(), action,
                            study_instance_uid=study_instance_uid, detail=detail,
                            address=request.remote_addr or "", outcome=outcome,
                            role=_role() if role is None else role,
                            patient_id=patient_id, patient_name=patient_name)


def record_once(key: tuple, action: AuditAction | str, **kwargs) -> bool:
    """``record`` unless the same key was recorded within VIEW_DEDUP_SECONDS
    (in this process). Returns whether a row was written."""
    recent = current_app.extensions.setdefault("dsmpacs.audit_recent", OncePer(VIEW_DEDUP_SECONDS))
    if not recent.first(tuple(str(k) for k in key)):
        return False
    record(action, **kwargs)
    return True


def record_view(study_instance_uid: str, detail: str = "", action: AuditAction = AuditAction.VIEW) -> None:
    """Record that the current user looked at a study, at most once per
    VIEW_DEDUP_SECONDS per user, study and action."""
    action_value = action.value if isinstance(action, AuditAction) else str(action)
    record_once((_actor(), action_value, study_instance_uid), action,
                study_instance_uid=study_instance_uid, detail=detail)


REFUSAL_DEDUP_SECONDS = 60


def record_refusal(status: int, reason: str) -> None:
    """A 401 or 403: recorded once per user, address, status and endpoint a minute, so a
    client hammering a closed door cannot turn every knock into an index write."""
    action = AuditAction.AUTH_REQUIRED if status == 401 else AuditAction.ACCESS_DENIED
    recent = current_app.extensions.setdefault("dsmpacs.audit_refusals", OncePer(REFUSAL_DEDUP_SECONDS))
    if recent.first((_actor(), request.remote_addr or "", status, request.endpoint or request.path[:64])):
        record(action, outcome="refused", detail=f"HTTP {status} {request.method} {request.path}: {reason}")
