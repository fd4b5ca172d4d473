"""The viewer's measurements over HTTP: a thin adapter over archive/annotations.py
(per-user store), archive/derived/saving.py (GSPS and KOS into the study) and
imaging/roi.py (ellipse statistics in modality values).

JSON endpoints under /viewer/annotations/ and /viewer/roi/. They are on the studies
blueprint, so they need VIEW like the viewer itself; PUT, POST and DELETE need the
session's CSRF token (web/csrf.py, sent by DSM.fetch). Saving into the study stores
a new object, as STOW-RS does, so it needs EXPORT and is audited as a store.
"""
from __future__ import annotations

import logging

from flask import abort, jsonify, request

from dsmpacs.archive.annotations import AnnotationError, Annotations, parse_mark
from dsmpacs.archive.audit import AuditAction
from dsmpacs.archive.browse import study_detail
from dsmpacs.archive.database import IndexUnavailable
from dsmpacs.archive.derived import SourceMissing
from dsmpacs.archive.derived.saving import (
    NothingToSave,
    save_key_images,
    save_presentation_state,
    study_presentation_marks,
)
from dsmpacs.archive.uids import is_valid_uid
from dsmpacs.archive.users import Permission
from dsmpacs.imaging import roi
from dsmpacs.imaging.render import RenderError
from dsmpacs.web import audit, auth
from dsmpacs.web.browse import bp
from dsmpacs.web.browse.viewer import _file_or_404
from dsmpacs.web.services import services

log = logging.getLogger(__name__)


def _user() -> str:
    return auth.current_user().username


def _store() -> Annotations:
    return Annotations(services().archive.index)


def _study_or_404(study_uid: str) -> None:
    if not is_valid_uid(study_uid) or study_detail(services().archive.index, study_uid) is None:
        abort(404)


def _body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, "a JSON object is expected")
    return body


@bp.route("/viewer/annotations/<study_uid>.json")
def annotations_of_study(study_uid: str):
    """The signed-in user's annotations on the study, and (read only) those of the
    presentation states stored in it."""
    _study_or_404(study_uid)
    audit.record_view(study_uid, detail="viewer")
    archive = services().archive
    return jsonify({
        "annotations": [m.as_dict() for m in _store().for_study(_user(), study_uid)],
        "presentation_states": study_presentation_marks(archive.index, archive.ingest, study_uid),
    })


@bp.route("/viewer/annotations/<study_uid>/<series_uid>/<sop_uid>/<int:frame>.json", methods=["PUT"])
def put_frame_annotations(study_uid: str, series_uid: str, sop_uid: str, frame: int):
    """Replace the user's annotations on one frame with {"annotations": [...]}."""
    found, _ = _file_or_404(study_uid, series_uid, sop_uid)
    if frame >= found.frames:
        abort(404)
    items = _body().get("annotations")
    if not isinstance(items, list):
        abort(400, "annotations: a list is expected")
    try:
        marks = [parse_mark(item) for item in items]
        for mark, item in zip(marks, items):
            mark.id = item.get("id") if isinstance(item.get("id"), int) else None
        stored = _store().replace_frame(_user(), study_uid, series_uid, sop_uid, frame, marks)
    except AnnotationError as exc:
        abort(400, str(exc))
    audit.record_view(study_uid, detail="viewer")
    return jsonify({"annotations": [m.as_dict() for m in stored]})


@bp.route("/viewer/annotations/<study_uid>/<int:annotation_id>", methods=["DELETE"])
def delete_annotation(study_uid: str, annotation_id: int):
    _study_or_404(study_uid)
    if not _store().delete(_user(), study_uid, annotation_id):
        abort(404)
    return jsonify({"deleted": annotation_id})


def _window(body: dict) -> tuple[float, float] | None:
    window = body.get("window")
    if not isinstance(window, dict):
        return None
    try:
        center, width = float(window["center"]), float(window["width"])
    except (KeyError, TypeError, ValueError):
        abort(400, "window: {center, width} numbers")
    return center, width


def _stored_or_error(kind: str, study_uid: str, saved) -> tuple:
    result, sop_uid = saved
    if not result.archived:
        log.warning("could not store the %s for %s: %s", kind, study_uid, result.message)
        audit.record(AuditAction.STORE, study_instance_uid=study_uid, outcome="failed",
                     detail=f"viewer {kind}: {result.message}"[:1024])
        abort(503, result.message or "not stored")
    audit.record(AuditAction.STORE, study_instance_uid=study_uid, detail=f"viewer {kind} {sop_uid}")
    return jsonify({"sop": sop_uid, "series": result.series_instance_uid, "study": study_uid}), 201


@bp.route("/viewer/annotations/<study_uid>/save", methods=["POST"])
@auth.requires(Permission.EXPORT)
def save_to_study(study_uid: str):
    """The user's annotations on the study become a GSPS in a new series of it."""
    _study_or_404(study_uid)
    archive = services().archive
    try:
        saved = save_presentation_state(archive.index, archive.ingest, _user(), study_uid,
                                        window=_window(_body()))
    except NothingToSave as exc:
        abort(400, str(exc))
    except SourceMissing as exc:
        abort(404, str(exc))
    except IndexUnavailable as exc:
        abort(503, str(exc))
    return _stored_or_error("presentation state", study_uid, saved)


@bp.route("/viewer/keyimages/<study_uid>", methods=["POST"])
@auth.requires(Permission.EXPORT)
def save_key_images_to_study(study_uid: str):
    """{"images": [{"series", "sop", "frame"}], "description"} -> a KOS in a new series."""
    _study_or_404(study_uid)
    body = _body()
    images = body.get("images")
    if not isinstance(images, list) or not images:
        abort(400, "images: a non-empty list is expected")
    try:
        triples = [(str(i["series"]), str(i["sop"]), int(i.get("frame", 0))) for i in images]
    except (KeyError, TypeError, ValueError):
        abort(400, "each image is {series, sop, frame}")
    description = body.get("description", "")
    archive = services().archive
    try:
        saved = save_key_images(archive.index, archive.ingest, _user(), study_uid, triples,
                                description if isinstance(description, str) else "")
    except SourceMissing as exc:
        abort(404, str(exc))
    return _stored_or_error("key object selection", study_uid, saved)


@bp.route("/viewer/roi/<study_uid>/<series_uid>/<sop_uid>/<int:frame>.json")
def ellipse_statistics(study_uid: str, series_uid: str, sop_uid: str, frame: int):
    """Mean, SD, min, max and pixel count of the modality values inside the ellipse
    ?cx=&cy=&rx=&ry= (image pixels) on one frame."""
    _, path = _file_or_404(study_uid, series_uid, sop_uid)
    try:
        values = [float(request.args[k]) for k in ("cx", "cy", "rx", "ry")]
    except (KeyError, ValueError):
        abort(400, "cx, cy, rx and ry are required numbers")
    try:
        found = roi.ellipse_stats(path, frame, *values)
    except roi.FrameNotFound:
        abort(404)
    except (RenderError, ValueError) as exc:
        abort(422, str(exc))
    return jsonify(found.as_dict())
