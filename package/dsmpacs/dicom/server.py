"""The DICOM listener: one AE, its limits, and the handlers of each service."""
from __future__ import annotations

import logging

from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from dsmpacs.archive import Archive
from dsmpacs.archive.access import AccessPolicy
from dsmpacs.archive.activity import Activity
from dsmpacs.archive.peers import PeerRegistry
from dsmpacs.dicom import (
    associations,
    auditing,
    commitment,
    find,
    retrieve_service,
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
        *find.handlers(archive, policy),
        (evt.EVT_C_MOVE, handle_move, [archive]),
        (evt.EVT_C_GET, handle_get, [archive]),
        (evt.EVT_N_ACTION, commitment.handle_n_action, [archive]),
    ]


def start(settings: Settings, archive: Archive):
    """Start listening (non-blocking); returns the AssociationServer (engine/listener.py)."""
    ae = build_ae(settings, archive)
    return listener.start_listener(ae, (settings.dicom_host, settings.dicom_port),
                                   event_handlers(archive),
                                   per_address=settings.max_associations_per_address)
