"""Orders: what registration asks the modalities to do.

An order is one requested procedure for one patient with one scheduled
procedure step: the patient (name, ID, birth date, sex), the procedure (ID,
description, optional code), a unique accession number (generated when none is
given), the requested date and time, a priority (PS3.3 Requested Procedure
Priority: STAT, HIGH, ROUTINE, MEDIUM, LOW), the requesting physician, the
modality and the scheduled station's AE title. Its state runs scheduled ->
in progress (the modality's MPPS, archive/performed.py; or images arrived,
archive/reconcile.py, even before the order was registered) -> completed (MPPS
or a registrar), or ends as discontinued.

The Modality Worklist SCP (dicom/worklist.py) reads orders through
``Orders.worklist``, whose matching follows the archive's C-FIND matching
(archive/matching.py, and the normalised person-name columns). No protocol
lives here: values are strings and the filter is a plain dataclass. CSV import
is archive/ordercsv.py.
"""
from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime
from enum import Enum
from typing import Iterator

import peewee
from pydicom.uid import generate_uid

from dsmpacs.archive.attributes import normalise_date, normalise_time
from dsmpacs.archive.charset import normalise, person_name_groups, person_name_search_forms
from dsmpacs.archive.database import is_mysql
from dsmpacs.archive.index import Index
from dsmpacs.archive.matching import (
    Dialect,
    all_of,
    any_of,
    date_bounds,
    match_text,
    range_condition,
    time_bounds,
)
from dsmpacs.archive.models import Order, OrderArrival, utcnow
from dsmpacs.archive.reading_rules import carry_order_priority

# How an arrived study met the orders (OrderArrival.outcome; archive/reconcile.py).
ARRIVAL_MATCHED = "matched"
ARRIVAL_PATIENT_DIFFERS = "patient-differs"
ARRIVAL_UNKNOWN_ORDER = "unknown-order"
ARRIVAL_LINKED = "linked"
# Requested Procedure Priority (0040,1003), PS3.3 C.4.11.1: its defined terms.
PRIORITIES = ("STAT", "HIGH", "ROUTINE", "MEDIUM", "LOW")
# Registration may be done by these roles (there is no registrar role yet).
REGISTRAR_ROLES = frozenset({"admin", "radiologist"})
# Audit actions of this module (archive/audit.py records any action name).
AUDIT_CREATE = "order-create"
AUDIT_IMPORT = "order-import"
AUDIT_STATE = "order-state"
AUDIT_LINK = "order-link"
AUDIT_CHANGE = "order-change"

_MODALITY_RE = re.compile(r"^[A-Z0-9_]{1,16}$")
_SH_FORBIDDEN = re.compile(r"[\\\x00-\x1f\x7f]")


class State(str, Enum):
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    DISCONTINUED = "discontinued"


# Which states a registrar may set by hand, from which. (In progress comes from arrivals.)
_MANUAL = {
    State.COMPLETED: {State.SCHEDULED, State.IN_PROGRESS},
    State.DISCONTINUED: {State.SCHEDULED, State.IN_PROGRESS},
    State.SCHEDULED: {State.DISCONTINUED},
}


class OrderError(ValueError):
    """An order that cannot be registered. ``code`` names the problem for the UI's
    catalog (``orders.error.<code>``), ``field`` the form field; str() is English."""

    def __init__(self, code: str, field_name: str, message: str):
        super().__init__(message)
        self.code = code
        self.field = field_name


@dataclass
class OrderInput:
    """What a registrar types (or a CSV line holds); every value a string."""
    patient_id: str = ""
    patient_name: str = ""
    birth_date: str = ""
    sex: str = ""
    accession_number: str = ""
    procedure_id: str = ""
    procedure_description: str = ""
    procedure_code: str = ""
    scheduled_date: str = ""
    scheduled_time: str = ""
    priority: str = ""
    requesting_physician: str = ""
    modality: str = ""
    station_ae: str = ""

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass(frozen=True)
class OrderView:
    id: int
    accession_number: str
    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    procedure_id: str
    procedure_description: str
    procedure_code: str
    procedure_code_scheme: str
    scheduled_date: str
    scheduled_time: str
    priority: str
    requesting_physician: str
    modality: str
    station_ae: str
    step_id: str
    study_instance_uid: str
    state: State
    created_by: str
    created_at: datetime
    updated_at: datetime
    matched_studies: tuple[str, ...] = ()

    @classmethod
    def of(cls, row: Order, matched: tuple[str, ...] = ()) -> "OrderView":
        return cls(row.id, row.accession_number, row.patient_id, row.patient_name,
                   row.patient_birth_date, row.patient_sex, row.requested_procedure_id,
                   row.procedure_description, row.procedure_code, row.procedure_code_scheme,
                   row.scheduled_date, row.scheduled_time, row.priority, row.requesting_physician,
                   row.modality, row.station_ae_title, row.step_id, row.study_instance_uid,
                   State(row.state), row.created_by, row.created_at, row.updated_at, matched)


@dataclass(frozen=True)
class WorklistFilter:
    """Matching values in DICOM matching syntax (wildcards, ranges, ``\\`` lists);
    empty means universal. ``states`` restricts the order states returned."""
    station_ae: str = ""
    date: str = ""
    time: str = ""
    modality: str = ""
    patient_name: str = ""
    patient_id: str = ""
    accession_number: str = ""
    procedure_id: str = ""
    states: tuple[State, ...] = (State.SCHEDULED, State.IN_PROGRESS)
    limit: int | None = None


# --- validation ----------------------------------------------------------------------

def _text(value: str, name: str, limit: int, *, required: bool = False) -> str:
    value = unicodedata.normalize("NFC", (value or "").strip())
    if required and not value:
        raise OrderError("required", name, f"{name} is required")
    if len(value) > limit:
        raise OrderError("too_long", name, f"{name} is longer than {limit} characters")
    if _SH_FORBIDDEN.search(value):
        raise OrderError("bad_characters", name, f"{name} holds a backslash or a control character")
    return value


def person_name(value: str, name: str, *, required: bool = False) -> str:
    """The DICOM PN form of a typed name: ``Wang Xiaoming`` -> ``Wang^Xiaoming``; a
    value with ``^`` or ``=`` is kept; an ideographic name without separators (王小明)
    is kept whole, as a Chinese registrar writes it."""
    value = _text(value, name, 192, required=required)
    if value and "^" not in value and "=" not in value and " " in value:
        family, given = value.split(" ", 1)
        value = f"{family}^{given.strip()}"
    if any(len(group) > 64 for group in person_name_groups(value)):
        raise OrderError("too_long", name, f"{name}: a name component group is longer than 64 characters")
    return value


def _date(value: str, name: str, *, required: bool = False) -> str:
    value = (value or "").strip()
    if not value:
        if required:
            raise OrderError("required", name, f"{name} is required")
        return ""
    text = normalise_date(value)
    try:
        datetime.strptime(text, "%Y%m%d")
    except ValueError:
        raise OrderError("bad_date", name, f"{name} {value[:20]!r} is not a date (YYYY-MM-DD)") from None
    return text


def _time(value: str, name: str) -> str:
    value = (value or "").strip()
    if not value:
        return ""
    text = normalise_time(value)[:6]
    if not text or int(text[:2]) > 23 or int(text[2:4]) > 59 or int(text[4:6]) > 59:
        raise OrderError("bad_time", name, f"{name} {value[:20]!r} is not a time (HH:MM)")
    return text


def validate(data: OrderInput) -> dict[str, str]:
    """The order's column values, or OrderError for the first problem found."""
    sex = (data.sex or "").strip().upper()
    if sex not in ("", "M", "F", "O"):
        raise OrderError("bad_sex", "sex", f"sex {data.sex[:8]!r} is not M, F or O")
    priority = (data.priority or "").strip().upper() or "ROUTINE"
    if priority not in PRIORITIES:
        raise OrderError("bad_priority", "priority",
                         f"priority {data.priority[:16]!r} is not one of {', '.join(PRIORITIES)}")
    modality = (data.modality or "").strip().upper()
    if not modality:
        raise OrderError("required", "modality", "modality is required")
    if not _MODALITY_RE.match(modality):
        raise OrderError("bad_modality", "modality", f"modality {data.modality[:20]!r} is not a DICOM modality")
    station = _text(data.station_ae, "station_ae", 16)
    if station and not all(" " <= c <= "~" for c in station):
        raise OrderError("bad_characters", "station_ae", "station_ae must be plain ASCII")
    accession = _text(data.accession_number, "accession_number", 16)
    if accession and not all(" " <= c <= "~" for c in accession):
        raise OrderError("bad_characters", "accession_number", "accession_number must be plain ASCII")
    return dict(
        patient_id=_text(data.patient_id, "patient_id", 64, required=True),
        patient_name=person_name(data.patient_name, "patient_name", required=True),
        patient_birth_date=_date(data.birth_date, "birth_date"),
        patient_sex=sex,
        accession_number=accession,
        requested_procedure_id=_text(data.procedure_id, "procedure_id", 16),
        procedure_description=_text(data.procedure_description, "procedure_description", 64, required=True),
        procedure_code=_text(data.procedure_code, "procedure_code", 16),
        scheduled_date=_date(data.scheduled_date, "scheduled_date", required=True),
        scheduled_time=_time(data.scheduled_time, "scheduled_time"),
        priority=priority,
        requesting_physician=person_name(data.requesting_physician, "requesting_physician"),
        modality=modality,
        station_ae_title=station,
    )


def new_accession_number(today: date | None = None) -> str:
    """``YYYYMMDD`` and six random digits: 14 characters (SH allows 16), sortable by
    day, and unguessable enough that two desks never collide in practice (the unique
    key settles it if they do)."""
    day = (today or utcnow().date()).strftime("%Y%m%d")
    return f"{day}{secrets.randbelow(10**6):06d}"


# --- the service ---------------------------------------------------------------------

class Orders:
    def __init__(self, index: Index):
        self.index = index
        self.dialect = Dialect(is_mysql(index.db))

    def create(self, data: OrderInput, *, actor: str = "", institution: int | None = None) -> OrderView:
        """``institution``: the registrar's (archive/visibility.py); None: the default one."""
        values = validate(data)
        generated = not values["accession_number"]
        for _attempt in range(5):
            accession = values["accession_number"] or new_accession_number()
            alpha, ideo, phon = person_name_search_forms(values["patient_name"])
            # A 2.25 UUID-derived UID (PS3.5 B.2): no registered root is needed.
            row = dict(values, accession_number=accession,
                       requested_procedure_id=values["requested_procedure_id"] or accession,
                       procedure_code_scheme="99DSMPACS" if values["procedure_code"] else "",
                       step_id=accession, study_instance_uid=generate_uid(prefix=None),
                       patient_name_alpha=alpha[:128], patient_name_ideo=ideo[:128],
                       patient_name_phon=phon[:128], state=State.SCHEDULED.value,
                       created_by=actor[:64])
            if institution is not None:
                row["institution"] = institution
            try:
                with self.index.write():
                    order = Order.create(**row)
                    early = _claim_early_arrivals(order)
                return self.get(order.id) if early else OrderView.of(order)
            except peewee.IntegrityError:
                if not generated:
                    raise OrderError("duplicate_accession", "accession_number",
                                     f"accession number {accession} is already registered") from None
                values["accession_number"] = ""
        raise OrderError("duplicate_accession", "accession_number", "no free accession number")

    def get(self, order_id: int) -> OrderView | None:
        with self.index.read():
            row = Order.get_or_none(Order.id == order_id)
            return OrderView.of(row, self._matched([row.id]).get(row.id, ())) if row else None

    def by_accession(self, accession: str) -> OrderView | None:
        with self.index.read():
            row = Order.get_or_none(Order.accession_number == accession)
            return OrderView.of(row) if row else None

    def list(self, *, state: State | None = None, text: str = "", limit: int = 50,
             offset: int = 0, scope=None) -> list[OrderView]:
        """Newest scheduled date first. ``text``: an accession number or patient ID prefix.
        ``scope`` (archive/visibility.Scope): only the orders of its institutions."""
        with self.index.read():
            query = Order.select()
            visible = scope.orders_condition(Order) if scope is not None else None
            if visible is not None:
                query = query.where(visible)
            if state is not None:
                query = query.where(Order.state == state.value)
            if text:
                pattern = text.strip() + "*"
                query = query.where(match_text(Order.accession_number, pattern, self.dialect)
                                    | match_text(Order.patient_id, pattern, self.dialect))
            rows = list(query.order_by(Order.scheduled_date.desc(), Order.scheduled_time.desc(),
                                       Order.id.desc()).limit(limit).offset(offset))
            matched = self._matched([r.id for r in rows])
            return [OrderView.of(r, matched.get(r.id, ())) for r in rows]

    def _matched(self, ids: list[int]) -> dict[int, tuple[str, ...]]:
        out: dict[int, list[str]] = {}
        if ids:
            for arrival in (OrderArrival.select(OrderArrival.order, OrderArrival.study_instance_uid)
                            .where(OrderArrival.order.in_(ids)
                                   & OrderArrival.outcome.in_((ARRIVAL_MATCHED, ARRIVAL_LINKED)))):
                out.setdefault(arrival.order_id, []).append(arrival.study_instance_uid)
        return {k: tuple(v) for k, v in out.items()}

    def set_state(self, order_id: int, state: State, scope=None) -> OrderView:
        """A registrar's change: completed or discontinued, or discontinued back to scheduled.
        An order outside ``scope`` is, to its caller, not there."""
        with self.index.write():
            row = _scoped_order(order_id, scope)
            if State(row.state) not in _MANUAL.get(state, set()):
                raise OrderError("bad_transition", "state", f"an order {row.state} cannot become {state.value}")
            Order.update(state=state.value, updated_at=utcnow()).where(Order.id == order_id).execute()
        return self.get(order_id)  # type: ignore[return-value]

    def change(self, order_id: int, data: OrderInput, scope=None) -> OrderView:
        """A correction of a scheduled order (an HL7 order change, hl7v2/): every value
        but the accession number, the study UID and the institution. Only while
        scheduled: once the modality has started, what it acquired follows the old
        values, and the order is discontinued and registered anew instead."""
        values = validate(data)
        values.pop("accession_number")
        alpha, ideo, phon = person_name_search_forms(values["patient_name"])
        with self.index.write():
            row = _scoped_order(order_id, scope)
            if row.state != State.SCHEDULED.value:
                raise OrderError("bad_transition", "state", f"an order {row.state} cannot be changed")
            values.update(requested_procedure_id=values["requested_procedure_id"] or row.accession_number,
                          procedure_code_scheme="99DSMPACS" if values["procedure_code"] else "",
                          patient_name_alpha=alpha[:128], patient_name_ideo=ideo[:128],
                          patient_name_phon=phon[:128], updated_at=utcnow())
            Order.update(**values).where(Order.id == order_id).execute()
        return self.get(order_id)  # type: ignore[return-value]

    # --- the worklist --------------------------------------------------------------
    def worklist(self, flt: WorklistFilter, scope=None) -> Iterator[OrderView]:
        """Orders matching the filter, by scheduled date and time; with a ``scope``
        (a modality bound to an institution), only that institution's."""
        conditions = [Order.state.in_([s.value for s in flt.states])]
        visible = scope.orders_condition(Order) if scope is not None else None
        if visible is not None:
            conditions.append(visible)
        for column, value in ((Order.station_ae_title, flt.station_ae), (Order.modality, flt.modality),
                              (Order.patient_id, flt.patient_id),
                              (Order.accession_number, flt.accession_number),
                              (Order.requested_procedure_id, flt.procedure_id)):
            if value and value != "*":
                conditions.append(any_of([match_text(column, v, self.dialect) for v in _values(value)]))
        if flt.date:
            conditions.append(any_of([range_condition(Order.scheduled_date, *date_bounds(v))
                                      for v in _values(flt.date)]))
        if flt.time:
            conditions.append(any_of([range_condition(Order.scheduled_time, *time_bounds(v))
                                      for v in _values(flt.time)]))
        if flt.patient_name and flt.patient_name != "*":
            conditions.append(any_of([self._name(v) for v in _values(flt.patient_name)]))
        with self.index.read():
            query = (Order.select().where(all_of(conditions))
                     .order_by(Order.scheduled_date, Order.scheduled_time, Order.id))
            if flt.limit:
                query = query.limit(flt.limit)
            rows = list(query)
        return iter([OrderView.of(r) for r in rows])

    def _name(self, value: str):
        """Case-insensitive, normalised PN matching, as archive/query.py does for C-FIND."""
        forms = (Order.patient_name_alpha, Order.patient_name_ideo, Order.patient_name_phon)
        if "=" not in value:
            pattern = normalise(value)
            return any_of([match_text(form, pattern, self.dialect) for form in forms])
        conditions = [match_text(form, normalise(group), self.dialect)
                      for form, group in zip(forms, person_name_groups(value))
                      if normalise(group) not in ("", "*")]
        return all_of(conditions) if conditions else (Order.id > 0)


def _claim_early_arrivals(order: Order) -> int:
    """Studies that arrived with this accession number and patient ID before the order
    was registered (waiting as unknown-order) are matched to it now; the order starts."""
    waiting = ((OrderArrival.accession_number == order.accession_number)
               & (OrderArrival.patient_id == order.patient_id)
               & (OrderArrival.outcome == ARRIVAL_UNKNOWN_ORDER))
    studies = [uid for (uid,) in OrderArrival.select(OrderArrival.study_instance_uid).where(waiting).tuples()]
    if not studies:
        return 0
    claimed = (OrderArrival.update(order=order, outcome=ARRIVAL_MATCHED)
               .where(waiting & OrderArrival.study_instance_uid.in_(studies)).execute())
    Order.update(state=State.IN_PROGRESS.value).where(Order.id == order.id).execute()
    # Their reading tasks, made when the images came, take the order's urgency.
    for uid in studies:
        carry_order_priority(uid, order.priority)
    return claimed


def _values(value: str) -> list[str]:
    """Multiple value matching (PS3.4 C.2.2.2.8): ``CT\\MR`` matches either."""
    values = [v.strip(" \x00") for v in value.split("\\")]
    return [v for v in values if v] or [""]


def as_dict(view: OrderView) -> dict:
    out = asdict(view)
    out["state"] = view.state.value
    return out


def _scoped_order(order_id: int, scope) -> Order:
    """The order row, inside a write transaction; one outside ``scope`` is, to its
    caller, not there."""
    row = Order.get_or_none(Order.id == order_id)
    if row is None or (scope is not None and not scope.allows_institution(row.institution)):
        raise OrderError("not_found", "id", f"no order {order_id}")
    return row
