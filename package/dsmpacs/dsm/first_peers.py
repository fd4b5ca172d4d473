"""The modalities the install wizard lists, registered as peers that may store.

Unregistered AEs may not store (unknown_ae_may_store is off), so the DSA room's
angiography system must be registered before its first run, or the first day
loses images. The wizard asks for the AE titles before the index exists, so
postinst keeps them in ``<data_dir>/initial-peers.json``; the first start, once
the index schema exists, registers each one (as ``dsmpacs ae add`` would, audited)
and deletes the file. The same hand-over as the first administrator (admin.py).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from dsmpacs.archive.peers import ANY_HOST, NO_PORT, Peer, PeerError, PeerRegistry
from dsmpacs.dsm.wizard import StoreAE

log = logging.getLogger(__name__)
FILE_NAME = "initial-peers.json"
ACTOR = "dsm-installer"


def write_initial_peers(data_dir: Path, entries: tuple[StoreAE, ...]) -> Path | None:
    if not entries:
        return None
    path = data_dir / FILE_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump([{"ae_title": e.ae_title, "host": e.host, "port": e.port} for e in entries], fh)
        fh.write("\n")
    return path


def peer_for(entry: dict) -> Peer:
    """A modality that sends: it may store, not query or retrieve (the administrator
    grants those on the Remote AEs page); a destination only when its port is known."""
    host = entry.get("host") or ANY_HOST
    port = int(entry.get("port") or NO_PORT)
    name = entry["ae_title"] if host == ANY_HOST else f"{entry['ae_title']}@{host}"
    return Peer(name=name[:64], ae_title=entry["ae_title"], host=host, port=port, may_store=True,
                may_find=False, may_retrieve=False,
                is_move_destination=host != ANY_HOST and port != NO_PORT,
                description="registered by the DSM install wizard")


def register_initial_peers(data_dir: Path, registry: PeerRegistry, trail=None) -> list[Peer]:
    """Register the wizard's modalities (an existing name is left alone); returns those added."""
    path = data_dir / FILE_NAME
    if not path.exists():
        return []
    added = []
    try:
        for entry in json.loads(path.read_text(encoding="utf-8")):
            try:
                peer = registry.add(peer_for(entry))
            except PeerError as exc:
                log.warning("the install wizard's AE %r was not registered: %s", entry, exc)
                continue
            added.append(peer)
            log.info("registered %s (%s), listed in the install wizard", peer.name, peer)
            if trail is not None:
                from dsmpacs.archive.audit import AuditAction

                trail.record(ACTOR, AuditAction.PEER_ADD, detail=f"{peer.name}: {peer}",
                             address="local")
    finally:
        path.unlink(missing_ok=True)
    return added
