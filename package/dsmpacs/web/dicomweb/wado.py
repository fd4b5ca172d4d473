"""WADO-RS: studies, series and instances as application/dicom, their metadata as
DICOM JSON, and bulk data by BulkDataURI.

Instances go out as the stored Part 10 files, byte for byte, streamed from disk.
Transfer syntax: ``transfer-syntax=*`` or none at all gets the stored syntax (the
originals are the point of this archive); a named syntax that differs from the
stored one is produced only by a lossless conversion (archive/transcode.py),
otherwise 406.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Iterator

from flask import Response

from dsmpacs.archive.audit import AuditAction
from dsmpacs.archive.metadata import BulkValue, locate_bulk, read_metadata
from dsmpacs.archive.part10 import InvalidDataset
from dsmpacs.archive.retrieve import StoredInstance
from dsmpacs.archive.transcode import ConversionError, can_convert, convert
from dsmpacs.archive.users import Permission
from dsmpacs.web import audit, auth
from dsmpacs.web.dicomweb import accept, dicomjson, multipart
from dsmpacs.web.dicomweb.common import base_url, bp, fail, file_of, instance_url, log, select
from dsmpacs.web.services import services

DICOM = "application/dicom"
OCTETS = "application/octet-stream"
JSON_TYPES = ["application/dicom+json", "application/json"]
PIXEL_DATA = 0x7FE00010


# --- negotiation -----------------------------------------------------------------
def wanted_syntaxes() -> list[str | None]:
    """Transfer syntaxes the client accepts for application/dicom, in its order
    (None: "as stored"). 406 when it accepts no application/dicom at all."""
    out: list[str | None] = []
    for media_range in accept.requested(f'multipart/related; type="{DICOM}"'):
        if media_range.covers(DICOM):
            ts = media_range.transfer_syntax
            out.append(None if ts in (None, "", "*") else ts)
    if not out:
        fail(406, 'this resource is available as multipart/related; type="application/dicom" only')
    return out


def syntax_for(instance: StoredInstance, wanted: list[str | None]) -> str | None:
    stored = instance.transfer_syntax_uid
    for ts in wanted:
        if ts is None or ts == stored:
            return stored
        if can_convert(stored, ts):
            return ts
    return None


def _converted(source, target: str, tmp_dir) -> Iterator[bytes]:
    with tempfile.TemporaryFile(dir=tmp_dir) as out:
        try:
            convert(source, target, out)
        except ConversionError as exc:
            # The status line is gone; ending the body without its close delimiter
            # tells the client the message is incomplete.
            log.error("WADO-RS: converting %s to %s failed: %s", source, target, exc)
            raise
        out.seek(0)
        while block := out.read(multipart.CHUNK):
            yield block


def dicom_parts(instances: list[StoredInstance]) -> list[multipart.Part]:
    wanted = wanted_syntaxes()
    tmp_dir = services().archive.storage.tmp_dir
    parts = []
    for instance in instances:
        ts = syntax_for(instance, wanted)
        if ts is None:
            fail(406, f"instance {instance.sop_instance_uid} is stored in {instance.transfer_syntax_uid} "
                      "and cannot be converted losslessly to the transfer syntax asked for")
        path = file_of(instance)
        media = f"{DICOM}; transfer-syntax={ts}"
        if ts == instance.transfer_syntax_uid:
            parts.append(multipart.Part(media, path=path))
        else:
            parts.append(multipart.Part(media, chunks=lambda p=path, t=ts: _converted(p, t, tmp_dir)))
    return parts


def multipart_response(parts: list[multipart.Part], part_type: str) -> Response:
    boundary = multipart.new_boundary()
    response = Response(multipart.stream(parts, boundary), status=200,
                        content_type=multipart.content_type(part_type, boundary), direct_passthrough=True)
    length = multipart.total_length(parts, boundary)
    if length is not None:
        response.content_length = length
    return response


# --- retrieve --------------------------------------------------------------------
@bp.get("/studies/<study>")
@auth.requires(Permission.EXPORT)
def retrieve_study(study: str):
    instances = select(study)
    parts = dicom_parts(instances)
    audit.record(AuditAction.EXPORT, study_instance_uid=study, detail=f"WADO-RS study, {len(parts)} instances")
    return multipart_response(parts, DICOM)


@bp.get("/studies/<study>/series/<series>")
@auth.requires(Permission.EXPORT)
def retrieve_series(study: str, series: str):
    instances = select(study, series)
    parts = dicom_parts(instances)
    audit.record(AuditAction.EXPORT, study_instance_uid=study, detail=f"WADO-RS series {series}")
    return multipart_response(parts, DICOM)


@bp.get("/studies/<study>/series/<series>/instances/<instance>")
@auth.requires(Permission.VIEW)
def retrieve_instance(study: str, series: str, instance: str):
    instances = select(study, series, instance)
    parts = dicom_parts(instances)
    audit.record_view(study, detail="WADO-RS")
    return multipart_response(parts, DICOM)


# --- metadata --------------------------------------------------------------------
def _check_json_accept() -> None:
    if accept.choose(accept.requested("application/dicom+json"), JSON_TYPES) is None:
        fail(406, "metadata is available as application/dicom+json only")


def _metadata_stream(instances: list[tuple[StoredInstance, Path]], base: str) -> Iterator[bytes]:
    # Runs after the view returned (outside the app context): paths are resolved already.
    yield b"["
    first = True
    for instance, path in instances:
        url = instance_url(base, instance.study_instance_uid, instance.series_instance_uid,
                           instance.sop_instance_uid)
        try:
            meta = read_metadata(path)
        except (InvalidDataset, OSError) as exc:
            log.error("metadata of %s: %s", instance.sop_instance_uid, exc)
            continue
        item = dicomjson.from_metadata(
            meta, lambda tag: f"{url}/bulkdata/{tag:08X}",
            {"AvailableTransferSyntaxUID": ("UI", instance.transfer_syntax_uid)})
        yield (b"" if first else b",") + json.dumps(item, ensure_ascii=False).encode("utf-8")
        first = False
    yield b"]"


def metadata_response(instances: list[StoredInstance]) -> Response:
    _check_json_accept()
    audit.record_view(instances[0].study_instance_uid, detail="WADO-RS metadata")
    located = [(instance, file_of(instance)) for instance in instances]
    return Response(_metadata_stream(located, base_url()), status=200,
                    content_type="application/dicom+json")


@bp.get("/studies/<study>/metadata")
@auth.requires(Permission.VIEW)
def study_metadata(study: str):
    return metadata_response(select(study))


@bp.get("/studies/<study>/series/<series>/metadata")
@auth.requires(Permission.VIEW)
def series_metadata(study: str, series: str):
    return metadata_response(select(study, series))


@bp.get("/studies/<study>/series/<series>/instances/<instance>/metadata")
@auth.requires(Permission.VIEW)
def instance_metadata(study: str, series: str, instance: str):
    return metadata_response(select(study, series, instance))


# --- bulk data -------------------------------------------------------------------
def bulk_part(found: BulkValue, stored_ts: str, path) -> multipart.Part:
    media = OCTETS + (f"; transfer-syntax={stored_ts}" if found.tag == PIXEL_DATA else "")
    if found.data is not None:
        return multipart.Part(media, data=found.data)
    return multipart.Part(media, path=path, offset=found.offset, length=found.length)


def single_or_multipart(part: multipart.Part, offered: str) -> Response:
    """Multipart unless the client asked for the bare media type first (OHIF's
    ``singlepart`` option)."""
    choice = accept.choose(accept.requested(f'multipart/related; type="{offered}"'), [offered])
    if choice is None:
        fail(406, f"this resource is available as {offered} (single or multipart/related)")
    media_range, _ = choice
    if media_range.multipart is False:
        response = Response(part.body(), status=200, content_type=part.media_type, direct_passthrough=True)
        response.content_length = part.size()
        return response
    return multipart_response([part], offered)


@bp.get("/studies/<study>/series/<series>/instances/<instance>/bulkdata/<tag>")
@auth.requires(Permission.VIEW)
def bulkdata(study: str, series: str, instance: str, tag: str):
    try:
        tag_value = int(tag, 16)
        if len(tag) != 8:
            raise ValueError
    except ValueError:
        fail(400, "bulk data is addressed by its tag as 8 hexadecimal digits")
    stored = select(study, series, instance)[0]
    path = file_of(stored)
    try:
        found = locate_bulk(path, tag_value)
    except (InvalidDataset, OSError) as exc:
        fail(500, f"stored file cannot be read: {exc}")
    if found is None:
        fail(404, f"instance has no bulk data element {tag.upper()}")
    audit.record_view(study, detail="WADO-RS bulk data")
    return single_or_multipart(bulk_part(found, stored.transfer_syntax_uid, path), OCTETS)
