"""STOW-RS: POST /dicom-web/studies[/{study}] with multipart/related; type="application/dicom".

Two phases, so that a malformed or oversized request stores nothing: first the
whole body is split into parts, each staged as it arrives in the storage's tmp
directory (never held in memory) with our file meta in place of the part's own
(archive/staging.py): written once, hashed once. Then each staged part goes
through the single ingest path (archive/ingest.py), which parses its header
once and checks it against what the part's meta and the URL announced. The
response (PS3.18 10.5.3) lists every instance under ReferencedSOPSequence or
FailedSOPSequence; whether an instance is referenced, warned or failed follows
its outcome's category (archive/results.py), the same as over DIMSE. HTTP
status: 200 all stored, 202 stored with warnings or some failed, 409 none
stored, 503 none stored for want of resources (full disk, index unavailable),
always with the body.
"""
from __future__ import annotations

import json

from flask import Response, request

from dsmpacs.archive.audit import AuditAction
from dsmpacs.archive.ingest import Origin
from dsmpacs.archive.results import Category, StoreOutcome, StoreResult
from dsmpacs.archive.staging import Part10Stager
from dsmpacs.archive.storage import StorageError
from dsmpacs.archive.users import Permission
from dsmpacs.web import audit, auth, scoping
from dsmpacs.web.dicomweb import multipart
from dsmpacs.web.dicomweb.accept import normalize_media_type
from dsmpacs.web.dicomweb.common import base_url, bp, check_uids, fail, instance_url, log, study_url
from dsmpacs.web.services import services

DICOM = "application/dicom"

# PS3.18 Table 10.5.3-2 failure reasons and PS3.4 warning codes, for every outcome whose
# category is failure (tests/test_store_outcomes.py checks none is missing).
PROCESSING_FAILURE = 0x0110
DUPLICATE_CONFLICT = 0x0111
OUT_OF_RESOURCES = 0xA700
STUDY_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
COERCION_WARNING = 0xB000
FAILURE_REASON = {
    StoreOutcome.OUT_OF_RESOURCES: OUT_OF_RESOURCES,
    StoreOutcome.INDEX_UNAVAILABLE: PROCESSING_FAILURE,
    StoreOutcome.INVALID_DATASET: CANNOT_UNDERSTAND,
    StoreOutcome.UID_MISMATCH: STUDY_MISMATCH,
    StoreOutcome.CONFLICT_QUARANTINED: DUPLICATE_CONFLICT,
    StoreOutcome.REFUSED: PROCESSING_FAILURE,
}


_RETRY_LATER = frozenset({StoreOutcome.OUT_OF_RESOURCES, StoreOutcome.INDEX_UNAVAILABLE})


def _max_bytes() -> int:
    return services().settings.stow_max_mb * 2**20


def _spool_body(boundary: str) -> list[Part10Stager]:
    """Stage every part; a storage failure is kept per part (the body is read to its end)."""
    storage = services().archive.storage
    sinks: list[Part10Stager] = []

    max_parts = services().settings.stow_max_parts

    def open_sink(headers: dict[str, str]) -> Part10Stager:
        if sinks:
            # The previous part is complete: close its file now, so one request keeps one
            # file open however many parts it has (the ingest fsyncs each later).
            sinks[-1].close(sync=False)
        if len(sinks) >= max_parts:
            fail(413, f"more than stow_max_parts ({max_parts}) parts in one request; "
                      "send them in several requests")
        media = normalize_media_type(headers.get("content-type", DICOM).split(";")[0])
        if media != DICOM:
            fail(415, f"part {len(sinks) + 1} is {media[:60]!r}; only application/dicom parts are accepted")
        sinks.append(Part10Stager(storage.spool(".stow")))
        return sinks[-1]

    try:
        count = multipart.read_parts(request.stream, boundary, open_sink, _max_bytes())
        if count == 0:
            fail(400, "the multipart body holds no parts")
        for sink in sinks:
            sink.close(sync=False)      # written back now; the ingest fsyncs each once checked
    except multipart.TooLarge:
        _abandon(sinks)
        fail(413, f"request body larger than stow_max_mb ({services().settings.stow_max_mb} MiB)")
    except multipart.MalformedMultipart as exc:
        _abandon(sinks)
        fail(400, f"malformed multipart body: {exc}")
    except BaseException:
        _abandon(sinks)
        raise
    return sinks


def _abandon(sinks: list[Part10Stager]) -> None:
    for sink in sinks:
        sink.abandon()


def _store_one(sink: Part10Stager, study: str | None, origin: Origin) -> StoreResult:
    ingest = services().archive.ingest
    announced = sink.announced
    uids = dict(sop_class_uid=announced.sop_class_uid[:64],
                sop_instance_uid=announced.sop_instance_uid[:64]) if announced else {}
    try:
        staged = sink.staged()
    except StorageError as exc:
        return StoreResult(StoreOutcome.OUT_OF_RESOURCES, str(exc), **uids)
    if sink.needs_restage:
        # Not a standard Part 10 head: the ingest rebuilds the envelope (one copy more).
        try:
            return ingest.import_file(staged.path, origin, expected_study_instance_uid=study)
        finally:
            services().archive.storage.discard(staged)
    return ingest.store(staged, origin, expected_sop_class_uid=announced.sop_class_uid,
                        expected_sop_instance_uid=announced.sop_instance_uid,
                        expected_study_instance_uid=study)


def _sop_item(result: StoreResult) -> dict:
    return {"00081150": {"vr": "UI", "Value": [result.sop_class_uid]} if result.sop_class_uid
            else {"vr": "UI"},
            "00081155": {"vr": "UI", "Value": [result.sop_instance_uid]} if result.sop_instance_uid
            else {"vr": "UI"}}


def response_body(results: list[StoreResult], base: str, study: str | None) -> tuple[dict, int]:
    referenced, failed, warned = [], [], False
    for result in results:
        item = _sop_item(result)
        category = result.outcome.category
        if category is Category.FAILURE:
            item["00081197"] = {"vr": "US", "Value": [FAILURE_REASON[result.outcome]]}
            failed.append(item)
            continue
        item["00081190"] = {"vr": "UR", "Value": [instance_url(
            base, result.study_instance_uid, result.series_instance_uid, result.sop_instance_uid)]}
        if category is Category.WARNING:
            warned = True
            item["00081196"] = {"vr": "US", "Value": [COERCION_WARNING]}
        referenced.append(item)
    body: dict = {}
    studies = {r.study_instance_uid for r in results if r.archived}
    if study is not None or len(studies) == 1:
        body["00081190"] = {"vr": "UR", "Value": [study_url(base, study or next(iter(studies)))]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
        status = 202 if failed or warned else 200
    elif all(r.outcome in _RETRY_LATER for r in results):
        status = 503            # nothing wrong with the request: worth sending again later
    else:
        status = 409
    return body, status


def store(study: str | None) -> Response:
    if study is not None:
        check_uids(study)
    # The caller may store (the decorator said so): only now may the body be larger
    # than the app's small default (web/app.py), up to stow_max_mb and its framing.
    request.max_content_length = _max_bytes() + 2**20
    length = request.content_length
    if length is not None and length > _max_bytes():
        fail(413, f"request body of {length} bytes is larger than stow_max_mb "
                  f"({services().settings.stow_max_mb} MiB)")
    content_type = request.headers.get("Content-Type", "")
    if not content_type.lower().startswith("multipart/related"):
        fail(415, 'STOW-RS takes multipart/related; type="application/dicom"')
    try:
        boundary = multipart.boundary_of(content_type)
    except multipart.MalformedMultipart as exc:
        fail(400, str(exc))
    part_type = multipart.parameter(content_type, "type").lower()
    if part_type and part_type != DICOM:
        fail(415, f"type={part_type[:60]!r} is not supported; send application/dicom parts")

    sinks = _spool_body(boundary)
    user = auth.current_user()
    # New studies go to the caller's institution; an existing study of another one
    # refuses the instance (archive/index.StudyElsewhere).
    origin = Origin("stow", peer=f"{user.username if user else '?'}@{request.remote_addr}",
                    institution=scoping.stow_institution())
    results: list[StoreResult] = []
    try:
        for sink in sinks:
            try:
                results.append(_store_one(sink, study, origin))
            except Exception as exc:      # one bad part must not lose the others' answers
                log.exception("STOW-RS part failed: %s", exc)
                results.append(StoreResult(StoreOutcome.REFUSED, f"processing failure: {exc}"))
    finally:
        _abandon(sinks)              # only failures are left: the ingest consumed the rest
    body, status = response_body(results, base_url(), study)
    stored = sum(r.archived for r in results)
    for uid in sorted({r.study_instance_uid for r in results if r.archived}):
        audit.record(AuditAction.STORE, study_instance_uid=uid, detail=f"STOW-RS, {stored} of {len(results)}")
    if status != 200:
        log.warning("STOW-RS from %s: %d of %d stored; %s", origin, stored, len(results),
                    "; ".join(f"{r.sop_instance_uid or '?'}: {r.outcome.value} {r.message}"
                              for r in results if not r.archived or r.outcome.is_warning)[:2000])
    return Response(json.dumps(body), status=status, content_type="application/dicom+json")


@bp.post("/studies")
@auth.requires(Permission.EXPORT)
def store_instances():
    return store(None)


@bp.post("/studies/<study>")
@auth.requires(Permission.EXPORT)
def store_study_instances(study: str):
    return store(study)
