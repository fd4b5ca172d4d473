"""Association bookkeeping shared by the services: TCP_NODELAY, log lines, and the
association log (one row per association, counted in memory while it runs)."""
from __future__ import annotations

import logging
import socket

from dsmpacs.archive.access import AccessPolicy, Action
from dsmpacs.archive.activity import INCOMING, Activity, AssociationSummary
from dsmpacs.archive.audit import AuditAction
from dsmpacs.archive.database import IndexUnavailable
from dsmpacs.archive.models import utcnow
from dsmpacs.dicom.auditing import DicomAudit
from dsmpacs.dicom.engine import tls

log = logging.getLogger("dsmpacs.dicom.associations")
_SUMMARY = "_dsmpacs_summary"
STORE_DECISION = "_dsmpacs_store_decision"      # (allowed, reason), set by dicom/store.py
AE_BINDING = "_dsmpacs_ae_binding"              # the calling AE's institution, set by dicom/store.py


def peer_of(assoc) -> str:
    address = getattr(assoc.requestor, "address", "") if assoc.is_acceptor else assoc.acceptor.address
    port = getattr(assoc.requestor, "port", "") if assoc.is_acceptor else assoc.acceptor.port
    return f"{address}:{port}"


def handle_conn_open(event) -> None:
    """Disable Nagle: each DIMSE exchange is small, and waiting for the peer's
    delayed ACK costs tens of milliseconds per instance."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def summary(assoc) -> AssociationSummary | None:
    """The running summary of an incoming association (None before it was requested)."""
    return getattr(assoc, _SUMMARY, None)


def _start_summary(assoc, outcome: str) -> AssociationSummary:
    current = summary(assoc)
    if current is None:
        current = AssociationSummary(INCOMING, calling_ae=str(assoc.requestor.ae_title).strip(),
                                     called_ae=str(assoc.acceptor.ae_title).strip(), peer=peer_of(assoc))
        setattr(assoc, _SUMMARY, current)
    current.outcome = outcome
    return current


def count(assoc, service: str, *, ok: bool = True, warning: bool = False, size: int = 0) -> None:
    """Count one operation of ``service`` on an incoming association. Memory only:
    this runs on the per-instance path."""
    current = summary(assoc)
    if current is None:
        return
    current.services.add(service)
    if warning:
        current.warnings += 1
    elif ok:
        current.completed += 1
    else:
        current.failed += 1
    current.bytes += size


def handle_established(event) -> None:
    assoc = event.assoc
    if assoc.is_acceptor:
        _start_summary(assoc, "released")
        log.info("association from %s (%s) to %s", assoc.requestor.ae_title, peer_of(assoc),
                 assoc.acceptor.ae_title)


def handle_rejected(event) -> None:
    if event.assoc.is_acceptor:
        _start_summary(event.assoc, "rejected")
    log.warning("association from %s (%s) rejected", event.assoc.requestor.ae_title,
                peer_of(event.assoc))


def handle_aborted(event) -> None:
    if event.assoc.is_acceptor and summary(event.assoc) is not None:
        summary(event.assoc).outcome = "aborted"
    log.warning("association with %s (%s) aborted", event.assoc.requestor.ae_title,
                peer_of(event.assoc))


def handle_conn_close(event, activity: Activity, audit: DicomAudit | None = None) -> None:
    """Write the association's one log row (and its one audit record when it stored).
    Connections that never sent an association request (port scans, health probes)
    leave no row."""
    current = summary(event.assoc)
    if current is None or not event.assoc.is_acceptor:
        return
    setattr(event.assoc, _SUMMARY, None)      # exactly one row, whatever fires next
    current.ended_at = utcnow()
    try:
        activity.record(current)
    except Exception:  # the log is bookkeeping: never let it break the listener
        log.exception("could not record the association with %s in the log", current.calling_ae)
    if audit is not None:
        decision = getattr(event.assoc, STORE_DECISION, None)
        try:
            audit.association_ended(current, "" if decision is None or decision[0] else decision[1])
        except Exception:  # the stores are acknowledged already; the log line keeps the fact
            log.exception("could not audit the association with %s", current.calling_ae)


# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 9.3.4
_CALLING_AE_NOT_RECOGNISED = (0x01, 0x01, 0x03)
_CALLED_AE_NOT_RECOGNISED = (0x01, 0x01, 0x07)
_TRANSIENT_NO_REASON = (0x02, 0x01, 0x01)
_PERMANENT_NO_REASON = (0x01, 0x01, 0x01)      # the transport is wrong for this AE (TLS rules)


def handle_requested(event, policy: AccessPolicy, audit: DicomAudit | None = None) -> None:
    """A-ASSOCIATE-RQ: apply the access policy before any negotiation. A wrong called
    AE title (check_called_ae), a remote AE marked TLS over plaintext or one that
    must show a client certificate without one (AccessPolicy.transport_problem),
    or an unregistered calling AE (strict_ae_check) is answered with
    A-ASSOCIATE-RJ, permanent, and logged with the peer's address and audited."""
    assoc = event.assoc
    rq = assoc.requestor.primitive
    calling, called = str(rq.calling_ae_title).strip(), str(rq.called_ae_title).strip()
    settings = policy.settings
    if settings.check_called_ae and called != settings.ae_title:
        _reject(assoc, _CALLED_AE_NOT_RECOGNISED, calling, called,
                f"called AE title {called!r} is not {settings.ae_title!r}", audit)
        return
    sock = getattr(assoc.dul.socket, "socket", None)
    try:
        problem = policy.transport_problem(calling, assoc.requestor.address,
                                           encrypted=tls.is_tls(sock),
                                           client_certificate=tls.client_certificate(sock) is not None)
    except IndexUnavailable as exc:
        _reject(assoc, _TRANSIENT_NO_REASON, calling, called, f"cannot check the registry: {exc}", audit)
        return
    if problem:
        _reject(assoc, _PERMANENT_NO_REASON, calling, called, problem, audit)
        return
    if not settings.strict_ae_check:
        return      # unknown AEs may associate; each service checks what they may do
    try:
        allowed, reason = policy.allows(Action.ASSOCIATE, calling, assoc.requestor.address)
    except IndexUnavailable as exc:
        _reject(assoc, _TRANSIENT_NO_REASON, calling, called, f"cannot check the registry: {exc}", audit)
        return
    if not allowed:
        _reject(assoc, _CALLING_AE_NOT_RECOGNISED, calling, called, reason, audit)


def _reject(assoc, rsd: tuple[int, int, int], calling: str, called: str, reason: str,
            audit: DicomAudit | None) -> None:
    log.warning("association from %s (%s) to %s rejected: %s", calling, peer_of(assoc), called, reason)
    if audit is not None:
        audit.refused(AuditAction.ASSOCIATION_REJECTED, calling, called, assoc.requestor.address,
                      "association", reason)
    assoc.acse.send_reject(*rsd)
    # As pynetdicom does for its own rejections: stop the DUL once the peer has closed.
    assoc.kill()
