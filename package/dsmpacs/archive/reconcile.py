"""Arriving studies met with their orders: matched, or kept for reconciliation.

The ingest (archive/ingest.py) calls ``Reconciler.instance_stored`` after each
newly archived instance that arrived over DICOM or STOW-RS (files imported from
disk are history, not arrivals). The first instance of a study with an
accession number decides, once per study (the unique key on OrderArrival):

* an order with that accession number and the same patient ID: *matched*; the
  order becomes in progress and the study is linked to it;
* an order with that accession number but another patient ID: *patient-differs*;
* no order with that accession number: *unknown-order*.

The last two wait on the reconciliation page until an administrator links the
study to an order (*linked*, audited by the web layer); an *unknown-order*
study is matched by itself when its order is registered later with the same
patient ID (``orders.Orders.create``). Studies without an
accession number are not recorded (most archived studies predate any order).
A process remembers the studies it has already decided, so the instances after
the first cost no query.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import peewee

from dsmpacs.archive.attributes import Level
from dsmpacs.archive.database import IndexUnavailable
from dsmpacs.archive.index import Index
from dsmpacs.archive.models import Order, OrderArrival, utcnow
from dsmpacs.archive.orders import (
    ARRIVAL_LINKED,
    ARRIVAL_MATCHED,
    ARRIVAL_PATIENT_DIFFERS,
    ARRIVAL_UNKNOWN_ORDER,
    OrderError,
    State,
)
from dsmpacs.archive.reading_rules import carry_order_priority
from dsmpacs.archive.recent import RecentKeys

log = logging.getLogger(__name__)

MATCHED = ARRIVAL_MATCHED
PATIENT_DIFFERS = ARRIVAL_PATIENT_DIFFERS
UNKNOWN_ORDER = ARRIVAL_UNKNOWN_ORDER
LINKED = ARRIVAL_LINKED
MISMATCHES = (PATIENT_DIFFERS, UNKNOWN_ORDER)
_REMEMBERED = 4096
# Origins of images made for an order: a modality's C-STORE (or a retrieve) and STOW-RS.
# Imported files and a re-index are archive history, not arrivals.
ARRIVING = frozenset({"dicom", "stow"})


@dataclass(frozen=True)
class Arrival:
    id: int
    study_instance_uid: str
    accession_number: str
    patient_id: str
    patient_name: str
    outcome: str
    order_id: int | None
    order_accession: str
    order_patient_id: str
    resolved_by: str
    resolved_at: datetime | None
    created_at: datetime


class Reconciler:
    def __init__(self, index: Index):
        self.index = index
        self._seen = RecentKeys(_REMEMBERED)

    # --- the ingest hook -------------------------------------------------------------
    def instance_stored(self, values: dict) -> None:
        """``values``: the extracted index values by level (archive/attributes.extract)."""
        study = values[Level.STUDY]
        uid = str(study.get("study_instance_uid") or "")
        if not uid or uid in self._seen:
            return
        accession = str(study.get("accession_number") or "").strip()
        if accession:
            patient = values[Level.PATIENT]
            self.study_arrived(uid, accession, str(patient.get("patient_id") or "").strip(),
                               str(patient.get("patient_name") or ""))
        self._seen.add(uid)


    def study_arrived(self, uid: str, accession: str, patient_id: str, patient_name: str) -> str:
        """Decide (once) how a study meets the orders; returns the outcome."""
        with self.index.write():
            existing = OrderArrival.get_or_none(OrderArrival.study_instance_uid == uid)
            if existing is not None:
                return existing.outcome
            order = Order.get_or_none(Order.accession_number == accession[:16])
            if order is None:
                outcome = UNKNOWN_ORDER
            elif order.patient_id != patient_id:
                outcome = PATIENT_DIFFERS
            else:
                outcome = MATCHED
                _start(order)
            try:
                with self.index.db.atomic():
                    OrderArrival.create(study_instance_uid=uid, accession_number=accession[:16],
                                        patient_id=patient_id[:64], patient_name=patient_name[:192],
                                        order=order, outcome=outcome)
            except peewee.IntegrityError:      # another process decided first
                return OrderArrival.get(OrderArrival.study_instance_uid == uid).outcome
        if outcome != MATCHED:
            log.info("study %s arrived with accession number %s: %s", uid, accession, outcome)
        return outcome

    # --- reconciliation --------------------------------------------------------------
    def arrivals(self, *, unresolved_only: bool = True, limit: int = 100) -> list[Arrival]:
        with self.index.read():
            query = (OrderArrival.select(OrderArrival, Order)
                     .join(Order, peewee.JOIN.LEFT_OUTER, on=(OrderArrival.order == Order.id)))
            if unresolved_only:
                query = query.where(OrderArrival.outcome.in_(MISMATCHES))
            rows = list(query.order_by(OrderArrival.created_at.desc(), OrderArrival.id.desc()).limit(limit))
            return [_arrival(r) for r in rows]

    def get(self, arrival_id: int) -> Arrival | None:
        with self.index.read():
            row = (OrderArrival.select(OrderArrival, Order)
                   .join(Order, peewee.JOIN.LEFT_OUTER, on=(OrderArrival.order == Order.id))
                   .where(OrderArrival.id == arrival_id).first())
            return _arrival(row) if row else None

    def link(self, arrival_id: int, accession: str, *, actor: str) -> Arrival:
        """An administrator's decision: this study belongs to the order with ``accession``."""
        with self.index.write():
            arrival = OrderArrival.get_or_none(OrderArrival.id == arrival_id)
            if arrival is None:
                raise OrderError("not_found", "id", f"no arrival {arrival_id}")
            if arrival.outcome not in MISMATCHES:
                raise OrderError("already_resolved", "id", "this study is already matched to an order")
            order = Order.get_or_none(Order.accession_number == accession.strip()[:16])
            if order is None:
                raise OrderError("unknown_accession", "accession_number",
                                 f"no order has accession number {accession.strip()[:16]!r}")
            OrderArrival.update(order=order, outcome=LINKED, resolved_by=actor[:64],
                                resolved_at=utcnow()).where(OrderArrival.id == arrival_id).execute()
            _start(order)
            # The study's reading task, made when it arrived, takes the order's urgency.
            carry_order_priority(arrival.study_instance_uid, order.priority)
        return self.get(arrival_id)  # type: ignore[return-value]


def _start(order: Order) -> None:
    if order.state == State.SCHEDULED.value:
        Order.update(state=State.IN_PROGRESS.value, updated_at=utcnow()).where(
            (Order.id == order.id) & (Order.state == State.SCHEDULED.value)).execute()


def _arrival(row: OrderArrival) -> Arrival:
    order = row.order if row.order_id else None
    return Arrival(row.id, row.study_instance_uid, row.accession_number, row.patient_id, row.patient_name,
                   row.outcome, row.order_id, order.accession_number if order else "",
                   order.patient_id if order else "", row.resolved_by, row.resolved_at, row.created_at)


def hook(index: Index):
    """The ingest's observer: never lets a reconciliation problem fail a store."""
    reconciler = Reconciler(index)

    def observe(values: dict, origin) -> None:
        if origin.kind not in ARRIVING:
            return
        try:
            reconciler.instance_stored(values)
        except (IndexUnavailable, peewee.PeeweeException) as exc:
            log.error("could not match the arrived study to an order: %s", exc)
    return observe
