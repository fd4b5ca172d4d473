"""Query/Retrieve C-FIND SCP: Patient Root and Study Root information models.

A thin adapter over archive/query.py: decode the request identifier (in its own
Specific Character Set) into keyword -> string filters, run the query, and
encode each row in the character set its data was stored in. IMAGE-level and
other keys the index does not hold are returned with zero length, and the
pending status is then 0xFF01 (an optional key was not supported), so a
query's cost never depends on reading files. Pending responses are encoded and
sent by dicom/engine/wire.py; pynetdicom sends the final status.
"""
from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from dsmpacs.archive import Archive
from dsmpacs.archive.access import AccessPolicy, Action
from dsmpacs.archive.attributes import Level
from dsmpacs.archive.audit import AuditAction
from dsmpacs.archive.charset import TEXT_VRS, decode_text, encode_text, parse_charset
from dsmpacs.archive.database import IndexUnavailable
from dsmpacs.archive.query import KEYS, Query, QueryError, Search, key_for
from dsmpacs.archive.visibility import Scope
from dsmpacs.dicom import auditing
from dsmpacs.dicom.associations import peer_of
from dsmpacs.dicom.auditing import DicomAudit
from dsmpacs.dicom.engine.wire import Element, PendingSender
from dsmpacs.dicom.status import NOT_AUTHORIZED, OUT_OF_RESOURCES, status_dataset

log = logging.getLogger(__name__)

PENDING = 0xFF00
PENDING_WARNING = 0xFF01          # an optional key was not supported for matching or return
CANCELLED = 0xFE00
IDENTIFIER_MISMATCH = 0xA900      # no or invalid QueryRetrieveLevel for the information model
UNABLE_TO_PROCESS = 0xC000        # undecodable identifier, invalid matching value

PATIENT_ROOT = str(PatientRootQueryRetrieveInformationModelFind)
STUDY_ROOT = str(StudyRootQueryRetrieveInformationModelFind)
MODEL_LEVELS = {
    PATIENT_ROOT: (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE),
    STUDY_ROOT: (Level.STUDY, Level.SERIES, Level.IMAGE),
}
UTF8 = "ISO_IR 192"
# Answered by this module rather than the index.
PROTOCOL_KEYS = {"RetrieveAETitle": "AE", "InstanceAvailability": "CS"}
# Every key the SCP supports: the conformance statement lists exactly these.
SUPPORTED_KEYS = sorted(set(KEYS) | set(PROTOCOL_KEYS))
_CHARSET_TAG = 0x00080005
_LEVEL_TAG = 0x00080052


def install(ae) -> None:
    """Offer both FIND models in Implicit and Explicit VR Little Endian (the encodings
    dicom/engine/wire.py writes)."""
    for sop_class in MODEL_LEVELS:
        ae.add_supported_context(sop_class, [ImplicitVRLittleEndian, ExplicitVRLittleEndian])


def handlers(archive: Archive, policy: AccessPolicy) -> list:
    search = Search(archive.index)
    return [(evt.EVT_C_FIND, handle_find, [archive, policy, search, auditing.for_archive(archive)]),
            (evt.EVT_SOP_EXTENDED, handle_sop_extended)]


def handle_sop_extended(event) -> dict:
    """SOP Class Extended Negotiation for C-FIND (PS3.4 C.5.1.1): relational queries
    (byte 1) and combined date-time matching (byte 2) are accepted when requested;
    fuzzy semantic matching and timezone adjustment are declined. (Queries are
    relational whatever was negotiated.)"""
    replies = {}
    for sop_class, info in (event.app_info or {}).items():
        if str(sop_class) in MODEL_LEVELS and info:
            wanted = bytes(info[:4]).ljust(4, b"\x00")
            replies[sop_class] = bytes([min(wanted[0], 1), min(wanted[1], 1), 0, 0])[:max(len(info), 1)]
    return replies


@dataclass
class ParsedRequest:
    level: Level
    filters: dict[str, str] = field(default_factory=dict)
    returned: list[tuple[int, str, str]] = field(default_factory=list)   # (tag, keyword, VR) in order
    unsupported: set[str] = field(default_factory=set)   # returned with zero length
    ignored: set[str] = field(default_factory=set)       # value not used for matching

    @property
    def warning(self) -> bool:
        return bool(self.unsupported or self.ignored)

    @property
    def index_keys(self) -> list[str]:
        return [k for _, k, _ in self.returned if k in KEYS and k not in self.unsupported]


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def handle_find(event, archive: Archive, policy: AccessPolicy, search: Search, audit: DicomAudit):
    """C-FIND (Patient Root and Study Root). Statuses:
      0xFF00 Pending: a match, every requested key supported
      0xFF01 Pending: a match; some requested keys are not supported and are
             returned with zero length (or were not used for matching)
      0x0000 Success: no more matches
      0xFE00 Cancel: the SCU sent C-CANCEL; no more matches are sent
      0x0124 Refused: Not authorized (calling AE not registered, or may_find false)
      0xA700 Out of resources: more than query_limit matches (the first query_limit
             were sent), or the index database is unreachable (also when the query
             cannot be audited: then no match is sent)
      0xA900 Identifier does not match SOP class: QueryRetrieveLevel missing or not
             valid for the information model
      0xC000 Unable to process: undecodable identifier or invalid matching value
    """
    assoc = event.assoc
    calling, peer = assoc.requestor.ae_title, peer_of(assoc)
    called, address = str(assoc.acceptor.ae_title), assoc.requestor.address
    try:
        allowed, reason = policy.allows(Action.FIND, calling, assoc.requestor.address)
    except IndexUnavailable as exc:
        log.error("C-FIND from %s (%s): %s", calling, peer, exc)
        yield status_dataset(OUT_OF_RESOURCES, "index database unreachable"), None
        return
    if not allowed:
        log.warning("C-FIND refused for %s (%s): %s", calling, peer, reason)
        audit.refused(AuditAction.ACCESS_DENIED, calling, called, address, "C-FIND", reason)
        yield status_dataset(NOT_AUTHORIZED, "calling AE not registered for C-FIND"), None
        return
    try:
        request = parse_request(event.identifier, str(event.request.AffectedSOPClassUID))
    except BadRequest as exc:
        log.warning("C-FIND from %s (%s) refused: %s", calling, peer, exc)
        yield status_dataset(exc.status, str(exc)), None
        return
    except Exception as exc:       # pydicom decodes lazily and may raise anything
        log.warning("C-FIND from %s (%s): undecodable identifier: %s", calling, peer, exc)
        yield status_dataset(UNABLE_TO_PROCESS, "identifier cannot be decoded"), None
        return

    # The record is written while the first matches are read; nothing is sent before it
    # is durable (dicom/auditing.py).
    started, sent = time.monotonic(), 0
    recorded = audit.search_started(calling, called, address, request.level.value, request.filters)
    settings = archive.settings
    limit = settings.query_limit or None
    first_page_error: Exception | None = None
    matches: Iterator[dict] = iter(())
    first = None
    try:
        query = Query(request.level, request.filters, request.index_keys,
                      limit=limit + 1 if limit else None,
                      pn_case_insensitive=settings.pn_case_insensitive,
                      combined_datetime=_combined_negotiated(assoc, str(event.request.AffectedSOPClassUID)),
                      # A peer bound to an institution finds only its studies; unbound, all.
                      scope=Scope.for_ae(archive.index, calling))
        matches = search.search(query)
        first = next(matches, None)
    except (QueryError, IndexUnavailable) as exc:
        first_page_error = exc
    try:
        recorded.result()
    except IndexUnavailable as exc:
        log.error("C-FIND from %s (%s): cannot be audited: %s", calling, peer, exc)
        yield status_dataset(OUT_OF_RESOURCES, "index database unreachable"), None
        return

    def rows() -> Iterator[dict]:
        if first_page_error is not None:
            raise first_page_error
        if first is not None:
            yield first
            yield from matches

    sender = PendingSender(assoc, event.context, event.request,
                           PENDING_WARNING if request.warning else PENDING)
    try:
        for row in rows():
            if not assoc.is_established:
                log.warning("C-FIND from %s (%s): association ended after %d matches", calling, peer, sent)
                return
            if event.is_cancelled:
                log.info("C-FIND from %s (%s) cancelled after %d matches", calling, peer, sent)
                yield CANCELLED, None
                return
            if limit and sent == limit:
                log.warning("C-FIND from %s (%s): more than %d matches; stopped", calling, peer, limit)
                yield status_dataset(OUT_OF_RESOURCES, f"more than {limit} matches; narrow the query"), None
                return
            # Pending responses go out directly (dicom/engine/wire.py); pynetdicom sends the
            # final status we yield, or Success when the generator ends.
            sender.send(response_elements(row, request, settings.ae_title))
            sent += 1
    except QueryError as exc:
        log.warning("C-FIND from %s (%s): %s", calling, peer, exc)
        yield status_dataset(UNABLE_TO_PROCESS, str(exc)), None
        return
    except IndexUnavailable as exc:
        log.error("C-FIND from %s (%s): %s", calling, peer, exc)
        yield status_dataset(OUT_OF_RESOURCES, "index database unreachable"), None
        return
    log.info("C-FIND from %s (%s): %s level, %d matches in %.1f ms", calling, peer,
             request.level.value, sent, (time.monotonic() - started) * 1000)


# --- request ----------------------------------------------------------------------

def element_text(ds: Dataset, tag: int, vr: str, charsets: list[str]) -> str:
    elem = ds.get_item(tag)
    value = elem.value
    if isinstance(value, bytes):
        text = decode_text(value, charsets).text if vr in TEXT_VRS else value.decode("ascii", "replace")
    elif value is None:
        text = ""
    elif isinstance(value, (list, tuple, MultiValue)):
        text = "\\".join(str(v) for v in value)
    else:
        text = str(value)
    return text.strip(" \x00")


def parse_request(identifier: Dataset, sop_class_uid: str) -> ParsedRequest:
    """The identifier as keyword filters; its text decoded in its own character set."""
    charset_elem = identifier.get_item(_CHARSET_TAG)
    charsets = parse_charset(element_text(identifier, _CHARSET_TAG, "CS", []) if charset_elem else None)
    level_text = element_text(identifier, _LEVEL_TAG, "CS", []) if identifier.get_item(_LEVEL_TAG) else ""
    levels = MODEL_LEVELS.get(sop_class_uid, ())
    try:
        level = Level(level_text.upper())
    except ValueError:
        raise BadRequest(IDENTIFIER_MISMATCH, f"QueryRetrieveLevel {level_text!r} is not valid") from None
    if level not in levels:
        raise BadRequest(IDENTIFIER_MISMATCH, f"level {level.value} is not in this information model")

    request = ParsedRequest(level)
    for tag in identifier.keys():
        tag = int(tag)
        if tag in (_CHARSET_TAG, _LEVEL_TAG) or tag >> 16 == 0:
            continue
        keyword = keyword_for_tag(tag)
        vr = identifier.get_item(tag).VR            # None in Implicit VR
        if vr in (None, "UN"):
            vr = dictionary_VR(tag).split(" or ")[0] if keyword else "UN"
        request.returned.append((tag, keyword, vr))
        if keyword in PROTOCOL_KEYS:
            continue
        key = key_for(level, keyword) if keyword else None
        if key is None or vr == "SQ":
            request.unsupported.add(keyword or f"{tag:08X}")
            continue
        value = element_text(identifier, tag, vr, charsets)
        if value and value != "*":
            if key.matchable:
                request.filters[keyword] = value
            else:
                request.ignored.add(keyword)     # a count: returned, never matched
    return request


def _combined_negotiated(assoc, sop_class_uid: str) -> bool:
    try:
        info = assoc.acceptor.sop_class_extended.get(sop_class_uid, b"")
    except Exception:
        return False
    return len(info) > 1 and info[1] == 1


# --- response ---------------------------------------------------------------------

def _charset_for(row: dict, texts: list[str]) -> tuple[str, list[str]]:
    """The stored data's character set when it can carry every value, else UTF-8."""
    stored = str(row.get("SpecificCharacterSet") or "")
    terms = parse_charset(stored)
    if all(encode_text(t, terms) is not None for t in texts):
        return stored, terms
    return UTF8, [UTF8]


def response_elements(row: dict, request: ParsedRequest, ae_title: str) -> list[Element]:
    """The response identifier for one match, every value encoded: exactly the
    requested keys, plus QueryRetrieveLevel and SpecificCharacterSet."""
    texts = [str(row[k]) for _, k, vr in request.returned
             if vr in TEXT_VRS and k in row and k not in request.unsupported]
    charset, terms = _charset_for(row, texts)
    out: list[Element] = [(_CHARSET_TAG, "CS", charset.encode("ascii")),
                          (_LEVEL_TAG, "CS", request.level.value.encode("ascii"))]
    for tag, keyword, vr in request.returned:
        if keyword == "RetrieveAETitle":
            value = ae_title.encode("ascii")
        elif keyword == "InstanceAvailability":
            value = b"ONLINE"
        elif keyword not in row or keyword in request.unsupported or row[keyword] in (None, ""):
            value = b""
        elif vr in TEXT_VRS:
            value = encode_text(str(row[keyword]), terms) or b""
        elif vr == "US":
            value = struct.pack("<H", int(row[keyword]) & 0xFFFF)
        else:
            value = str(row[keyword]).encode("ascii", "replace")
        out.append((tag, vr, value))
    return out
