"""The DICOM listener: one AE, its limits, and the handlers of each service."""
from __future__ import annotations

import logging

from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from dsmpacs import tls
from dsmpacs.archive import Archive
from dsmpacs.archive.access import AccessPolicy
from dsmpacs.archive.activity import Activity
from dsmpacs.archive.audit import AuditAction
from dsmpacs.archive.peers import PeerRegistry
from dsmpacs.dicom import (
    associations,
    auditing,
    commitment,
    find,
    mpps,
    receivers,
    retrieve_service,
    worklist,
)
from dsmpacs.dicom.echo import handle_echo
from dsmpacs.dicom.engine import listener, spool
from dsmpacs.dicom.get import handle_get
from dsmpacs.dicom.move import handle_move
from dsmpacs.dicom.scu import client_ae
from dsmpacs.dicom.store import handle_store
from dsmpacs.settings import Settings

log = logging.getLogger(__name__)


def build_ae(settings: Settings, archive: Archive) -> AE:
    """An AE that accepts every storage SOP class (private ones included) in any
    standard transfer syntax a sender proposes (dicom/engine/negotiation.py)."""
    ae = client_ae(settings)
    ae.maximum_associations = settings.max_associations
    ae.require_called_aet = False     # checked by the access policy (check_called_ae)
    ae.add_supported_context(Verification)
    find.install(ae)
    worklist.install(ae)                    # Modality Worklist C-FIND (dicom/worklist.py)
    mpps.install(ae)                        # Modality Performed Procedure Step (dicom/mpps.py)
    spool.bind_storage(ae, archive.storage)
    retrieve_service.install(ae)            # C-MOVE and C-GET (dicom/move.py, dicom/get.py)
    commitment.install(ae)
    return ae


def event_handlers(archive: Archive) -> list:
    # The policy reads the registry on every check: the web UI edits it while we run.
    policy = AccessPolicy(archive.settings, PeerRegistry(archive.index))
    audit = auditing.for_archive(archive)
    return [
        (evt.EVT_CONN_OPEN, associations.handle_conn_open),
        (evt.EVT_CONN_CLOSE, associations.handle_conn_close, [Activity(archive.index), audit]),
        (evt.EVT_REQUESTED, associations.handle_requested, [policy, audit]),
        (evt.EVT_ESTABLISHED, associations.handle_established),
        (evt.EVT_REJECTED, associations.handle_rejected),
        (evt.EVT_ABORTED, associations.handle_aborted),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [archive, policy]),
        *worklist.handlers(find.handlers(archive, policy), archive, policy),
        (evt.EVT_C_MOVE, handle_move, [archive]),
        (evt.EVT_C_GET, handle_get, [archive]),
        (evt.EVT_N_ACTION, commitment.handle_n_action, [archive]),
        *mpps.handlers(archive, policy),
    ]


class Listeners(list):
    """The daemon's listeners on one AE: plain (dicom_port, unless dicom_plain is
    false) and TLS (dicom_tls_port, when set). ``plain`` and ``tls`` are None
    when off."""

    plain = None
    tls = None
    receivers = None        # the receiving processes (dicom/receivers.py), when any

    def shutdown(self) -> None:
        for server in self:
            server.shutdown()
        if self.receivers is not None:
            self.receivers.stop()


def tls_refusal_recorder(settings: Settings, archive: Archive):
    """What a TLS listener does with a connection that did not become a TLS session:
    an audit record (engine/listener.py logs it)."""
    audit = auditing.for_archive(archive)

    def refused(address: str, reason: str) -> None:
        audit.refused(AuditAction.ASSOCIATION_REJECTED, "", settings.ae_title, address,
                      "TLS connection", reason)
    return refused


def start(settings: Settings, archive: Archive) -> Listeners:
    """Start listening (non-blocking): one AE, its handlers and limits, on the plain
    port, the TLS port, or both (engine/listener.py). Raises TlsNotConfigured when
    the TLS port is set but there is no certificate (before anything listens)."""
    tls_context = tls.server_context(settings, verify_clients=True) if settings.dicom_tls_port else None
    ae = build_ae(settings, archive)
    handlers = event_handlers(archive)
    started = Listeners()
    made = []
    try:
        if settings.dicom_plain:
            started.plain = listener.make_listener(
                ae, (settings.dicom_host, settings.dicom_port), handlers,
                per_address=settings.max_associations_per_address)
            made.append(started.plain)
        if tls_context is not None:
            started.tls = listener.make_listener(
                ae, (settings.dicom_host, settings.dicom_tls_port), handlers,
                per_address=settings.max_associations_per_address,
                tls_context=tls_context, on_tls_refused=tls_refusal_recorder(settings, archive))
            made.append(started.tls)
        # More processes to serve associations, when dicom_processes asks for them. They
        # are up before the first connection is accepted (connections meanwhile wait in
        # the listen queue): an association stays in the process that took it, and the
        # four associations of modalities that were waiting for the archive to come back
        # would otherwise all stay in this one.
        started.receivers = receivers.start(settings, ae, {"plain": started.plain, "tls": started.tls})
        if started.receivers is not None:
            started.receivers.wait_ready(receivers.READY_SECONDS)
        for server in made:
            started.append(listener.serve(ae, server))
    except BaseException:
        for server in made:
            if server not in started:
                server.server_close()
        started.shutdown()
        raise
    return started
