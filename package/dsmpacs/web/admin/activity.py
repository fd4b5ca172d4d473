"""Recent associations and transfers with their outcomes, recent studies, quarantine."""
from __future__ import annotations

from flask import render_template, request

from dsmpacs.web.admin import PAGE_SIZE, bp, page_args
from dsmpacs.web.services import services


@bp.route("/activity")
def activity():
    svc = services()
    page, offset = page_args()
    direction = request.args.get("direction") if request.args.get("direction") in ("in", "out") else None
    entries = svc.activity.recent(limit=PAGE_SIZE + 1, offset=offset, direction=direction)
    return render_template("admin/activity.html", entries=entries[:PAGE_SIZE],
                           has_next=len(entries) > PAGE_SIZE, page=page, direction=direction or "",
                           studies=svc.statistics.recent_studies(limit=20) if page == 1 else [])


@bp.route("/quarantine")
def quarantine():
    page, offset = page_args()
    entries = services().statistics.quarantine(limit=PAGE_SIZE + 1, offset=offset)
    return render_template("admin/quarantine.html", entries=entries[:PAGE_SIZE],
                           has_next=len(entries) > PAGE_SIZE, page=page)
