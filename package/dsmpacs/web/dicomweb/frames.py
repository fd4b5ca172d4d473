"""WADO-RS frames: /studies/{s}/series/{se}/instances/{i}/frames/{list}.

Each frame is read by file offset (imaging/frames.py), so one frame of a
300-frame run costs one seek. Uncompressed frames go out as
application/octet-stream, little endian, one frame's bytes exactly. Compressed
frames go out as stored (the codestream, no encapsulation items, CP-1509) with
the media type of their syntax, or as application/octet-stream when the client
asks for that with ``transfer-syntax=*`` (cornerstone); a client that wants
uncompressed bytes of a compressed frame gets them decoded. Every part states
its transfer syntax.
"""
from __future__ import annotations

from flask import Response
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian

from dsmpacs.archive.users import Permission
from dsmpacs.imaging.decode import DecodeError, decode_frame
from dsmpacs.imaging.frames import FrameNotFound, PixelDataError, PixelLayout, read_frame, read_layout
from dsmpacs.web import audit, auth
from dsmpacs.web.dicomweb import accept, multipart
from dsmpacs.web.dicomweb.common import bp, fail, file_of, select
from dsmpacs.web.dicomweb.wado import OCTETS, multipart_response

NATIVE = str(ExplicitVRLittleEndian)
# The media type of a compressed frame (PS3.18 Table 8.7.3-4 as dicomweb-client has it).
MEDIA_BY_SYNTAX = {
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg", "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx", "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc", "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.4.100": "video/mpeg2", "1.2.840.10008.1.2.4.101": "video/mpeg2",
    "1.2.840.10008.1.2.4.102": "video/mp4", "1.2.840.10008.1.2.4.103": "video/mp4",
    "1.2.840.10008.1.2.4.104": "video/mp4", "1.2.840.10008.1.2.4.105": "video/mp4",
    "1.2.840.10008.1.2.4.106": "video/mp4",
}


def parse_frame_list(text: str) -> list[int]:
    """``1,3,5`` (1-based, as in the URL) to 0-based indices; 400 when malformed."""
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) < 1:
            fail(400, f"frame numbers are positive integers separated by commas, not {text[:40]!r}")
        out.append(int(item) - 1)
    return out


def plan(layout: PixelLayout) -> tuple[accept.MediaRange, str, str, bool]:
    """(chosen range, part media type, transfer syntax, decode?) for this instance's frames."""
    stored = layout.transfer_syntax_uid
    compressed = layout.encapsulated
    natural = MEDIA_BY_SYNTAX.get(stored, OCTETS) if compressed else OCTETS
    for media_range in accept.requested(f"multipart/related; type={OCTETS}; transfer-syntax=*"):
        ts = media_range.transfer_syntax
        if media_range.covers(natural) and ts in (None, "*", stored if compressed else NATIVE):
            return media_range, natural, stored if compressed else NATIVE, False
        if media_range.covers(OCTETS):
            if ts == "*":
                return media_range, OCTETS, stored if compressed else NATIVE, False
            if ts in (None, NATIVE):
                # Uncompressed bytes asked for: decode a compressed frame (never re-encode).
                return media_range, OCTETS, NATIVE, compressed
    fail(406, f"frames of this instance are available as {natural} (transfer syntax {stored}) "
              f"or application/octet-stream")


def frame_bytes(path, layout: PixelLayout, index: int, decode: bool) -> bytes:
    data = read_frame(path, layout, index)
    if decode or layout.transfer_syntax_uid == ExplicitVRBigEndian:
        array = decode_frame(layout, data, rgb=False)
        return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return data


@bp.get("/studies/<study>/series/<series>/instances/<instance>/frames/<frame_list>")
@auth.requires(Permission.VIEW)
def retrieve_frames(study: str, series: str, instance: str, frame_list: str):
    indices = parse_frame_list(frame_list)
    stored = select(study, series, instance)[0]
    path = file_of(stored)
    try:
        layout = read_layout(path)
    except (OSError, ValueError) as exc:
        fail(500, f"stored file cannot be read: {exc}")
    if layout is None:
        fail(404, "instance has no pixel data")
    media_range, media, ts, decode = plan(layout)
    parts = []
    try:
        for index in indices:
            parts.append(multipart.Part(f"{media}; transfer-syntax={ts}",
                                        data=frame_bytes(path, layout, index, decode)))
    except FrameNotFound as exc:
        fail(404, str(exc))
    except (PixelDataError, DecodeError) as exc:
        fail(500 if isinstance(exc, PixelDataError) else 406, f"frame cannot be produced: {exc}")
    audit.record_view(study, detail="WADO-RS frames")
    if media_range.multipart is False and len(parts) == 1:
        return Response(parts[0].data, status=200, content_type=parts[0].media_type)
    return multipart_response(parts, media)
