"""The one place this archive opens an association to another AE.

Echo, send, push, C-FIND, C-MOVE and C-GET from remotes, the C-MOVE
sub-associations, and storage-commitment reports all call ``open_association``
with the ``Peer`` they talk to, so TLS is a property of the peer and no path can
forget it (tests/test_dicom_tls.py checks that nothing else calls
``ae.associate``). A peer marked TLS gets TLS (``dsmpacs.tls.client_context``:
its certificate must chain to trusted.pem and name the host dialled, this
archive's certificate goes along as the client certificate); a failed handshake
is reported as such and never retried in plaintext.
"""
from __future__ import annotations

from pynetdicom import evt

from dsmpacs import tls
from dsmpacs.archive.peers import Peer
from dsmpacs.dicom.associations import handle_conn_open

SETTINGS_ATTRIBUTE = "_dsmpacs_settings"      # set by scu.client_ae on every AE it builds


class AssociationFailed(Exception):
    """``code`` says why in one stable word (the message is for logs and the command
    line; the web UI shows its own text per code): unreachable, rejected, aborted,
    no_answer, tls, or other."""

    def __init__(self, message: str, code: str = "other"):
        super().__init__(message)
        self.code = code


def this_archive(settings) -> Peer:
    """This archive's own listener as a peer (`dsmpacs echo` without a target, the
    retrieve command's check for the daemon): the plain port, or the TLS port when
    the archive listens only there."""
    host = "127.0.0.1" if settings.dicom_host in ("0.0.0.0", "::", "") else settings.dicom_host
    if settings.dicom_plain:
        return Peer(settings.ae_title, settings.ae_title, host, settings.dicom_port)
    return Peer(settings.ae_title, settings.ae_title, host, settings.dicom_tls_port, tls=True)


def tls_args(ae, peer: Peer):
    """pynetdicom's ``tls_args`` for ``peer``: None for plaintext peers."""
    if not peer.tls:
        return None
    settings = getattr(ae, SETTINGS_ATTRIBUTE, None)
    if settings is None:
        raise AssociationFailed(f"{peer} is marked TLS but this AE was not built by client_ae", "tls")
    try:
        return tls.client_context(settings), peer.host
    except tls.TlsNotConfigured as exc:
        raise AssociationFailed(f"{peer} is marked TLS: {exc}", "tls") from None


def failure(assoc, peer: Peer) -> str:
    """Why an association did not come up, as precisely as known."""
    told = getattr(assoc, "_dsmpacs_connect_error", None)
    if told == "no connection":         # TCP: refused, unreachable, or connection_timeout
        return f"association with {peer} was rejected or failed: cannot connect to {peer.host}:{peer.port}"
    if told:
        return told
    if assoc.is_rejected:
        return f"association with {peer} was rejected"
    if assoc.is_aborted:
        return f"association with {peer} was aborted"
    return f"association with {peer} was rejected or failed (no connection or no answer)"


def failure_code(assoc) -> str:
    """``failure`` as an AssociationFailed code."""
    told = getattr(assoc, "_dsmpacs_connect_error", None)
    if told == "no connection" or (told or "").startswith("cannot connect"):
        return "unreachable"
    if told:
        return "tls"                    # the only other thing the transport tells: a failed handshake
    if assoc.is_rejected:
        return "rejected"
    return "aborted" if assoc.is_aborted else "no_answer"


def open_association(ae, peer: Peer, *, required: bool = True, evt_handlers=(), **kwargs):
    """``ae.associate`` to ``peer`` (TCP_NODELAY set on the socket), over TLS when the
    peer is marked TLS. With ``required`` a failure raises AssociationFailed with its
    reason; otherwise the caller looks at ``is_established`` (and ``failure``)."""
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, tls_args=tls_args(ae, peer),
                         evt_handlers=[(evt.EVT_CONN_OPEN, handle_conn_open), *evt_handlers],
                         **kwargs)
    if required and not assoc.is_established:
        raise AssociationFailed(failure(assoc, peer), failure_code(assoc))
    return assoc
