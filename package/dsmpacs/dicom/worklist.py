"""Modality Worklist SCP: C-FIND on the MWL Information Model (PS3.4 Annex K).

A thin adapter over archive/orders.py: the request identifier is decoded in its
own Specific Character Set into a ``WorklistFilter``, the registered orders are
matched, and each match goes back as one pending response holding exactly the
requested keys (all the supported keys of the Scheduled Procedure Step Sequence
when it is requested empty). Text is returned in UTF-8 (``ISO_IR 192``) when a
value is not ASCII. Matching keys (PS3.4 K.6.1.2): Scheduled Station AE Title,
Scheduled Procedure Step Start Date (single value or range) and Start Time,
Modality, Scheduled Procedure Step Status, Patient's Name (case-insensitive on
the normalised component groups, wildcards, as C-FIND), Patient ID, Accession
Number, Requested Procedure ID. Keys the archive does not hold are returned with
zero length; the pending status is then 0xFF01, as for Query/Retrieve C-FIND,
except for the listed type 2 return keys that the archive simply has no value for.

The same access policy as C-FIND applies: only registered AEs with may_find.
C-FIND requests arrive on one event (EVT_C_FIND) for every information model;
``handlers`` routes them by SOP class to this module or to dicom/find.py.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.sop_class import ModalityWorklistInformationFind

from dsmpacs.archive import Archive
from dsmpacs.archive.access import AccessPolicy, Action
from dsmpacs.archive.audit import AuditAction
from dsmpacs.archive.charset import TEXT_VRS, parse_charset
from dsmpacs.archive.database import IndexUnavailable
from dsmpacs.archive.matching import QueryError
from dsmpacs.archive.orders import Orders, OrderView, State, WorklistFilter
from dsmpacs.archive.visibility import Scope
from dsmpacs.dicom import auditing
from dsmpacs.dicom.associations import peer_of
from dsmpacs.dicom.auditing import DicomAudit
from dsmpacs.dicom.find import element_text
from dsmpacs.dicom.status import NOT_AUTHORIZED, OUT_OF_RESOURCES, status_dataset

log = logging.getLogger(__name__)

MWL_FIND = str(ModalityWorklistInformationFind)      # 1.2.840.10008.5.1.4.31
PENDING = 0xFF00
PENDING_WARNING = 0xFF01          # an optional key was not supported for matching or return
CANCELLED = 0xFE00
UNABLE_TO_PROCESS = 0xC000        # undecodable identifier, invalid matching value
UTF8 = "ISO_IR 192"
SPS = "ScheduledProcedureStepSequence"
_CHARSET_TAG = 0x00080005

# Scheduled Procedure Step Status (0040,0020) for each order state.
SPS_STATUS = {State.SCHEDULED: "SCHEDULED", State.IN_PROGRESS: "STARTED",
              State.COMPLETED: "COMPLETED", State.DISCONTINUED: "DISCONTINUED"}


def _code_item(order: OrderView) -> Sequence:
    if not order.procedure_code:
        return Sequence([])
    item = Dataset()
    item.CodeValue = order.procedure_code
    item.CodingSchemeDesignator = order.procedure_code_scheme
    item.CodeMeaning = order.procedure_description
    return Sequence([item])


# Return keys: keyword -> value of an order. The first block are the top-level keys,
# SPS_KEYS those of a Scheduled Procedure Step Sequence item.
TOP_KEYS = {
    "AccessionNumber": lambda o: o.accession_number,
    "PatientName": lambda o: o.patient_name,
    "PatientID": lambda o: o.patient_id,
    "PatientBirthDate": lambda o: o.birth_date,
    "PatientSex": lambda o: o.sex,
    "StudyInstanceUID": lambda o: o.study_instance_uid,
    "RequestedProcedureID": lambda o: o.procedure_id,
    "RequestedProcedureDescription": lambda o: o.procedure_description,
    "RequestedProcedurePriority": lambda o: o.priority,
    "RequestedProcedureCodeSequence": _code_item,
    "RequestingPhysician": lambda o: o.requesting_physician,
}
SPS_KEYS = {
    "ScheduledStationAETitle": lambda o: o.station_ae,
    "ScheduledProcedureStepStartDate": lambda o: o.scheduled_date,
    "ScheduledProcedureStepStartTime": lambda o: o.scheduled_time,
    "Modality": lambda o: o.modality,
    "ScheduledProcedureStepDescription": lambda o: o.procedure_description,
    "ScheduledProcedureStepID": lambda o: o.step_id,
    "ScheduledProcedureStepStatus": lambda o: SPS_STATUS[o.state],
    "ScheduledProtocolCodeSequence": _code_item,
}
# Type 2 return keys the archive holds no value for: returned empty, no warning.
EMPTY_KEYS = {"ReferringPhysicianName", "IssuerOfPatientID", "OtherPatientIDs", "PatientWeight",
              "PatientSize", "MedicalAlerts", "Allergies", "PregnancyStatus", "AdmissionID",
              "CurrentPatientLocation", "ReferencedStudySequence", "ReferencedPatientSequence",
              "ScheduledPerformingPhysicianName", "ScheduledStationName", "ScheduledProcedureStepLocation",
              "PreMedication", "RequestedContrastAgent", "StudyDate", "StudyTime"}
# Matching keys -> WorklistFilter field.
MATCHING = {"ScheduledStationAETitle": "station_ae", "ScheduledProcedureStepStartDate": "date",
            "ScheduledProcedureStepStartTime": "time", "Modality": "modality",
            "PatientName": "patient_name", "PatientID": "patient_id",
            "AccessionNumber": "accession_number", "RequestedProcedureID": "procedure_id"}
_STATES_BY_STATUS = {v: k for k, v in SPS_STATUS.items()}
# Every key the SCP supports: the conformance statement lists these.
SUPPORTED_KEYS = sorted(set(TOP_KEYS) | {SPS} | set(SPS_KEYS))


def install(ae) -> None:
    """Offer the MWL FIND model in Implicit and Explicit VR Little Endian."""
    ae.add_supported_context(MWL_FIND, [ImplicitVRLittleEndian, ExplicitVRLittleEndian])


def handlers(find_handlers: list, archive: Archive, policy: AccessPolicy) -> list:
    """dicom/find.py's handlers with EVT_C_FIND routed by SOP class: MWL here, the
    Query/Retrieve models to find.handle_find (pynetdicom binds one C-FIND handler)."""
    mwl_args = [Orders(archive.index), policy, auditing.for_archive(archive), archive.settings.query_limit]
    out = []
    for entry in find_handlers:
        if entry[0] is evt.EVT_C_FIND:
            out.append((evt.EVT_C_FIND, dispatch_find, [entry[1], entry[2], mwl_args]))
        else:
            out.append(entry)
    return out


def dispatch_find(event, qr_handler, qr_args: list, mwl_args: list):
    if str(event.request.AffectedSOPClassUID) == MWL_FIND:
        return handle_worklist(event, *mwl_args)
    return qr_handler(event, *qr_args)


@dataclass
class WorklistRequest:
    filters: dict[str, str] = field(default_factory=dict)     # matching key keyword -> value
    states: tuple[State, ...] = (State.SCHEDULED, State.IN_PROGRESS)
    top: list[tuple[int, str, str]] = field(default_factory=list)   # (tag, keyword, VR) requested
    sps: list[tuple[int, str, str]] | None = None                    # None: no SPS sequence asked
    warning: bool = False
    charset_requested: bool = False


def handle_worklist(event, orders: Orders, policy: AccessPolicy, audit: DicomAudit, limit: int):
    """C-FIND on the Modality Worklist Information Model. Statuses:
      0xFF00 Pending: a match, every requested key supported
      0xFF01 Pending: a match; some requested keys are not supported and are
             returned with zero length (or were not used for matching)
      0x0000 Success: no more matches
      0xFE00 Cancel: the SCU sent C-CANCEL; no more matches are sent
      0x0124 Refused: Not authorized (calling AE not registered, or may_find false)
      0xA700 Out of resources: more than query_limit matches (the first query_limit
             were sent), or the index database is unreachable
      0xC000 Unable to process: undecodable identifier or invalid matching value
    """
    assoc = event.assoc
    calling, peer = assoc.requestor.ae_title, peer_of(assoc)
    called, address = str(assoc.acceptor.ae_title), assoc.requestor.address
    try:
        allowed, reason = policy.allows(Action.FIND, calling, address)
    except IndexUnavailable as exc:
        log.error("MWL C-FIND from %s (%s): %s", calling, peer, exc)
        yield status_dataset(OUT_OF_RESOURCES, "index database unreachable"), None
        return
    if not allowed:
        log.warning("MWL C-FIND refused for %s (%s): %s", calling, peer, reason)
        audit.refused(AuditAction.ACCESS_DENIED, calling, called, address, "MWL C-FIND", reason)
        yield status_dataset(NOT_AUTHORIZED, "calling AE not registered for C-FIND"), None
        return
    try:
        request = parse_request(event.identifier)
        audit.search(calling, called, address, "WORKLIST", request.filters)
        flt = WorklistFilter(**{MATCHING[k]: v for k, v in request.filters.items()},
                             states=request.states, limit=limit + 1 if limit else None)
        started = time.monotonic()
        matches = list(orders.worklist(flt, Scope.for_ae(orders.index, calling)))
    except IndexUnavailable as exc:
        log.error("MWL C-FIND from %s (%s): %s", calling, peer, exc)
        yield status_dataset(OUT_OF_RESOURCES, "index database unreachable"), None
        return
    except QueryError as exc:
        log.warning("MWL C-FIND from %s (%s): %s", calling, peer, exc)
        yield status_dataset(UNABLE_TO_PROCESS, str(exc)), None
        return
    except Exception as exc:       # pydicom decodes lazily and may raise anything
        log.warning("MWL C-FIND from %s (%s): undecodable identifier: %s", calling, peer, exc)
        yield status_dataset(UNABLE_TO_PROCESS, "identifier cannot be decoded"), None
        return
    status = PENDING_WARNING if request.warning else PENDING
    for sent, order in enumerate(matches):
        if event.is_cancelled:
            log.info("MWL C-FIND from %s (%s) cancelled after %d matches", calling, peer, sent)
            yield CANCELLED, None
            return
        if limit and sent == limit:
            log.warning("MWL C-FIND from %s (%s): more than %d matches; stopped", calling, peer, limit)
            yield status_dataset(OUT_OF_RESOURCES, f"more than {limit} matches; narrow the query"), None
            return
        yield status, response(order, request)
    log.info("MWL C-FIND from %s (%s): %d matches in %.1f ms", calling, peer, len(matches),
             (time.monotonic() - started) * 1000)


# --- request ----------------------------------------------------------------------

def _keys_of(ds: Dataset) -> list[tuple[int, str, str]]:
    out = []
    for tag in ds.keys():
        tag = int(tag)
        if tag == _CHARSET_TAG or tag >> 16 == 0 or tag & 0xFFFF == 0:
            continue
        keyword = keyword_for_tag(tag)
        vr = ds.get_item(tag).VR
        if vr in (None, "UN"):
            vr = dictionary_VR(tag).split(" or ")[0] if keyword else "UN"
        out.append((tag, keyword, vr))
    return out


def parse_request(identifier: Dataset) -> WorklistRequest:
    """The identifier as filters and requested keys; its text decoded in its own
    character set (the SPS item inherits it)."""
    raw = identifier.get_item(_CHARSET_TAG)
    charsets = parse_charset(element_text(identifier, _CHARSET_TAG, "CS", []) if raw else None)
    request = WorklistRequest(top=_keys_of(identifier), charset_requested=raw is not None)
    for tag, keyword, vr in request.top:
        if keyword == SPS:
            items = identifier[tag].value or []
            request.sps = _keys_of(items[0]) if items else []
            for item_tag, item_keyword, item_vr in request.sps:
                _take(request, items[0], item_tag, item_keyword, item_vr, charsets, SPS_KEYS)
        elif keyword != "QueryRetrieveLevel":
            _take(request, identifier, tag, keyword, vr, charsets, TOP_KEYS)
    return request


def _take(request: WorklistRequest, ds: Dataset, tag: int, keyword: str, vr: str, charsets: list[str],
          known: dict) -> None:
    if keyword not in known and keyword not in EMPTY_KEYS:
        request.warning = True           # returned with zero length
        return
    if vr == "SQ":
        return
    value = element_text(ds, tag, vr, charsets)
    if not value or value == "*":
        return
    if keyword == "ScheduledProcedureStepStatus":
        states = tuple(_STATES_BY_STATUS[v] for v in value.split("\\") if v in _STATES_BY_STATUS)
        if not states:
            raise QueryError(f"ScheduledProcedureStepStatus {value[:32]!r} is not a known status")
        request.states = states
    elif keyword in MATCHING:
        request.filters[keyword] = value
    else:
        request.warning = True           # a value we do not match on


# --- response ---------------------------------------------------------------------

def _fill(out: Dataset, keys: list[tuple[int, str, str]], values: dict, order: OrderView) -> None:
    for tag, keyword, vr in keys:
        if keyword in values:
            value = values[keyword](order)
            if isinstance(value, Sequence):
                out.add_new(tag, "SQ", value)
            else:
                out.add_new(tag, vr, value or None)
        else:
            out.add_new(tag, vr, [] if vr == "SQ" else None)


def response(order: OrderView, request: WorklistRequest) -> Dataset:
    """Exactly the requested keys (and Specific Character Set) for one order."""
    out = Dataset()
    for tag, keyword, vr in request.top:
        if keyword == "QueryRetrieveLevel":      # not part of this model; some SCUs send it
            continue
        if keyword == SPS:
            keys = request.sps or [(tag_for_keyword(k), k, dictionary_VR(k)) for k in SPS_KEYS]
            item = Dataset()
            _fill(item, keys, SPS_KEYS, order)
            out.add_new(tag, "SQ", Sequence([item]))
        else:
            _fill(out, [(tag, keyword, vr)], TOP_KEYS, order)
    texts = [str(e.value) for e in out.iterall() if e.VR in TEXT_VRS and e.value]
    if any(not t.isascii() for t in texts):
        out.SpecificCharacterSet = UTF8
    elif request.charset_requested:
        out.SpecificCharacterSet = ""
    return out
