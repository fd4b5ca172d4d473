"""The association log: DICOM associations in and out, with what they achieved.

A protocol layer counts per association in memory (cheap, no I/O on the
per-instance path) and hands one ``AssociationSummary`` to ``record`` when the
association ends. The administration pages read it back with ``recent``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from dsmpacs.archive.index import Index
from dsmpacs.archive.models import AssociationLog, utcnow

log = logging.getLogger(__name__)

INCOMING = "in"
OUTGOING = "out"
OUTCOMES = ("released", "aborted", "rejected", "failed")


@dataclass
class AssociationSummary:
    """What one association did. Counters are per instance (C-STORE, sub-operations)
    or per request (C-FIND, C-ECHO), as the service defines it."""
    direction: str
    calling_ae: str = ""
    called_ae: str = ""
    peer: str = ""
    started_at: datetime = field(default_factory=utcnow)
    ended_at: datetime | None = None
    outcome: str = "released"
    services: set[str] = field(default_factory=set)
    completed: int = 0
    warnings: int = 0
    failed: int = 0
    bytes: int = 0
    detail: str = ""


@dataclass(frozen=True)
class AssociationEntry:
    id: int
    direction: str
    calling_ae: str
    called_ae: str
    peer: str
    started_at: datetime
    ended_at: datetime
    outcome: str
    services: str
    completed: int
    warnings: int
    failed: int
    bytes: int
    detail: str

    @property
    def seconds(self) -> float:
        return max(0.0, (self.ended_at - self.started_at).total_seconds())


class Activity:
    def __init__(self, index: Index):
        self.index = index

    def record(self, summary: AssociationSummary) -> None:
        if summary.direction not in (INCOMING, OUTGOING):
            raise ValueError(f"direction must be {INCOMING!r} or {OUTGOING!r}")
        if summary.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}")
        with self.index.write():
            AssociationLog.create(
                direction=summary.direction, calling_ae=summary.calling_ae[:16],
                called_ae=summary.called_ae[:16], peer=summary.peer[:128],
                started_at=summary.started_at, ended_at=summary.ended_at or utcnow(),
                outcome=summary.outcome, services=" ".join(sorted(summary.services))[:128],
                completed=summary.completed, warnings=summary.warnings, failed=summary.failed,
                bytes=summary.bytes, detail=summary.detail[:255])

    def recent(self, *, limit: int = 50, offset: int = 0,
               direction: str | None = None) -> list[AssociationEntry]:
        """Newest first."""
        with self.index.read():
            query = AssociationLog.select()
            if direction:
                query = query.where(AssociationLog.direction == direction)
            rows = query.order_by(AssociationLog.ended_at.desc(), AssociationLog.id.desc()
                                  ).limit(limit).offset(offset)
            return [AssociationEntry(r.id, r.direction, r.calling_ae, r.called_ae, r.peer, r.started_at,
                                     r.ended_at, r.outcome, r.services, r.completed, r.warnings,
                                     r.failed, r.bytes, r.detail) for r in rows]

    def count(self, *, direction: str | None = None) -> int:
        with self.index.read():
            query = AssociationLog.select()
            if direction:
                query = query.where(AssociationLog.direction == direction)
            return query.count()
