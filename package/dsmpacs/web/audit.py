"""Audit records from web views: the acting user and the client address filled in.

``record`` for any action; ``record_view`` for looking at a study, which a
viewer does through dozens of requests (pages, frames, thumbnails): one row
per user and study every few minutes is the trail, not one per request.
"""
from __future__ import annotations

import threading
import time

from flask import current_app, g, request

from dsmpacs.archive.audit import AuditAction

VIEW_DEDUP_SECONDS = 600


def _actor() -> str:
    user = g.get("user")
    return user.username if user is not None else "anonymous"


def record(action: AuditAction | str, *, study_instance_uid: str = "", detail: str = "",
           outcome: str = "ok", actor: str | None = None) -> None:
    from dsmpacs.web.services import services

    services().audit.record(actor if actor is not None else _actor(), action,
                            study_instance_uid=study_instance_uid, detail=detail,
                            address=request.remote_addr or "", outcome=outcome)


class _Recent:
    def __init__(self):
        self.lock = threading.Lock()
        self.seen: dict[tuple[str, ...], float] = {}

    def first_in_a_while(self, key: tuple[str, ...]) -> bool:
        now = time.monotonic()
        with self.lock:
            if len(self.seen) > 5000:
                self.seen = {k: t for k, t in self.seen.items() if now - t < VIEW_DEDUP_SECONDS}
            last = self.seen.get(key)
            if last is not None and now - last < VIEW_DEDUP_SECONDS:
                return False
            self.seen[key] = now
            return True


def record_once(key: tuple, action: AuditAction | str, **kwargs) -> bool:
    """``record`` unless the same key was recorded within VIEW_DEDUP_SECONDS
    (in this process). Returns whether a row was written."""
    recent = current_app.extensions.setdefault("dsmpacs.audit_recent", _Recent())
    if not recent.first_in_a_while(tuple(str(k) for k in key)):
        return False
    record(action, **kwargs)
    return True


def record_view(study_instance_uid: str, detail: str = "", action: AuditAction = AuditAction.VIEW) -> None:
    """Record that the current user looked at a study, at most once per
    VIEW_DEDUP_SECONDS per user, study and action."""
    action_value = action.value if isinstance(action, AuditAction) else str(action)
    record_once((_actor(), action_value, study_instance_uid), action,
                study_instance_uid=study_instance_uid, detail=detail)
