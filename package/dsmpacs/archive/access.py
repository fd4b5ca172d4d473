"""Who may do what: the access policy for DICOM peers.

Unknown calling AEs may echo; they may store only when the administrator allows
it (unknown_ae_may_store, off by default: whoever reaches the port could
otherwise fill the archive or plant studies under a real patient's name). Only
registered AEs may query and retrieve: those reveal patient data. A strict mode
refuses unknown AEs outright. Every refusal is logged with the peer's
address by the protocol layer that asked.
"""
from __future__ import annotations

import logging
import socket
from enum import Enum
from functools import lru_cache
from typing import Iterator

from dsmpacs.archive.peers import ANY_HOST, Peer, PeerRegistry
from dsmpacs.settings import Settings

log = logging.getLogger(__name__)


class Action(Enum):
    ASSOCIATE = "associate"
    ECHO = "echo"
    STORE = "store"
    FIND = "find"
    RETRIEVE = "retrieve"          # C-MOVE or C-GET as the requester
    COMMIT = "commit"              # storage commitment request


@lru_cache(maxsize=256)
def _addresses(host: str) -> frozenset[str]:
    try:
        return frozenset(info[4][0] for info in socket.getaddrinfo(host, None))
    except OSError:
        return frozenset({host})


class AccessPolicy:
    def __init__(self, settings: Settings, registry: PeerRegistry):
        self.settings = settings
        self.registry = registry

    def _matching(self, calling_ae: str, address: str) -> Iterator[Peer]:
        """The registered entries for the calling AE (and host, when checked)."""
        for peer in self.registry.by_ae_title(calling_ae):
            if not self.settings.check_peer_host:
                yield peer
            # An entry without a host cannot pass a host check.
            elif peer.host != ANY_HOST and address in _addresses(peer.host):
                yield peer

    def peer_for(self, calling_ae: str, address: str) -> Peer | None:
        """The registered entry matching the calling AE (and host, when checked)."""
        return next(self._matching(calling_ae, address), None)

    def transport_problem(self, calling_ae: str, address: str, *, encrypted: bool,
                          client_certificate: bool) -> str:
        """Why an association from ``calling_ae`` may not arrive over this transport
        ('' when it may). Non-downgrading: a remote AE marked TLS is refused over
        plaintext, so a stolen AE title cannot get around its encryption. A remote AE
        that must show a client certificate is refused without a verified one. AEs not
        marked TLS may use either transport; the rest of the policy applies unchanged."""
        peers = list(self._matching(calling_ae, address))
        if not encrypted:
            marked = next((p for p in peers if p.tls), None)
            return (f"remote AE {marked.name!r} ({calling_ae}) is marked TLS and must use the "
                    f"DICOM TLS port, not plaintext") if marked else ""
        strict = next((p for p in peers if p.tls_client_cert), None)
        if strict is not None and not client_certificate:
            return (f"remote AE {strict.name!r} ({calling_ae}) must show a TLS client certificate "
                    "signed by a trusted CA, and showed none")
        return ""

    def allows(self, action: Action, calling_ae: str, address: str) -> tuple[bool, str]:
        """(allowed, reason when refused)."""
        peer = self.peer_for(calling_ae, address)
        if peer is None:
            if self.settings.strict_ae_check:
                return False, f"calling AE {calling_ae!r} from {address} is not registered"
            if action in (Action.ASSOCIATE, Action.ECHO):
                return True, ""
            if action is Action.STORE and self.settings.unknown_ae_may_store:
                return True, ""
            return False, f"calling AE {calling_ae!r} from {address} is not registered for {action.value}"
        permitted = {
            Action.ASSOCIATE: True, Action.ECHO: True, Action.STORE: peer.may_store,
            Action.FIND: peer.may_find, Action.RETRIEVE: peer.may_retrieve,
            Action.COMMIT: peer.may_store,
        }[action]
        return (True, "") if permitted else (
            False, f"remote AE {peer.name!r} ({calling_ae}) may not {action.value}")
