"""Audit records of the DICOM services: queries, refusals, and one record per
association that stored.

Nothing here runs per instance: a C-STORE run of 2,000 images is one record,
written when the association ends (as the association log is). Refusals and
rejected associations are recorded once per peer, AE title and reason a minute,
so a peer retrying in a loop cannot turn each attempt into an index write.

A C-FIND's record is written on a small pool of threads (``search_started``)
while the association thread reads the first matches: its commit waits for the
disk, about as long as the search itself, and the handler sends nothing until
the record is durable, so overlapping the two loses nothing of the rule that a
query is recorded before anything of its answer leaves.
"""
from __future__ import annotations

import logging
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor

from dsmpacs.archive import Archive
from dsmpacs.archive.activity import AssociationSummary
from dsmpacs.archive.audit import AuditAction, AuditTrail, OncePer, query_fields

log = logging.getLogger(__name__)
REFUSAL_DEDUP_SECONDS = 60
AUDIT_WRITERS = 2       # concurrent C-FIND records in flight; more queue (each is one short commit)
_trails: "weakref.WeakKeyDictionary[Archive, DicomAudit]" = weakref.WeakKeyDictionary()


class DicomAudit:
    def __init__(self, trail: AuditTrail):
        self.trail = trail
        self._refusals = OncePer(REFUSAL_DEDUP_SECONDS)
        self._writers: ThreadPoolExecutor | None = None
        self._writers_lock = threading.Lock()

    @staticmethod
    def _actor(calling_ae: str) -> str:
        return f"ae:{calling_ae.strip()}"

    def search(self, calling_ae: str, called_ae: str, address: str, level: str, filters: dict) -> None:
        """One C-FIND request; raises IndexUnavailable when it cannot be recorded."""
        self.trail.record(self._actor(calling_ae), AuditAction.SEARCH, address=address,
                          calling_ae=calling_ae.strip(), called_ae=called_ae.strip(),
                          **query_fields("C-FIND", level, filters))

    def search_started(self, calling_ae: str, called_ae: str, address: str, level: str,
                       filters: dict) -> Future:
        """Start writing one C-FIND's record; ``result()`` returns once it is durable
        and raises IndexUnavailable when it could not be written."""
        with self._writers_lock:
            if self._writers is None:
                self._writers = ThreadPoolExecutor(AUDIT_WRITERS, thread_name_prefix="audit-search")
        return self._writers.submit(self.search, calling_ae, called_ae, address, level, filters)

    def refused(self, action: AuditAction, calling_ae: str, called_ae: str, address: str,
                what: str, reason: str) -> None:
        """A refusal (rejected association, C-STORE/C-FIND/C-MOVE/C-GET not allowed). Never
        raises: the refusal itself must still go out when the index is down."""
        if not self._refusals.first((action.value, calling_ae, address, what)):
            return
        try:
            self.trail.record(self._actor(calling_ae), action, outcome="refused", address=address,
                              calling_ae=calling_ae.strip(), called_ae=called_ae.strip(),
                              detail=f"{what}: {reason}")
        except Exception:
            log.exception("could not audit the refusal of %s from %s (%s)", what, calling_ae, address)

    def association_ended(self, summary: AssociationSummary, store_refusal: str = "") -> None:
        """The association's C-STOREs as one record (C-MOVE and C-GET are audited by
        their sub-operations' stores at the receiving end and by refusals here)."""
        address = summary.peer.rsplit(":", 1)[0]
        counts = (f"{summary.completed} completed, {summary.warnings} warnings, "
                  f"{summary.failed} failed, {summary.bytes} bytes")
        if "C-STORE" in summary.services:
            outcome = "refused" if store_refusal else ("ok" if not summary.failed else "partial")
            self.trail.record(self._actor(summary.calling_ae), AuditAction.STORE, address=address,
                              calling_ae=summary.calling_ae, called_ae=summary.called_ae,
                              outcome=outcome, detail=f"C-STORE association: {counts}"
                              + (f"; refused: {store_refusal}" if store_refusal else ""))


def for_archive(archive: Archive) -> DicomAudit:
    """One DicomAudit per archive (its refusal memory is shared by the services)."""
    audit = _trails.get(archive)
    if audit is None:
        audit = _trails[archive] = DicomAudit(AuditTrail.of(archive))
    return audit
