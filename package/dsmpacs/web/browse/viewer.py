"""The viewer: a page, JSON describing a study's series and images, and frames
rendered on the server (window/level, DSA subtraction, pixel shift, road map) as PNG,
JPEG or WebP.

The browser never decodes DICOM: phones and thin clients get plain images.
"""
from __future__ import annotations

import logging
import math

from flask import abort, jsonify, render_template, request, url_for

from dsmpacs.archive.browse import instance_file, study_detail, study_files
from dsmpacs.archive.uids import is_valid_uid
from dsmpacs.imaging import dsa
from dsmpacs.imaging import render as rendering
from dsmpacs.imaging.calibration import calibration_of
from dsmpacs.imaging.overlay import overlay
from dsmpacs.imaging.subtraction import supports_subtraction
from dsmpacs.imaging.volume import may_form_volume
from dsmpacs.web import audit
from dsmpacs.web.browse import bp
from dsmpacs.web.browse.study import image_response, refuse_corrupt
from dsmpacs.web.filters import dicom_date, person_name
from dsmpacs.web.services import services

log = logging.getLogger(__name__)

MAX_RENDER_SIZE = 4096
# Series whose objects are not pictures: presentation states and key-object notes
# (drawn over the images they reference), reports (SR, encapsulated PDF), registrations
# and RT structures. The viewer lists no frames for them.
NON_IMAGE_MODALITIES = frozenset({"PR", "KO", "SR", "DOC", "REG", "RTSTRUCT", "RTPLAN", "RTRECORD"})


@bp.route("/viewer")
def viewer():
    studies = [request.args.get("study", ""), request.args.get("compare", "")]
    studies = [s for s in studies if s]
    if not studies or not all(is_valid_uid(s) for s in studies):
        abort(400, "study=<StudyInstanceUID> is required")
    index = services().archive.index
    details = [study_detail(index, s) for s in studies]
    if any(d is None for d in details):
        abort(404)
    for uid in studies:
        audit.record_view(uid, detail="viewer")
    return render_template("studies/viewer.html", details=details)


@bp.route("/viewer/studies/<study_uid>.json")
def study_json(study_uid: str):
    """The study's series, each with its images as (instance, frame count) in order."""
    detail = study_detail(services().archive.index, study_uid)
    if detail is None:
        abort(404)
    files = study_files(services().archive.index, study_uid)
    series = []
    for s in detail.series:
        image = s.modality.upper() not in NON_IMAGE_MODALITIES
        series.append({
            "uid": s.series_instance_uid, "number": s.series_number, "modality": s.modality,
            "description": s.description, "frames": s.frames if image else 0, "image": image,
            "subtraction": s.modality.upper() in ("XA", "XRF", "RF"),
            **_volume_links(study_uid, s.series_instance_uid, files),
            "thumbnail": url_for("studies.thumbnail", study_uid=study_uid, series_uid=s.series_instance_uid),
            "instances": [{"uid": f.sop_instance_uid, "frames": f.frames, "number": f.instance_number}
                          for f in files if f.series_instance_uid == s.series_instance_uid],
        })
    return jsonify({
        "study": study_uid, "patient_name": person_name(detail.patient.patient_name),
        "patient_id": detail.patient.patient_id, "date": dicom_date(detail.study.study_date),
        "description": detail.study.study_description, "series": series,
    })


def _volume_links(study_uid: str, series_uid: str, files) -> dict:
    """viewer-mpr: whether the series can open in 3D (from the index alone) and where."""
    volume = may_form_volume((f.sop_class_uid, f.frames) for f in files if f.series_instance_uid == series_uid)
    return {"volume": volume,
            "mpr_url": url_for("studies.mpr", study=study_uid, series=series_uid) if volume else None}


def _file_or_404(study_uid: str, series_uid: str, sop_uid: str):
    found = instance_file(services().archive.index, study_uid, series_uid, sop_uid)
    if found is None:
        abort(404)
    refuse_corrupt(found)
    return found, services().archive.storage.path(found.path)


@bp.route("/viewer/info/<study_uid>/<series_uid>/<sop_uid>.json")
def instance_info(study_uid: str, series_uid: str, sop_uid: str):
    """What the viewer needs to show an instance: presets, frame rate, the frame of peak
    contrast and the window render uses by default (for ?frame=F; with ?mask=M the run's
    one subtraction window, also as "run_window")."""
    found, path = _file_or_404(study_uid, series_uid, sop_uid)
    frame, mask = _number("frame"), _number("mask")
    try:
        layout = rendering.layout_of(path)
        if layout is None:
            return jsonify({"frames": 0, "image": False})
        frame_index = int(frame) if frame is not None else layout.number_of_frames // 2
        if not 0 <= frame_index < layout.number_of_frames or (
                mask is not None and not 0 <= int(mask) < layout.number_of_frames):
            abort(404)
        window = rendering.default_window(path, frame_index, int(mask) if mask is not None else None)
    except (rendering.RenderError, OSError, ValueError) as exc:
        return jsonify({"frames": found.frames, "image": False, "error": str(exc)})
    try:
        peak = dsa.peak_frame(path)
    except (rendering.RenderError, OSError, ValueError):
        peak = layout.number_of_frames // 2      # a run that cannot be scored still opens
    extra = {}
    if mask is not None and window is not None:
        extra["run_window"] = window.as_dict()
    return jsonify({
        "image": True, "frames": layout.number_of_frames, "rows": layout.rows, "columns": layout.columns,
        "frame_rate": rendering.frame_rate(layout),
        "presets": [p.as_dict() for p in rendering.window_presets(layout)],
        "window": window.as_dict() if window else None,
        "grey": window is not None,
        "subtraction": window is not None and supports_subtraction(layout.header),
        "photometric": layout.photometric_interpretation,
        "overlay": overlay(layout.header),
        "peak_frame": peak,
        **extra,
        "calibration": calibration_of(layout.header),
    })


def _number(name: str) -> float | None:
    value = request.args.get(name, "")
    if value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        abort(400, f"{name} must be a number")
    if not math.isfinite(number):
        abort(400, f"{name} must be a number")
    return number


@bp.route("/render/<study_uid>/<series_uid>/<sop_uid>/<int:frame>.<fmt>")
def render_frame(study_uid: str, series_uid: str, sop_uid: str, frame: int, fmt: str):
    """One frame as an image (.png, .jpeg, .webp): ?wc=&ww= (window), ?mask=N (subtract
    frame N, XA/XRF; without wc/ww the run's one subtraction window), ?shift=dx,dy (move
    the mask by sub-pixel amounts), ?roadmap=min|max (minimum or maximum over the run
    instead of the frame), ?q=1..100 (JPEG/WebP quality), ?size=N (fit in N pixels).
    Frames count from 0. The window applied is in the X-Window header (center,width)."""
    if fmt not in rendering.FORMATS:
        abort(404)
    found, path = _file_or_404(study_uid, series_uid, sop_uid)
    center, width = _number("wc"), _number("ww")
    window = (center, width) if center is not None and width is not None else None
    if window is not None and width < 1:
        abort(400, "ww must be at least 1")
    mask = _number("mask")
    mask_index = int(mask) if mask is not None else None
    size = _number("size")
    max_size = int(min(max(size, 16), MAX_RENDER_SIZE)) if size is not None else None
    shift = None
    if request.args.get("shift"):
        try:
            shift = dsa.parse_shift(request.args["shift"])
        except ValueError as exc:
            abort(400, str(exc))
        if shift == (0.0, 0.0):
            shift = None
    roadmap = request.args.get("roadmap") or None
    if roadmap is not None and roadmap not in dsa.ROADMAP_MODES:
        abort(400, "roadmap must be min or max")
    quality = _number("q")
    quality = int(min(max(quality, 1), 100)) if quality is not None else 90
    audit.record_view(study_uid, detail="viewer")
    etag = (f"r-{found.sha256[:24]}-{frame}-{window}-{mask_index}-{max_size}-{fmt}"
            f"-{shift}-{roadmap}-{quality if fmt != 'png' else ''}")
    applied = []

    def make():
        rendered = rendering.render_image(path, frame, window=window, mask_index=mask_index, fmt=fmt,
                                          max_size=max_size, quality=quality, shift=shift, roadmap=roadmap)
        applied.append(rendered.window)
        return rendered
    try:
        response = image_response(make, etag)
    except rendering.FrameNotFound:
        abort(404)
    except rendering.NoPixelData:
        abort(404)
    except rendering.RenderError as exc:
        log.warning("cannot render %s frame %d: %s", sop_uid, frame, exc)
        abort(422, str(exc))
    if applied and applied[0] is not None:
        response.headers["X-Window"] = f"{applied[0].center:g},{applied[0].width:g}"
    return response
