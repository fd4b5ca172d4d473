"""TLS contexts to the BCP 195 profile of DICOM PS3.15 (Annex B.9 / RFC 9325).

TLS 1.2 and 1.3 only; for TLS 1.2 only AEAD suites with forward secrecy
(ECDHE with AES-GCM or ChaCha20), which include the ones dcmtk's BCP 195 profile
offers for RSA certificates; no compression, no renegotiation. Python's ssl
module does the work; nothing here is hand-rolled crypto.
"""
from __future__ import annotations

import ssl

from dsmpacs.tls.files import TlsFiles

# OpenSSL names of the TLS 1.2 suites (TLS 1.3 suites are fixed by OpenSSL and all AEAD).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!PSK"


class TlsNotConfigured(RuntimeError):
    """No server certificate in the data directory: `dsmpacs tls init` or `tls import`."""


def _harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION
    if hasattr(ssl, "OP_NO_RENEGOTIATION"):
        ctx.options |= ssl.OP_NO_RENEGOTIATION
    return ctx


def server_context(settings, *, verify_clients: bool = False) -> ssl.SSLContext:
    """Context for a listening socket (DICOM TLS port, HTTPS).

    verify_clients asks every client for a certificate without demanding one
    (CERT_OPTIONAL): a certificate that is presented must chain to a CA in
    trusted.pem or the handshake fails; whether one is required is decided per
    peer after the handshake (peers' ``tls_client_cert``), because the calling AE
    title is only known once the association request arrives.
    """
    files = TlsFiles.of(settings)
    if not files.has_server_identity():
        raise TlsNotConfigured(
            f"no server certificate in {files.directory}: run `dsmpacs tls init` "
            "(local CA) or `dsmpacs tls import`")
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.load_cert_chain(files.server_cert, files.server_key)
    if verify_clients and files.trusted.is_file():
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(cafile=str(files.trusted))
    return ctx


def client_context(settings) -> ssl.SSLContext:
    """Context for connecting to a peer marked TLS: its certificate must chain to
    trusted.pem and name the host we dial (address or DNS name). This archive's
    own certificate goes along for peers that require a client certificate."""
    files = TlsFiles.of(settings)
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    if not files.trusted.is_file():
        raise TlsNotConfigured(
            f"no trusted CA certificates in {files.trusted}: run `dsmpacs tls init` or "
            "`dsmpacs tls trust CA.pem` with the CA that signed the peer's certificate")
    ctx.load_verify_locations(cafile=str(files.trusted))
    if files.has_server_identity():
        ctx.load_cert_chain(files.server_cert, files.server_key)
    return ctx
