"""This archive as a client: C-ECHO and C-STORE to another AE."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from dsmpacs.archive.peers import Peer
from dsmpacs.dicom import engine
from dsmpacs.dicom.connect import SETTINGS_ATTRIBUTE, AssociationFailed, open_association
from dsmpacs.dicom.engine import limits, negotiation
from dsmpacs.settings import Settings

log = logging.getLogger(__name__)
MAX_CONTEXTS = 128


def client_ae(settings: Settings) -> AE:
    """An AE with this archive's title, PDU size, timeouts and accepted transfer
    syntaxes. Every AE of the archive starts here, the listener's (dicom/server.py)
    included; the engine (dicom/engine/) must have been installed."""
    engine.require_installed()
    ae = AE(ae_title=settings.ae_title)
    ae.acse_timeout = settings.acse_timeout
    ae.dimse_timeout = settings.dimse_timeout
    ae.network_timeout = settings.network_timeout
    ae.connection_timeout = settings.connection_timeout
    ae.maximum_pdu_size = settings.max_pdu
    limits.bind(ae, settings)
    negotiation.allow_transfer_syntaxes(ae, settings.dicom_extra_transfer_syntaxes.split(","))
    # dicom/connect.py builds the TLS context for peers marked TLS from these.
    setattr(ae, SETTINGS_ATTRIBUTE, settings)
    return ae


__all__ = ["AssociationFailed", "client_ae", "echo", "send_files"]


def echo(settings: Settings, target: Peer) -> int:
    """C-ECHO; returns the status, raises AssociationFailed when no association."""
    ae = client_ae(settings)
    ae.add_requested_context(Verification)
    assoc = open_association(ae, target)
    try:
        status = assoc.send_c_echo()
        return int(status.Status) if "Status" in status else -1
    finally:
        assoc.release()


@dataclass(frozen=True)
class SendResult:
    path: str
    sop_instance_uid: str
    status: int            # -1: not sent
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 0 or 0xB000 <= self.status <= 0xBFFF


def _headers(paths: Iterable[Path]) -> Iterator[tuple[Path, str, str, str]]:
    for path in paths:
        try:
            ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
            yield path, str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.file_meta.TransferSyntaxUID)
        except Exception as exc:
            yield path, "", "", f"unreadable: {exc}"


def send_files(settings: Settings, target: Peer, paths: list[Path],
               progress: Callable[[SendResult], None] | None = None) -> list[SendResult]:
    """C-STORE Part 10 files unchanged (the dataset bytes are streamed from disk)."""
    results: list[SendResult] = []
    items = list(_headers(paths))
    contexts = sorted({(cls, ts) for _, cls, _, ts in items if cls})
    if len(contexts) > MAX_CONTEXTS:
        raise AssociationFailed(f"{len(contexts)} SOP class/transfer syntax pairs; at most "
                                f"{MAX_CONTEXTS} fit one association")
    ae = client_ae(settings)
    for sop_class, ts in contexts:
        ae.add_requested_context(sop_class, ts)
    assoc = open_association(ae, target)
    try:
        for path, sop_class, sop_instance, ts in items:
            if not sop_class:
                result = SendResult(str(path), "", -1, ts)
            else:
                try:
                    rsp = assoc.send_c_store(path)
                    status = int(rsp.Status) if "Status" in rsp else -1
                    comment = str(rsp.get("ErrorComment", "")) if status else ""
                    result = SendResult(str(path), sop_instance, status,
                                        comment or ("no response" if status == -1 else ""))
                except (ValueError, RuntimeError) as exc:
                    result = SendResult(str(path), sop_instance, -1, str(exc))
            results.append(result)
            if progress:
                progress(result)
            if not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    return results
