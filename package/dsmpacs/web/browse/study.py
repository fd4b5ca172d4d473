"""A study's page, series thumbnails, ZIP download and deletion."""
from __future__ import annotations

import logging

from flask import Response, abort, redirect, render_template, request, stream_with_context, url_for

from dsmpacs.archive.audit import AuditAction
from dsmpacs.archive.browse import study_detail, study_files
from dsmpacs.archive.deletion import NotFound, delete_study
from dsmpacs.archive.integrity import corrupt_in_study
from dsmpacs.archive.retrieve import describe
from dsmpacs.archive.users import Permission
from dsmpacs.imaging import render as rendering
from dsmpacs.web import audit, auth
from dsmpacs.web.browse import bp
from dsmpacs.web.browse.zipstream import safe_name, stream_zip
from dsmpacs.web.i18n import notify
from dsmpacs.web.services import services

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 128
IMAGE_CACHE = "private, max-age=86400"     # rendered pixels of a stored file never change


def _detail_or_404(study_uid: str):
    detail = study_detail(services().archive.index, study_uid)
    if detail is None:
        abort(404)
    return detail


@bp.route("/studies/<study_uid>")
def study(study_uid: str):
    detail = _detail_or_404(study_uid)
    audit.record_view(study_uid, detail="study page")
    svc = services()
    peers = [p for p in svc.peers.list() if p.is_move_destination] if auth.current_user().can(Permission.SEND) else []
    from dsmpacs.web.browse.mpr import volume_series  # here: mpr imports this module
    return render_template("studies/study.html", d=detail, peers=peers, describe=describe,
                           corrupt=corrupt_in_study(svc.archive.index, study_uid),
                           volumes=volume_series(study_uid))


def refuse_corrupt(found) -> None:
    """410 when archive/integrity.py says this stored file must not be served."""
    reason = services().archive.refusal(found, "web")
    if reason:
        log.warning("%s %s refused: %s", request.method, request.path, reason)
        abort(410, reason)


def image_response(make, etag: str):
    """An image answer with an ETag; 304 when the browser has it already."""
    if request.if_none_match.contains(etag):
        response = Response(status=304)
    else:
        rendered = make()
        response = Response(rendered.data, mimetype=rendered.media_type)
    response.set_etag(etag)
    response.headers["Cache-Control"] = IMAGE_CACHE
    return response


@bp.route("/studies/<study_uid>/series/<series_uid>/thumbnail")
def thumbnail(study_uid: str, series_uid: str):
    """The middle frame of the series' first instance, at most 128 pixels wide or high."""
    files = study_files(services().archive.index, study_uid, series_uid)
    candidates = [f for f in files if f.frames >= 1]
    if not candidates:
        abort(404)
    archive = services().archive
    # A corrupt instance is never rendered; the series shows its next intact one.
    first = next((f for f in candidates if archive.refusal(f, "web") is None), None)
    if first is None:
        refuse_corrupt(candidates[0])
    frame = first.frames // 2
    path = services().archive.storage.path(first.path)
    etag = f"t-{first.sha256[:24]}-{frame}-{THUMBNAIL_SIZE}"
    try:
        return image_response(lambda: rendering.render_image(
            path, frame, fmt="jpeg", max_size=THUMBNAIL_SIZE, quality=80), etag)
    except rendering.RenderError as exc:
        log.info("no thumbnail for series %s: %s", series_uid, exc)
        return redirect(url_for("static", filename="img/no-image.svg"))


@bp.route("/studies/<study_uid>/download.zip")
@auth.requires(Permission.EXPORT)
def download(study_uid: str):
    """Every stored file of the study, unchanged, as a ZIP streamed from disk."""
    detail = _detail_or_404(study_uid)
    files = study_files(services().archive.index, study_uid)
    for f in files:
        # An incomplete ZIP looks complete to whoever receives it: refuse the whole.
        refuse_corrupt(f)
    storage = services().archive.storage
    members = []
    for n, f in enumerate(files, 1):
        folder = f"S{f.series_number if f.series_number is not None else 0:04d}_{safe_name(f.modality, 'OT')}"
        members.append((f"{folder}/I{n:05d}_{safe_name(f.sop_instance_uid)}.dcm", storage.path(f.path), f.size))
    audit.record(AuditAction.EXPORT, study_instance_uid=study_uid,
                 detail=f"zip: {len(files)} instances, {sum(f.size for f in files)} bytes")
    name = f"{safe_name(detail.patient.patient_id, 'patient')}_{safe_name(detail.study.study_date, 'nodate')}.zip"
    response = Response(stream_with_context(stream_zip(members)), mimetype="application/zip")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@bp.route("/studies/<study_uid>/delete", methods=["GET"])
@auth.requires(Permission.DELETE)
def confirm_delete(study_uid: str):
    return render_template("studies/delete.html", d=_detail_or_404(study_uid))


@bp.route("/studies/<study_uid>/delete", methods=["POST"])
@auth.requires(Permission.DELETE)
@auth.reauth_required
def delete(study_uid: str):
    if request.form.get("confirm") != "yes":
        abort(400, "confirmation missing")
    svc = services()
    try:
        done = delete_study(svc.archive.index, svc.archive.storage, study_uid)
    except NotFound:
        abort(404)
    audit.record(AuditAction.DELETE, study_instance_uid=study_uid,
                 detail=f"{done.series} series, {done.instances} instances, {done.bytes} bytes"
                        + (f", {done.files_missing} files were already missing" if done.files_missing else ""))
    notify("study.delete.done", count=done.instances)
    return redirect(url_for("studies.index"))
