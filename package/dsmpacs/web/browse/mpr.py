"""3D in the viewer: the MPR page, the volume's description and its planes as images.

A thin adapter over imaging/volume.py (the volume, built once per series and
kept in a VolumeCache within viewer_volume_cache_mb) and imaging/mpr.py (the
planes). Access and audit are the viewer's: VIEW for every route (the
blueprint's), corrupt instances refused with 410, a `view` row per user and
study every 10 minutes.
"""
from __future__ import annotations

import hashlib
import logging
import time

from flask import abort, current_app, jsonify, render_template, request, url_for

from dsmpacs.archive.browse import study_detail, study_files
from dsmpacs.archive.uids import is_valid_uid
from dsmpacs.imaging import mpr as planes
from dsmpacs.imaging.render import FORMATS, RenderError
from dsmpacs.imaging.volume import Volume, VolumeError, VolumeTooLarge, may_form_volume
from dsmpacs.imaging.volume_cache import VolumeCache
from dsmpacs.web import audit
from dsmpacs.web.browse import bp
from dsmpacs.web.browse.study import image_response, refuse_corrupt
from dsmpacs.web.browse.viewer import _number
from dsmpacs.web.i18n import _
from dsmpacs.web.services import services

log = logging.getLogger(__name__)

MAX_SLAB_MM = 2000.0
RECHECK_SECONDS = 60.0
ROTATE_STEP = 10                     # degrees between frames of the rotating cine (the page's choice)


def volume_series(study_uid: str) -> dict[str, str]:
    """Series of the study that can make a volume -> their MPR page URL (index only)."""
    by_series: dict[str, list] = {}
    for f in study_files(services().archive.index, study_uid):
        by_series.setdefault(f.series_instance_uid, []).append((f.sop_class_uid, f.frames))
    return {uid: url_for("studies.mpr", study=study_uid, series=uid)
            for uid, rows in by_series.items() if may_form_volume(rows)}


def _cache() -> VolumeCache:
    budget = services().settings.viewer_volume_cache_mb * 2 ** 20
    cache = current_app.extensions.get("dsmpacs.volumes")
    if cache is None or cache.budget != budget:
        cache = current_app.extensions.setdefault("dsmpacs.volumes", VolumeCache(budget))
    return cache


def _volume(study_uid: str, series_uid: str) -> tuple[Volume, str]:
    """The series' volume and a tag naming its files' exact contents (for ETags)."""
    if not (is_valid_uid(study_uid) and is_valid_uid(series_uid)):
        abort(404)
    files = study_files(services().archive.index, study_uid, series_uid)
    if not files:
        abort(404)
    # The index's hashes name the contents (a same-size alteration is the verification
    # job's to find, as for any render).
    key = (study_uid, series_uid, tuple(f.sha256 for f in files))
    _refuse_corrupt(key, files)
    storage = services().archive.storage
    try:
        volume = _cache().get(key, lambda: [storage.path(f.path) for f in files])
    except VolumeTooLarge as exc:
        log.warning("3D of series %s refused: %s", series_uid, exc)
        abort(413, _(exc.key, **exc.params))
    except VolumeError as exc:
        log.info("no 3D for series %s: %s", series_uid, exc)
        abort(422, _(exc.key, **exc.params))
    return volume, hashlib.sha256(repr(key).encode()).hexdigest()[:20]


def _refuse_corrupt(key, files) -> None:
    """410 for a corrupt instance, as the viewer answers. The index's mark is read on
    every request; the files' sizes (a stat each, 30 ms for 300 slices) when the
    volume is first asked for and again every RECHECK_SECONDS: every plane of a
    scroll asks, and the planes come from memory, not from the files."""
    for f in files:
        if f.corrupt:
            refuse_corrupt(f)
    checked = current_app.extensions.setdefault("dsmpacs.volume_checked", {})
    now = time.monotonic()
    if now - checked.get(key, -RECHECK_SECONDS) < RECHECK_SECONDS:
        return
    for f in files:
        refuse_corrupt(f)
    if len(checked) > 256:
        checked.clear()
    checked[key] = now


@bp.route("/viewer/mpr")
def mpr():
    study_uid, series_uid = request.args.get("study", ""), request.args.get("series", "")
    if not (is_valid_uid(study_uid) and is_valid_uid(series_uid)):
        abort(400, "study=<StudyInstanceUID>&series=<SeriesInstanceUID> are required")
    detail = study_detail(services().archive.index, study_uid)
    series = next((s for s in detail.series if s.series_instance_uid == series_uid), None) if detail else None
    if series is None:
        abort(404)
    audit.record_view(study_uid, detail="3D")
    base = url_for("studies.mpr_volume", study_uid=study_uid, series_uid=series_uid)
    return render_template("studies/mpr.html", d=detail, series=series,
                           base=base.rsplit("/", 1)[0], rotate_step=ROTATE_STEP)


@bp.route("/viewer/mpr/<study_uid>/<series_uid>/volume.json")
def mpr_volume(study_uid: str, series_uid: str):
    """Shape (S, P, L voxels), spacing (mm), whether it is assumed, default window and
    presets: what the page needs to place slices, crosshairs and windows."""
    volume, _tag = _volume(study_uid, series_uid)
    nz, ny, nx = volume.shape
    return jsonify({
        "shape": [nz, ny, nx], "spacing": list(volume.spacing), "axes": ["S", "P", "L"],
        "positions": {"axial": nz, "coronal": ny, "sagittal": nx},
        "assumed": volume.assumed, "source": volume.source,
        "window": volume.window.as_dict(), "presets": [p.as_dict() for p in volume.presets],
        "bytes": volume.nbytes, "build_seconds": round(volume.build_seconds, 3),
        "rotate_step": ROTATE_STEP,
    })


def _triple(name: str) -> tuple[float, float, float] | None:
    raw = request.args.get(name, "")
    if not raw:
        return None
    try:
        values = tuple(float(v) for v in raw.split(","))
    except ValueError:
        abort(400, f"{name} must be three numbers")
    if len(values) != 3 or not all(v == v and abs(v) < 1e9 for v in values):
        abort(400, f"{name} must be three numbers")
    return values


def _common() -> tuple[tuple[float, float] | None, int, str]:
    center, width = _number("wc"), _number("ww")
    window = (center, width) if center is not None and width is not None else None
    if window is not None and width < 1:
        abort(400, "ww must be at least 1")
    size = _number("size")
    max_size = int(min(max(size, 16), planes.MAX_SIZE)) if size is not None else planes.DEFAULT_SIZE
    return window, max_size, request.query_string.decode("ascii", "replace")


@bp.route("/viewer/mpr/<study_uid>/<series_uid>/<plane>.<fmt>")
def mpr_plane(study_uid: str, series_uid: str, plane: str, fmt: str):
    """One plane: ?pos= (voxel index along the plane's normal axis), ?slab= (mm),
    ?mode=mip|avg|min, ?wc=&ww=, ?size=; oblique: ?point=S,P,L (voxel indices) and
    ?a=&b= (degrees) or ?normal=L,P,S."""
    if fmt not in FORMATS or plane not in (*planes.PLANES, "oblique"):
        abort(404)
    window, max_size, query = _common()
    slab = _number("slab") or 0.0
    if not 0 <= slab <= MAX_SLAB_MM:
        abort(400, f"slab must be 0 to {MAX_SLAB_MM:g} mm")
    mode = request.args.get("mode", "mip")
    if mode not in planes.MODES:
        abort(400, "mode must be mip, avg or min")
    options = {"slab": slab, "mode": mode, "max_size": max_size}
    if plane == "oblique":
        options.update(point=_triple("point"), normal=_triple("normal"),
                       angles=(_number("a") or 0.0, _number("b") or 0.0))
    else:
        options["position"] = _number("pos")
    volume, tag = _volume(study_uid, series_uid)
    audit.record_view(study_uid, detail="3D")
    etag = f"m-{tag}-{plane}-{fmt}-{hashlib.sha256(query.encode()).hexdigest()[:16]}"
    try:
        return image_response(lambda: planes.render_plane(volume, plane, window=window, fmt=fmt, **options),
                              etag)
    except RenderError as exc:
        abort(400, str(exc))


@bp.route("/viewer/mpr/<study_uid>/<series_uid>/rotate/<int:angle>.<fmt>")
def mpr_rotate(study_uid: str, series_uid: str, angle: int, fmt: str):
    """The MIP seen from ``angle`` degrees around the vertical axis (?wc=&ww=&size=).
    Each angle's projection is computed once and kept with the volume."""
    if fmt not in FORMATS:
        abort(404)
    window, max_size, query = _common()
    # A cine frame: small by default, at most twice that on request.
    max_size = planes.ROTATE_SIZE if _number("size") is None else min(max_size, planes.ROTATE_SIZE * 2)
    angle %= 360
    volume, tag = _volume(study_uid, series_uid)
    audit.record_view(study_uid, detail="3D")
    etag = f"mr-{tag}-{angle}-{fmt}-{hashlib.sha256(query.encode()).hexdigest()[:16]}"

    def make():
        values = volume.derive(f"rotate-{angle}-{max_size}",
                               lambda: planes.rotating_mip(volume, angle, max_size=max_size))
        _cache().trim()
        return planes.encode(values, window or volume.window, fmt=fmt, monochrome1=volume.monochrome1)

    try:
        return image_response(make, etag)
    except RenderError as exc:
        abort(400, str(exc))
