"""QIDO-RS: searches for studies, series and instances, answered from the index
by the same Search (archive/query.py) that answers C-FIND, so both give the same
matches: wildcards, date and time ranges, UID lists, case-insensitive and
normalised person names (setting ``pn_case_insensitive``).

Query keys may be keywords (``PatientName``) or tags (``00100010``). Values of
UI, CS, DA, TM, DT and IS keys may list alternatives with commas or backslashes.
``fuzzymatching`` is accepted and changes nothing: person names already match
case-insensitively. ``limit``/``offset`` page through the matches; the setting
``query_limit`` caps one response (a ``Warning`` header says when it did).
"""
from __future__ import annotations

import json
import re

from flask import Response, request
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from dsmpacs.archive.attributes import Level
from dsmpacs.archive.audit import AuditAction, query_fields
from dsmpacs.archive.models import Instance
from dsmpacs.archive.query import KEYS, Query, QueryError, Search, key_for, keys_at
from dsmpacs.archive.users import Permission
from dsmpacs.web import audit, auth
from dsmpacs.web.dicomweb import accept, dicomjson
from dsmpacs.web.dicomweb.common import (
    base_url,
    bp,
    check_uids,
    fail,
    instance_url,
    series_url,
    study_url,
)
from dsmpacs.web.services import services

RESERVED = {"limit", "offset", "includefield", "fuzzymatching", "accept", "charset"}
LISTABLE_VRS = {"UI", "CS", "DA", "TM", "DT", "IS"}
_TAG_RE = re.compile(r"^[0-9A-Fa-f]{8}$")

# Returned by default (PS3.18 Tables 10.6.3-3 to -5 as far as the index holds them,
# plus what OHIF reads: StudyDescription, SeriesDate).
DEFAULTS = {
    Level.STUDY: ["StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName",
                  "TimezoneOffsetFromUTC", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                  "StudyInstanceUID", "StudyID", "StudyDescription", "NumberOfStudyRelatedSeries",
                  "NumberOfStudyRelatedInstances"],
    Level.SERIES: ["StudyInstanceUID", "Modality", "TimezoneOffsetFromUTC", "SeriesDescription",
                   "SeriesInstanceUID", "SeriesNumber", "SeriesDate", "SeriesTime",
                   "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate",
                   "PerformedProcedureStepStartTime"],
    Level.IMAGE: ["StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID",
                  "TimezoneOffsetFromUTC", "InstanceNumber", "Rows", "Columns", "BitsAllocated",
                  "NumberOfFrames"],
}


def _keyword(name: str, strict: bool = True) -> str:
    """A query key (keyword or tag) as a keyword; 400 when it names no attribute
    (``strict=False``: "" instead, for includefield)."""
    if not strict:
        keyword = keyword_for_tag(int(name, 16)) if _TAG_RE.match(name) else name
        return keyword if keyword and tag_for_keyword(keyword) is not None else ""
    if _TAG_RE.match(name):
        keyword = keyword_for_tag(int(name, 16))
        if not keyword:
            fail(400, f"{name} is not a known attribute tag (private and sequence keys are not supported)")
        return keyword
    if "." in name:
        fail(400, f"{name}: sequence and nested attribute keys are not supported")
    if tag_for_keyword(name) is None:
        fail(400, f"unknown query parameter {name!r}")
    return name


def _vr(keyword: str) -> str:
    key = KEYS.get(keyword)
    return key.vr if key is not None else dictionary_VR(tag_for_keyword(keyword))


def _int_param(name: str) -> int | None:
    value = request.args.get(name)
    if value is None or value == "":
        return None
    if not value.isdigit():
        fail(400, f"{name} must be a non-negative integer, not {value[:20]!r}")
    return int(value)


def parse_query(level: Level, fixed: dict[str, str]) -> tuple[Query, int | None]:
    """The Query for this request, and the server's cap on the page when it applies."""
    filters: dict[str, str] = {}
    includes: list[str] = []
    everything = False
    for name in request.args:
        values = request.args.getlist(name)
        if name.lower() in RESERVED:
            if name.lower() == "includefield":
                for value in values:
                    for item in (v.strip() for v in value.split(",")):
                        if item.lower() == "all":
                            everything = True
                        elif item:
                            includes.append(_keyword(item, strict=False))
            if name.lower() == "fuzzymatching" and values[-1].lower() not in ("true", "false", ""):
                fail(400, "fuzzymatching must be true or false")
            continue
        keyword = _keyword(name)
        if keyword == "Modality" and level is Level.STUDY:
            keyword = "ModalitiesInStudy"     # what a study-level "Modality=CT" means
        key = key_for(level, keyword)
        if key is None:
            fail(400, f"{keyword} cannot be matched in a {level.value.lower()} search")
        if not key.matchable:
            fail(400, f"{keyword} is a return key only; it cannot be matched")
        value = "\\".join(values)
        if key.vr in LISTABLE_VRS:
            value = value.replace(",", "\\")
        filters[keyword] = value
    for keyword, value in fixed.items():
        filters[keyword] = value
    wanted = list(DEFAULTS[level]) + list(filters)
    if everything:
        wanted += keys_at(level)
    # Attributes this archive does not index are left out rather than refused:
    # OHIF asks for Modality in study searches, for example.
    wanted += [k for k in includes if key_for(level, k) is not None]
    limit = _int_param("limit")
    offset = _int_param("offset") or 0
    cap = services().settings.query_limit
    page, capped = limit, False
    if cap and (page is None or page > cap):
        page, capped = cap, True
    # One more than the page tells whether the cap hid matches (Warning header).
    query = Query(level, filters, list(dict.fromkeys(wanted)),
                  limit=None if page is None else page + (1 if capped else 0), offset=offset,
                  pn_case_insensitive=services().settings.pn_case_insensitive,
                  scope=services().scope())     # only what the caller may see (archive/visibility.py)
    return query, page if capped else None


def _transfer_syntaxes(uids: list[str]) -> dict[str, str]:
    index = services().archive.index
    with index.read():
        rows = Instance.select(Instance.sop_instance_uid, Instance.transfer_syntax_uid).where(
            Instance.sop_instance_uid.in_(uids)).tuples()
        return dict(rows)


def search(level: Level, fixed: dict[str, str] | None = None) -> Response:
    if accept.choose(accept.requested("application/dicom+json"), ["application/dicom+json",
                                                                 "application/json"]) is None:
        fail(406, "search results are available as application/dicom+json only")
    query, page = parse_query(level, fixed or {})
    audit.record(AuditAction.SEARCH, **query_fields("QIDO-RS", level.value, query.filters))
    try:
        rows = list(Search(services().archive.index).search(query))
    except QueryError as exc:
        fail(400, str(exc))
    truncated = page is not None and len(rows) > page
    if truncated:
        rows = rows[:page]
    if not rows:
        return Response(status=204)
    base = base_url()
    syntaxes = _transfer_syntaxes([str(r["SOPInstanceUID"]) for r in rows]) if level is Level.IMAGE else {}
    results = []
    for row in rows:
        item = dicomjson.from_row(row, _vr)
        study = str(row.get("StudyInstanceUID", ""))
        if level is Level.STUDY:
            url = study_url(base, study)
        elif level is Level.SERIES:
            url = series_url(base, study, str(row["SeriesInstanceUID"]))
        else:
            url = instance_url(base, study, str(row["SeriesInstanceUID"]), str(row["SOPInstanceUID"]))
            ts = syntaxes.get(str(row["SOPInstanceUID"]))
            if ts:
                item["00083002"] = {"vr": "UI", "Value": [ts]}
        item["00081190"] = {"vr": "UR", "Value": [url]}
        item["00080056"] = {"vr": "CS", "Value": ["ONLINE"]}
        results.append(dict(sorted(item.items())))
    response = Response(json.dumps(results, ensure_ascii=False), status=200,
                        content_type="application/dicom+json")
    if truncated:
        response.headers["Warning"] = (f'299 {request.host.split(":")[0]} "The number of results exceeded '
                                       f'the server\'s limit of {page}; request more with offset"')
    return response


@bp.get("/studies")
@auth.requires(Permission.VIEW)
def search_studies():
    return search(Level.STUDY)


@bp.get("/series")
@auth.requires(Permission.VIEW)
def search_all_series():
    return search(Level.SERIES)


@bp.get("/studies/<study>/series")
@auth.requires(Permission.VIEW)
def search_series(study: str):
    check_uids(study)
    return search(Level.SERIES, {"StudyInstanceUID": study})


@bp.get("/instances")
@auth.requires(Permission.VIEW)
def search_all_instances():
    return search(Level.IMAGE)


@bp.get("/studies/<study>/instances")
@auth.requires(Permission.VIEW)
def search_study_instances(study: str):
    check_uids(study)
    return search(Level.IMAGE, {"StudyInstanceUID": study})


@bp.get("/studies/<study>/series/<series>/instances")
@auth.requires(Permission.VIEW)
def search_series_instances(study: str, series: str):
    check_uids(study, series)
    return search(Level.IMAGE, {"StudyInstanceUID": study, "SeriesInstanceUID": series})
