"""The reading worklist page: tasks by urgency, filtered by state, priority and
institution; a coordinator assigns a task to any radiologist and keeps the
rules, a radiologist claims and releases. Laid out as cards so it reads on a
phone (390 px wide).

Thin adapter over archive/reading.py (tasks, grants, events) and
archive/reading_rules.py; who sees what is web/reading/access.py. Every change is
audited; the forms carry the CSRF token. The same tasks are UPS workitems at
/dicom-web/workitems (web/dicomweb/ups.py). See docs/workflow.md.
"""
from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request, url_for
from werkzeug.exceptions import Forbidden

from dsmpacs.archive import reading as domain
from dsmpacs.archive.reading import STATES, ReadingError, Task
from dsmpacs.archive.reading_rules import PRIORITIES
from dsmpacs.archive.users import Role, Users
from dsmpacs.web import audit, auth
from dsmpacs.web.i18n import notify
from dsmpacs.web.reading.access import administered, coordinates_any, is_coordinator, may_read, visible
from dsmpacs.web.services import services

bp = Blueprint("reading", __name__)
PAGE_LIMIT = 200


@bp.app_context_processor
def _nav() -> dict:
    return {"may_read_worklist": may_read}


@bp.before_request
def _readers_only():
    if not may_read():
        audit.record_refusal(403, "needs a reading role")
        raise Forbidden("reading")


def _reading() -> domain.Reading:
    return services().archive.reading


def _readers() -> list[str]:
    """Who can be assigned: radiologists and admins of every institution."""
    return sorted(a.username for a in Users(services().archive.index).list()
                  if a.role in (Role.RADIOLOGIST, Role.ADMIN) and not getattr(a, "disabled", False))


def _visible_task(task_id: int) -> Task:
    try:
        task = _reading().get(task_id)
    except ReadingError:
        abort(404)
    if not visible(task):
        abort(404)
    return task


def _audit(action: str, task: Task, detail: str) -> None:
    audit.record(action, study_instance_uid=task.study_instance_uid, patient_id=task.patient_id,
                 patient_name=task.patient_name, detail=f"task {task.id}: {detail}")


@bp.route("/")
def index():
    user = auth.current_user()
    state = request.args.get("state", "open")
    states = domain.OPEN if state == "open" else (state,) if state in STATES else ()
    priority = request.args.get("priority", "")
    institution = request.args.get("institution", "")[:64]
    mine = request.args.get("mine", "") == "1"
    tasks = _reading().tasks(states=states, priority=priority if priority in PRIORITIES else "",
                             institution=institution, assignee=user.username if mine else None,
                             visible=visible, limit=PAGE_LIMIT)
    coordinator = coordinates_any()
    return render_template("reading/index.html", tasks=tasks, states=STATES, state=state,
                           priorities=PRIORITIES, priority=priority, institution=institution, mine=mine,
                           coordinator=coordinator, readers=_readers() if coordinator else [],
                           rules=_reading().rules.all() if coordinator else [], is_coordinator=is_coordinator,
                           ups_states=domain.UPS_STATE)


def _back():
    return redirect(url_for("reading.index", **{k: v for k, v in request.args.items()}))


@bp.route("/<int:task_id>/assign", methods=["POST"])
def assign(task_id: int):
    task = _visible_task(task_id)
    if not is_coordinator(task):
        audit.record_refusal(403, "needs a reading coordinator")
        raise Forbidden("coordinator")
    assignee = request.form.get("assignee", "")[:64]
    if assignee not in _readers():
        notify("reading.refused", "error")
        return _back()
    try:
        done = _reading().assign(task_id, assignee, by=auth.current_user().username)
    except ReadingError:
        notify("reading.refused", "error")
        return _back()
    _audit(domain.AUDIT_ASSIGN, done, f"assigned to {assignee}"
           + (f" (was {task.assignee})" if task.assignee and task.assignee != assignee else ""))
    notify("reading.assigned", reader=assignee)
    return _back()


@bp.route("/<int:task_id>/claim", methods=["POST"])
def claim(task_id: int):
    _visible_task(task_id)
    user = auth.current_user()
    try:
        done = _reading().claim(task_id, user.username)
    except ReadingError:
        notify("reading.refused", "error")
        return _back()
    _audit(domain.AUDIT_CLAIM, done, f"claimed by {user.username}")
    notify("reading.claimed")
    return _back()


@bp.route("/<int:task_id>/release", methods=["POST"])
def release(task_id: int):
    task = _visible_task(task_id)
    user = auth.current_user()
    if task.assignee != user.username and not is_coordinator(task):
        audit.record_refusal(403, "only the assignee or a coordinator releases a task")
        raise Forbidden("release")
    try:
        done = _reading().release(task_id, by=user.username)
    except ReadingError:
        notify("reading.refused", "error")
        return _back()
    _audit(domain.AUDIT_RELEASE, done, f"released from {task.assignee}; its grants revoked")
    notify("reading.released")
    return _back()


def _may_rule(institution: str) -> bool:
    """The global admin keeps every rule; an institution-admin those of their institution."""
    user = auth.current_user()
    return user.is_admin or (bool(institution) and institution in administered(user.username))


@bp.route("/rules", methods=["POST"])
def add_rule():
    form = request.form
    if not _may_rule(form.get("institution", "")):
        audit.record_refusal(403, "needs a reading coordinator of the rule's institution")
        raise Forbidden("coordinator")
    try:
        rule = _reading().rules.add(
            name=form.get("name", "")[:64], institution=form.get("institution", "")[:64],
            modality=form.get("modality", "")[:16], pattern=form.get("pattern", "")[:128],
            assignee=form.get("assignee", "")[:64], priority=form.get("priority", "MEDIUM"),
            due_hours=int(form.get("due_hours", "24") or 24), include_priors=form.get("include_priors") == "1",
            created_by=auth.current_user().username)
    except ValueError:
        notify("reading.rule_refused", "error")
        return redirect(url_for("reading.index"))
    audit.record(domain.AUDIT_RULE, detail=f"rule {rule.name} added: institution {rule.institution or '*'}, "
                                           f"modality {rule.modality or '*'}, pattern {rule.pattern or '*'} -> "
                                           f"{rule.assignee or 'pool'}, {rule.priority}, {rule.due_hours} h, "
                                           f"priors {'yes' if rule.include_priors else 'no'}")
    notify("reading.rule_added", name=rule.name)
    return redirect(url_for("reading.index"))


@bp.route("/rules/<int:rule_id>/delete", methods=["POST"])
def delete_rule(rule_id: int):
    rule = next((r for r in _reading().rules.all() if r.id == rule_id), None)
    if rule is None:
        abort(404)
    if not _may_rule(rule.institution):
        audit.record_refusal(403, "needs a reading coordinator of the rule's institution")
        raise Forbidden("coordinator")
    _reading().rules.delete(rule_id)
    audit.record(domain.AUDIT_RULE, detail=f"rule {rule.name} deleted")
    return redirect(url_for("reading.index"))
