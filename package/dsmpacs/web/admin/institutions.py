"""Institutions (admin only): create them, their members and roles, the
Institution Name aliases that place arriving studies, the binding of remote AEs,
and moving a study to another institution. Thin over archive/institutions.py;
every change is audited (moving a study with the study's UID, so the trail of that
study shows who moved it where)."""
from __future__ import annotations

from flask import redirect, render_template, request, url_for

from dsmpacs.archive.institutions import InstitutionError, Institutions
from dsmpacs.archive.reading import AUDIT_STATE
from dsmpacs.archive.visibility import MEMBERSHIP_ROLES
from dsmpacs.web import audit
from dsmpacs.web.admin import bp
from dsmpacs.web.i18n import notify
from dsmpacs.web.services import services

AUDIT_CHANGE = "institution-change"
AUDIT_MOVE = "study-move"


def _institutions() -> Institutions:
    return Institutions(services().archive.index)


def _page(error: str | None = None, status: int = 200):
    inst = _institutions()
    return render_template("admin/institutions.html", institutions=inst.all(), members=inst.members(),
                           aliases=inst.aliases(), bindings=inst.bindings(), roles=MEMBERSHIP_ROLES,
                           users=[u.username for u in services().users.list()], error=error), status


@bp.route("/institutions")
def institutions():
    return _page()


def _form(*names: str) -> list[str]:
    return [request.form.get(n, "").strip()[:128] for n in names]


@bp.route("/institutions", methods=["POST"])
def institution_change():
    """One endpoint, one ``op`` per form on the page."""
    inst, op = _institutions(), request.form.get("op", "")
    try:
        if op == "create":
            code, name = _form("code", "name")
            made = inst.create(code, name)
            detail = f"created institution {made.code}: {made.name}"
        elif op == "member":
            username, code, role = _form("username", "institution", "role")
            inst.add_member(username, code, role)
            detail = f"{username} is {role} of {code}"
        elif op == "unmember":
            username, code = _form("username", "institution")
            if not inst.remove_member(username, code):
                raise InstitutionError("no such membership", "unknown")
            detail = f"{username} is no longer a member of {code}"
        elif op == "alias":
            name, code = _form("name", "institution")
            inst.add_alias(name, code)
            detail = f"Institution Name {name!r} places studies in {code}"
        elif op == "unalias":
            (name,) = _form("name")
            if not inst.remove_alias(name):
                raise InstitutionError("no such alias", "unknown")
            detail = f"alias {name!r} removed"
        elif op == "bind":
            peer, code = _form("peer", "institution")
            inst.bind_ae(peer, code or None)
            detail = f"remote AE {peer} bound to {code or 'no institution (sees everything)'}"
        elif op == "move":
            uid, code = _form("study_instance_uid", "institution")
            before, after = inst.move_study(uid, code)
            audit.record(AUDIT_MOVE, study_instance_uid=uid, detail=f"institution {before} -> {after} ({code})")
            task = services().archive.reading.for_study(uid)
            if task is not None:
                # The task followed the study (same transaction): its own trail says so.
                audit.record(AUDIT_STATE, study_instance_uid=uid, patient_id=task.patient_id,
                             patient_name=task.patient_name, detail=f"task {task.id} moved to institution {code}")
            notify("admin.institutions.moved")
            return redirect(url_for("admin.institutions"))
        else:
            raise InstitutionError("unknown operation", "invalid")
    except InstitutionError as exc:
        return _page(error=f"admin.institutions.error.{exc.code}", status=400)
    audit.record(AUDIT_CHANGE, detail=detail)
    notify("admin.institutions.saved")
    return redirect(url_for("admin.institutions"))
