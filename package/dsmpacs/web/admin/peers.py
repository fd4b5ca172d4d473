"""Remote AEs: list, add, edit, remove, and a C-ECHO test with its result."""
from __future__ import annotations

import time

from flask import abort, redirect, render_template, request, url_for

from dsmpacs.archive.activity import OUTGOING, AssociationSummary
from dsmpacs.archive.audit import AuditAction
from dsmpacs.archive.models import utcnow
from dsmpacs.archive.peers import Peer, PeerError
from dsmpacs.web import audit
from dsmpacs.web.admin import bp
from dsmpacs.web.i18n import message, notify
from dsmpacs.web.labels import association_failure_message, peer_error
from dsmpacs.web.services import services

_FLAGS = ("may_store", "may_find", "may_retrieve", "is_move_destination", "tls", "tls_client_cert")


def _peer_from_form() -> Peer:
    form = request.form
    try:
        port = int(form.get("port", "").strip())
    except ValueError:
        raise PeerError("the port must be a number", "port_number") from None
    return Peer(name=form.get("name", "").strip(), ae_title=form.get("ae_title", "").strip(),
                host=form.get("host", "").strip(), port=port,
                description=form.get("description", "").strip()[:255],
                **{flag: form.get(flag) == "on" for flag in _FLAGS})


@bp.route("/peers")
def peers():
    return render_template("admin/peers.html", peers=services().peers.list(), form=None, error=None)


@bp.route("/peers", methods=["POST"])
def peer_add():
    try:
        peer = services().peers.add(_peer_from_form())
    except PeerError as exc:
        return render_template("admin/peers.html", peers=services().peers.list(), form=request.form,
                               error=peer_error(exc)), 400
    audit.record(AuditAction.PEER_ADD, detail=f"{peer.name}: {peer}")
    notify("admin.peers.added", name=peer.name)
    return redirect(url_for("admin.peers"))


@bp.route("/peers/edit/<path:name>", methods=["GET", "POST"])
def peer_edit(name: str):
    registry = services().peers
    current = registry.get(name)
    if current is None:
        abort(404)
    if request.method == "GET":
        return render_template("admin/peer_edit.html", peer=current, form=None, error=None)
    try:
        changed = _peer_from_form()
        # The name is the entry's key (C-MOVE and "send to" refer to it): not renamed here.
        updated = registry.update(name, **{k: getattr(changed, k) for k in changed.__dataclass_fields__
                                           if k != "name"})
    except PeerError as exc:
        return render_template("admin/peer_edit.html", peer=current, form=request.form,
                               error=peer_error(exc)), 400
    audit.record(AuditAction.PEER_CHANGE, detail=f"{name}: {current} -> {updated.name}: {updated}")
    notify("admin.peers.saved", name=updated.name)
    return redirect(url_for("admin.peers"))


@bp.route("/peers/remove/<path:name>", methods=["POST"])
def peer_remove(name: str):
    if not services().peers.remove(name):
        abort(404)
    audit.record(AuditAction.PEER_REMOVE, detail=name)
    notify("admin.peers.removed", name=name)
    return redirect(url_for("admin.peers"))


@bp.route("/peers/echo/<path:name>", methods=["POST"])
def peer_echo(name: str):
    """C-ECHO from this process (the DICOM daemon is not involved); the result
    is shown on the list and kept in the association log."""
    from dsmpacs.dicom.scu import AssociationFailed, echo

    svc = services()
    peer = svc.peers.get(name)
    if peer is None:
        abort(404)
    summary = AssociationSummary(OUTGOING, calling_ae=svc.settings.ae_title, called_ae=peer.ae_title,
                                 peer=f"{peer.host}:{peer.port}", services={"C-ECHO"})
    started = time.monotonic()
    try:
        status = echo(svc.settings, peer)
    except AssociationFailed as exc:
        status, problem, code = None, str(exc), exc.code
    except (OSError, RuntimeError, ValueError) as exc:
        status, problem, code = None, str(exc), "other"
    else:
        problem = code = ""
    ms = int((time.monotonic() - started) * 1000)
    summary.ended_at = utcnow()
    if status == 0:
        summary.completed = 1
        notify("admin.peers.echo_ok", "ok", name=peer.name, ms=ms)
    else:
        summary.outcome = "released" if status is not None else "failed"
        summary.failed = 1
        summary.detail = problem or f"status 0x{(status or 0) & 0xFFFF:04X}"
        if status is None:
            # The reason in the reader's language (address and TLS reason code kept);
            # the full text stays in the association log.
            key, params = association_failure_message(problem) if code != "other" else ("assoc.failure.other", {})
            notify("admin.peers.echo_failed", "error", name=peer.name, reason=message(key, **params))
        else:
            notify("admin.peers.echo_status", "error", name=peer.name, status=f"0x{status & 0xFFFF:04X}")
    svc.activity.record(summary)
    audit.record(AuditAction.PEER_ECHO, detail=f"{peer.name}: {summary.detail or 'success'}",
                 outcome="ok" if status == 0 else "failed")
    return redirect(url_for("admin.peers"))
