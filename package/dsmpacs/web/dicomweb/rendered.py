"""WADO-RS rendered and thumbnail resources (PS3.18 8.3.5 and 8.3.6), drawn by
imaging/render.py: JPEG (default) or PNG, with the ``window=center,width[,function]``,
``quality`` and ``viewport=width,height`` parameters as Orthanc reads them.

A study or series renders its first instance with pixel data; an instance its
first frame; a frame itself. A thumbnail is the same picture fitted into 128
pixels unless a viewport says otherwise.
"""
from __future__ import annotations

from flask import Response, request

from dsmpacs.archive.retrieve import StoredInstance
from dsmpacs.archive.users import Permission
from dsmpacs.imaging import render
from dsmpacs.web import audit, auth
from dsmpacs.web.dicomweb import accept
from dsmpacs.web.dicomweb.common import bp, fail, file_of, select
from dsmpacs.web.dicomweb.frames import parse_frame_list

IMAGE_TYPES = ["image/jpeg", "image/png"]
THUMBNAIL_SIZE = 128


def _numbers(name: str, count: int) -> list[float] | None:
    value = request.args.get(name, "").strip()
    if not value:
        return None
    items = [v.strip() for v in value.split(",")]
    try:
        numbers = [float(v) for v in items[:count]]
    except ValueError:
        numbers = []
    if len(numbers) < count:
        fail(400, f"{name} needs {count} numbers separated by commas")
    return numbers


def _picture(instances: list[StoredInstance], frame_index: int, thumbnail: bool) -> Response:
    choice = accept.choose(accept.requested("image/jpeg"), IMAGE_TYPES)
    if choice is None:
        fail(406, "rendered images are available as image/jpeg or image/png")
    media = choice[1]
    window = _numbers("window", 2)
    viewport = _numbers("viewport", 2)
    quality = request.args.get("quality", "90")
    if not quality.isdigit() or not 1 <= int(quality) <= 100:
        fail(400, "quality must be an integer from 1 to 100")
    size = int(max(viewport)) if viewport else (THUMBNAIL_SIZE if thumbnail else None)
    fmt = "png" if media == "image/png" else "jpeg"
    for instance in instances:
        try:
            image = render.render(file_of(instance), frame_index, fmt=fmt, max_size=size or None,
                                  quality=int(quality),
                                  window=(window[0], window[1]) if window else None)
        except render.NoPixelData:
            continue                     # a study's SR or CSA object: try the next instance
        except render.FrameNotFound as exc:
            fail(404, str(exc))
        except render.RenderError as exc:
            fail(400 if window else 500, f"cannot render: {exc}")
        audit.record_view(instance.study_instance_uid, detail="WADO-RS rendered")
        return Response(image, status=200, content_type=media)
    fail(404, "nothing with pixel data to render")


def _register(rule: str, name: str, view) -> None:
    for kind in ("rendered", "thumbnail"):
        def endpoint(kind=kind, **kw):
            return view(kind == "thumbnail", **kw)
        bp.add_url_rule(f"{rule}/{kind}", f"{name}_{kind}",
                        auth.requires(Permission.VIEW)(endpoint), methods=["GET"])


def _study(thumbnail: bool, study: str):
    return _picture(select(study), 0, thumbnail)


def _series(thumbnail: bool, study: str, series: str):
    return _picture(select(study, series), 0, thumbnail)


def _instance(thumbnail: bool, study: str, series: str, instance: str):
    return _picture(select(study, series, instance), 0, thumbnail)


def _frame(thumbnail: bool, study: str, series: str, instance: str, frame_list: str):
    indices = parse_frame_list(frame_list)
    return _picture(select(study, series, instance), indices[0], thumbnail)


_register("/studies/<study>", "study", _study)
_register("/studies/<study>/series/<series>", "series", _series)
_register("/studies/<study>/series/<series>/instances/<instance>", "instance", _instance)
_register("/studies/<study>/series/<series>/instances/<instance>/frames/<frame_list>", "frame", _frame)
