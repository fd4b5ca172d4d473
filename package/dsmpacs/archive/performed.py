"""Performed procedure steps: a modality says it started, completed or discontinued
the procedure of an order (the MPPS SCP, dicom/mpps.py, is the protocol side).

A step names the order it performs by accession number (or, failing that, by the
Scheduled Procedure Step ID the worklist gave it, which is the accession number
here). A step that starts puts a scheduled order in progress; COMPLETED and
DISCONTINUED end both the step and the order. A completed or discontinued step
cannot change any more (PS3.4 F.7.2.2). Steps without a matching order (an
unscheduled examination) are kept, with no order.
"""
from __future__ import annotations

from dataclasses import dataclass

import peewee

from dsmpacs.archive.index import Index
from dsmpacs.archive.models import Order, PerformedStep, utcnow
from dsmpacs.archive.orders import State

IN_PROGRESS = "IN PROGRESS"
COMPLETED = "COMPLETED"
DISCONTINUED = "DISCONTINUED"
_FINAL = {COMPLETED: State.COMPLETED, DISCONTINUED: State.DISCONTINUED}


class StepError(ValueError):
    """``code``: duplicate, no-such-step, final (no longer updatable), bad-status."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class StepView:
    sop_instance_uid: str
    status: str
    accession_number: str
    order_id: int | None


class PerformedSteps:
    def __init__(self, index: Index):
        self.index = index

    def started(self, uid: str, status: str, *, accessions: list[str], step_ids: list[str],
                calling_ae: str = "") -> StepView:
        """N-CREATE: a new step, normally IN PROGRESS."""
        if status != IN_PROGRESS:
            raise StepError("bad-status", f"a new performed procedure step must be {IN_PROGRESS}, not {status!r}")
        with self.index.write():
            order = _order_for(accessions, step_ids)
            try:
                with self.index.db.atomic():
                    PerformedStep.create(sop_instance_uid=uid, order=order, status=status,
                                         accession_number=(order.accession_number if order
                                                           else (accessions or [""])[0][:16]),
                                         calling_ae=calling_ae[:16])
            except peewee.IntegrityError:
                raise StepError("duplicate", f"performed procedure step {uid} exists") from None
            if order is not None and order.state == State.SCHEDULED.value:
                Order.update(state=State.IN_PROGRESS.value, updated_at=utcnow()).where(
                    Order.id == order.id).execute()
        return self.get(uid)  # type: ignore[return-value]

    def update(self, uid: str, status: str | None) -> StepView:
        """N-SET: the step's new status (None: other attributes only, accepted as is)."""
        if status not in (None, IN_PROGRESS, COMPLETED, DISCONTINUED):
            raise StepError("bad-status", f"unknown performed procedure step status {status!r}")
        with self.index.write():
            step = PerformedStep.get_or_none(PerformedStep.sop_instance_uid == uid)
            if step is None:
                raise StepError("no-such-step", f"no performed procedure step {uid}")
            if step.status in _FINAL:
                raise StepError("final", f"the step is {step.status} and may no longer be updated")
            if status is not None and status != step.status:
                PerformedStep.update(status=status, updated_at=utcnow()).where(
                    PerformedStep.id == step.id).execute()
                if status in _FINAL and step.order_id is not None:
                    Order.update(state=_FINAL[status].value, updated_at=utcnow()).where(
                        (Order.id == step.order_id)
                        & Order.state.in_([State.SCHEDULED.value, State.IN_PROGRESS.value])).execute()
        return self.get(uid)  # type: ignore[return-value]

    def get(self, uid: str) -> StepView | None:
        with self.index.read():
            step = PerformedStep.get_or_none(PerformedStep.sop_instance_uid == uid)
            return StepView(step.sop_instance_uid, step.status, step.accession_number,
                            step.order_id) if step else None


def _order_for(accessions: list[str], step_ids: list[str]) -> Order | None:
    for accession in accessions:
        order = Order.get_or_none(Order.accession_number == accession[:16]) if accession else None
        if order is not None:
            return order
    for step_id in step_ids:
        order = Order.get_or_none(Order.step_id == step_id[:16]) if step_id else None
        if order is not None:
            return order
    return None
