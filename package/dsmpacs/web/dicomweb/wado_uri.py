"""WADO-URI (PS3.18 chapter 9): GET /wado?requestType=WADO&studyUID=&seriesUID=&objectUID=.

``contentType=application/dicom`` returns the stored file byte for byte (or a
lossless conversion when ``transferSyntax`` names another syntax);
``image/jpeg`` (the default) and ``image/png`` return a rendered image once the
imaging package provides one.
"""
from __future__ import annotations

from flask import Response, request

from dsmpacs.archive.transcode import can_convert
from dsmpacs.archive.users import Permission
from dsmpacs.web import audit, auth
from dsmpacs.web.dicomweb import multipart
from dsmpacs.web.dicomweb.common import fail, file_of, select, uri_bp
from dsmpacs.web.dicomweb.wado import DICOM, _converted
from dsmpacs.web.services import services

IMAGES = ("image/jpeg", "image/png")


def _render_module():
    try:
        from dsmpacs.imaging import render
    except ImportError:
        return None
    return render


@uri_bp.get("/wado")
@auth.requires(Permission.VIEW)
def wado():
    args = request.args
    if args.get("requestType", "") != "WADO":
        fail(400, "requestType must be WADO")
    uids = [args.get(name, "").strip() for name in ("studyUID", "seriesUID", "objectUID")]
    if not all(uids):
        fail(400, "studyUID, seriesUID and objectUID are required")
    stored = select(*uids)[0]
    wanted = [t.split(";")[0].strip().lower() for t in args.get("contentType", "image/jpeg").split(",")]
    wanted = [t for t in wanted if t]
    audit.record_view(uids[0], detail="WADO-URI")
    for media in wanted:
        if media in (DICOM, "application/*", "*/*"):
            return _dicom(stored, args.get("transferSyntax", "").strip())
        if media in IMAGES or media == "image/*":
            render = _render_module()
            if render is None:
                continue
            fmt = "png" if media == "image/png" else "jpeg"
            frame = args.get("frameNumber", "1")
            if not frame.isdigit() or int(frame) < 1:
                fail(400, "frameNumber must be a positive integer")
            body = render.render(file_of(stored), int(frame) - 1, fmt=fmt)
            return Response(body, status=200, content_type=f"image/{fmt}")
    fail(406, f"contentType {args.get('contentType', 'image/jpeg')[:80]!r} cannot be produced "
              "(application/dicom is always available)")


def _dicom(stored, transfer_syntax: str) -> Response:
    path = file_of(stored)
    if transfer_syntax in ("", "*", stored.transfer_syntax_uid):
        part = multipart.Part(DICOM, path=path)
    elif can_convert(stored.transfer_syntax_uid, transfer_syntax):
        tmp = services().archive.storage.tmp_dir
        part = multipart.Part(DICOM, chunks=lambda: _converted(path, transfer_syntax, tmp))
    else:
        fail(406, f"stored in {stored.transfer_syntax_uid}; no lossless conversion to {transfer_syntax[:64]}")
    response = Response(part.body(), status=200, content_type=DICOM, direct_passthrough=True)
    if part.size() is not None:
        response.content_length = part.size()
    return response
