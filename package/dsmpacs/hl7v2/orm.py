"""ORM^O01 (HL7 v2.5 chapter 4, general order) onto the orders domain.

The same calls as the registration page and the CSV import (archive/orders.py):
order control NW creates an order, XO changes a scheduled one, CA discontinues
one. Each ORC (with the OBR after it) of a message is one order, applied on its
own; the ACK lists every one that could not be (docs/workflow.md, "Orders from a
RIS or HIS over HL7", has the field table).

The accession number is OBR-18 (IHE Scheduled Workflow's placer field 1), else
the filler order number ORC-3, else the placer order number ORC-2: the same
message field finds the order again for XO and CA.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import hl7

from dsmpacs.archive.audit import AuditAction, AuditTrail, OncePer
from dsmpacs.archive.database import IndexProblem
from dsmpacs.archive.institutions import DEFAULT_INSTITUTION_ID, InstitutionError, Institutions
from dsmpacs.archive.orders import (
    AUDIT_CHANGE,
    AUDIT_CREATE,
    AUDIT_STATE,
    OrderError,
    OrderInput,
    Orders,
    OrderView,
    State,
)
from dsmpacs.archive.visibility import Scope
from dsmpacs.hl7v2 import ack
from dsmpacs.hl7v2.ack import Header, Outcome, Problem

log = logging.getLogger(__name__)

# ORC-1 order control codes (HL7 table 0119) this archive acts on.
NEW, CHANGE, CANCEL = "NW", "XO", "CA"
# Quantity/timing priority (TQ component 6, TQ1-9; HL7 table 0027) -> Requested Procedure Priority.
PRIORITY = {"S": "STAT", "A": "HIGH", "P": "HIGH", "T": "HIGH", "R": "ROUTINE", "C": "ROUTINE"}
# HL7 table 0001 (administrative sex) -> DICOM Patient's Sex; U(nknown) stays empty.
SEX = {"M": "M", "F": "F", "O": "O", "A": "O", "N": "O", "U": ""}
# Diagnostic service section IDs (table 0074) whose DICOM modality differs.
MODALITY = {"NMR": "MR", "NMS": "NM"}
# OrderError.code -> table 0357
ERROR_CODE = {"required": ack.REQUIRED_MISSING, "duplicate_accession": ack.DUPLICATE_KEY,
              "not_found": ack.UNKNOWN_KEY, "bad_transition": ack.INTERNAL_ERROR,
              "bad_sex": ack.TABLE_VALUE_NOT_FOUND, "bad_priority": ack.TABLE_VALUE_NOT_FOUND,
              "bad_modality": ack.TABLE_VALUE_NOT_FOUND, "bad_control": ack.TABLE_VALUE_NOT_FOUND}
REFUSAL_DEDUP_SECONDS = 60


def value(segment, field: int, component: int = 1, repetition: int = 1, subcomponent: int = 1) -> str:
    """A field's text, unescaped; '' when absent."""
    if segment is None:
        return ""
    try:
        return str(segment.extract_field(1, field, repetition, component, subcomponent)).strip()
    except (IndexError, KeyError, ValueError):
        return ""


def repetitions(segment, field: int) -> int:
    try:
        return len(segment(field)) if field < len(segment) else 0
    except (IndexError, TypeError):
        return 0


def person_name(segment, field: int, first: int = 1) -> str:
    """An XPN (from component ``first``: 1 for XPN, 2 for XCN) as a DICOM PN,
    family^given^middle^prefix^suffix. Two repetitions, one in Latin letters and one
    in Chinese characters, become the alphabetic and ideographic groups."""
    names = []
    for rep in range(1, max(1, min(repetitions(segment, field), 3)) + 1):
        family, given, middle, suffix, prefix = (value(segment, field, first + i, rep) for i in range(5))
        name = "^".join((family, given, middle, prefix, suffix)).rstrip("^")
        if name:
            names.append(name)
    if len(names) > 1:
        latin = [n for n in names if n.isascii()]
        other = [n for n in names if not n.isascii()]
        if latin and other:
            return f"{latin[0]}={other[0]}"
    return names[0] if names else ""


def timestamp(text: str) -> tuple[str, str]:
    """HL7 TS/DTM ``YYYYMMDD[HHMM[SS[.S]]][+ZZZZ]`` -> (YYYYMMDD, HH:MM[:SS])."""
    digits = text.split("+")[0].split("-")[0].split(".")[0]
    day, clock = digits[:8], digits[8:14]
    if len(clock) >= 4:
        clock = ":".join(clock[i:i + 2] for i in range(0, len(clock), 2))
    else:
        clock = ""
    return day, clock


@dataclass(frozen=True)
class Placed:
    """One ORC and its OBR, read."""
    control: str
    data: OrderInput
    accession_from: tuple[str, int]     # where the accession number came from
    schedule_from: tuple[str, int]


def _first(*candidates: tuple[str, tuple[str, int]]) -> tuple[str, tuple[str, int]]:
    for text, where in candidates:
        if text:
            return text, where
    return "", candidates[0][1]


def read_order(pid, orc, obr, msh) -> Placed:
    accession, accession_from = _first((value(obr, 18), ("OBR", 18)), (value(orc, 3), ("ORC", 3)),
                                       (value(obr, 3), ("OBR", 3)), (value(orc, 2), ("ORC", 2)),
                                       (value(obr, 2), ("OBR", 2)))
    when, schedule_from = _first((value(obr, 36), ("OBR", 36)), (value(orc, 7, 4), ("ORC", 7)),
                                 (value(obr, 27, 4), ("OBR", 27)), (value(msh, 7), ("MSH", 7)))
    day, clock = timestamp(when)
    priority = value(orc, 7, 6) or value(obr, 27, 6)
    modality = value(obr, 24).upper()
    code, text = value(obr, 4, 1), value(obr, 4, 2)
    data = OrderInput(
        patient_id=value(pid, 3), patient_name=person_name(pid, 5),
        birth_date=value(pid, 7)[:8], sex=SEX.get(value(pid, 8).upper(), value(pid, 8)),
        accession_number=accession, procedure_id=value(obr, 19),
        procedure_description=text or code, procedure_code=code,
        scheduled_date=day, scheduled_time=clock,
        priority=PRIORITY.get(priority.upper()[:1], "ROUTINE") if priority else "",
        requesting_physician=person_name(obr, 16, 2) or person_name(orc, 12, 2),
        modality=MODALITY.get(modality, modality))
    return Placed(value(orc, 1).upper(), data, accession_from, schedule_from)


def _where(error: OrderError, placed: Placed) -> tuple[str, int, int]:
    return {"patient_id": ("PID", 3, 1), "patient_name": ("PID", 5, 0), "birth_date": ("PID", 7, 0),
            "sex": ("PID", 8, 0), "accession_number": (*placed.accession_from, 0),
            "procedure_id": ("OBR", 19, 0), "procedure_description": ("OBR", 4, 2),
            "procedure_code": ("OBR", 4, 1), "scheduled_date": (*placed.schedule_from, 0),
            "scheduled_time": (*placed.schedule_from, 0), "priority": ("ORC", 7, 6),
            "requesting_physician": ("OBR", 16, 0), "modality": ("OBR", 24, 0),
            "state": ("ORC", 1, 0), "id": (*placed.accession_from, 0)}.get(error.field, ("", 0, 0))


def header_of(message) -> Header:
    msh = message.segment("MSH")
    return Header(sending_application=value(msh, 3), sending_facility=value(msh, 4),
                  receiving_facility=value(msh, 6), event=value(msh, 9, 2),
                  control_id=value(msh, 10), processing_id=value(msh, 11), version=value(msh, 12),
                  charset=value(msh, 18))


class OrderMessages:
    """Applies ORM^O01 messages; one per DICOM daemon, called from the listener's threads."""

    def __init__(self, archive):
        self.settings = archive.settings
        self.orders = Orders(archive.index)
        self.institutions = Institutions(archive.index)
        self.trail = AuditTrail.of(archive)
        self._refusals = OncePer(REFUSAL_DEDUP_SECONDS)

    def refused(self, action: AuditAction, actor: str, address: str, reason: str) -> None:
        """Audit a refusal once a minute per sender, address and reason; never raises."""
        if not self._refusals.first((action.value, actor, address, reason)):
            return
        try:
            self.trail.record(actor, action, outcome="refused", address=address, detail=f"HL7: {reason}")
        except Exception:
            log.exception("could not audit the refusal of HL7 from %s (%s)", actor, address)

    def handle(self, message: hl7.Message, header: Header, address: str) -> Outcome:
        msh = message.segment("MSH")
        kind = value(msh, 9, 1).upper()
        actor = f"hl7:{header.sending_application}^{header.sending_facility}"
        if kind != "ORM":
            return Outcome("AR", f"{kind or 'no message type'} is not taken here: only ORM^O01",
                           [Problem(ack.UNSUPPORTED_MESSAGE_TYPE, "MSH", 9, 1, "only ORM^O01 is taken")])
        if header.event.upper() != "O01":
            return Outcome("AR", "only ORM^O01", [Problem(ack.UNSUPPORTED_EVENT, "MSH", 9, 2, "only O01")])
        if not header.version.startswith("2."):
            return Outcome("AR", "only HL7 v2", [Problem(ack.UNSUPPORTED_VERSION, "MSH", 12, 0,
                                                         f"version {header.version[:20]!r}")])
        if not self.sender_allowed(header):
            reason = f"sender {header.sending_application}^{header.sending_facility} is not allowed"
            log.warning("HL7 from %s: %s (hl7_allowed_senders)", address, reason)
            self.refused(AuditAction.ACCESS_DENIED, actor, address, reason)
            return Outcome("AR", reason[:80], [Problem(ack.INTERNAL_ERROR, "MSH", 3, 0,
                                                       f"{reason} (hl7_allowed_senders)")])
        try:
            institution = self.institution(header.sending_facility)
            return self._apply(message, msh, header, actor, address, institution)
        except IndexProblem as exc:
            log.error("HL7 %s from %s: the index is unavailable: %s", header.control_id, address, exc)
            return Outcome("AR", "index unavailable, send again later",
                           [Problem(ack.INTERNAL_ERROR, text="the archive's index is unavailable")])
        except InstitutionError as exc:
            log.error("HL7: hl7_institution: %s", exc)
            return Outcome("AR", "hl7_institution is not an institution",
                           [Problem(ack.INTERNAL_ERROR, text=str(exc))])

    def sender_allowed(self, header: Header) -> bool:
        allowed = self.settings.hl7_senders
        if not allowed:
            return True
        app, facility = header.sending_application.upper(), header.sending_facility.upper()
        return any(a in ("*", app) and f in ("*", facility) for a, f in allowed)

    def institution(self, facility: str) -> int:
        """MSH-4 through the Institution Name aliases, else hl7_institution, else the default.
        A sender changes and cancels only the orders of the institution it maps to."""
        found = self.institutions.by_alias(facility) if facility else None
        if found is None and self.settings.hl7_institution:
            found = self.institutions.get(self.settings.hl7_institution).id
        return DEFAULT_INSTITUTION_ID if found is None else found

    def _apply(self, message, msh, header: Header, actor: str, address: str,
               institution: int) -> Outcome:
        pids = [s for s in message if str(s[0]) == "PID"]
        pid = pids[0] if pids else None
        pairs, orc = [], None
        for segment in message:
            name = str(segment[0])
            if name == "ORC":
                if orc is not None:
                    pairs.append((orc, None))
                orc = segment
            elif name == "OBR":
                pairs.append((orc, segment))
                orc = None
        if orc is not None:
            pairs.append((orc, None))
        if not pairs or pairs[0][0] is None:
            return Outcome("AE", "no ORC segment", [Problem(ack.REQUIRED_MISSING, "ORC", 1, 0,
                                                            "an ORM^O01 needs an ORC segment")])
        scope = Scope(frozenset({institution}))
        problems, done = [], []
        for orc_segment, obr in pairs:
            placed = read_order(pid, orc_segment, obr, msh)
            try:
                done.append(self._one(placed, scope, institution, header, actor, address))
            except OrderError as exc:
                segment, field, component = _where(exc, placed)
                problems.append(Problem(ERROR_CODE.get(exc.code, ack.DATA_TYPE_ERROR), segment, field,
                                        component, str(exc)))
                log.warning("HL7 %s from %s: %s %s not applied: %s", header.control_id, address,
                            placed.control, placed.data.accession_number or "(no accession)", exc)
        if problems:
            return Outcome("AE", f"{len(problems)} of {len(pairs)} orders not applied", problems)
        return Outcome("AA", "; ".join(done)[:80])

    def _one(self, placed: Placed, scope, institution, header: Header, actor: str, address: str) -> str:
        data = placed.data
        control = placed.control
        if control not in (NEW, CHANGE, CANCEL):
            raise OrderError("bad_control", "state", f"order control {control[:8]!r} is not NW, XO or CA")
        detail = f"HL7 ORM^O01 {header.control_id[:40]} {control}"
        if control == NEW:
            existing = self.orders.by_accession(data.accession_number) if data.accession_number else None
            if (existing is not None and existing.patient_id == data.patient_id.strip()
                    and existing.state is not State.DISCONTINUED):
                return f"{existing.accession_number} already registered"      # a resent message
            view = self.orders.create(data, actor=actor, institution=institution)
            self._audit(AUDIT_CREATE, view, actor, address, detail)
            log.info("HL7 %s: order %s registered for %s", header.control_id, view.accession_number,
                     view.patient_id)
            return f"{view.accession_number} registered"
        existing = self._find(data.accession_number)
        if control == CHANGE:
            view = self.orders.change(existing.id, data, scope)
            self._audit(AUDIT_CHANGE, view, actor, address, detail)
            return f"{view.accession_number} changed"
        if existing.state is State.DISCONTINUED:
            return f"{existing.accession_number} already cancelled"
        view = self.orders.set_state(existing.id, State.DISCONTINUED, scope)
        self._audit(AUDIT_STATE, view, actor, address, detail + " -> discontinued")
        return f"{view.accession_number} cancelled"

    def _find(self, accession: str) -> OrderView:
        if not accession:
            raise OrderError("required", "accession_number", "the order's number (OBR-18, ORC-3 or ORC-2) "
                             "is missing")
        existing = self.orders.by_accession(accession)
        if existing is None:
            raise OrderError("not_found", "id", f"no order {accession}")
        return existing

    def _audit(self, action: str, view: OrderView, actor: str, address: str, detail: str) -> None:
        self.trail.record(actor, action, address=address, patient_id=view.patient_id,
                          patient_name=view.patient_name,
                          detail=f"{detail} accession {view.accession_number}")
