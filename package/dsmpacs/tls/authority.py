"""A local certificate authority for hospitals without one, and import of certificates
for those that have one.

`init` creates a CA and this archive's certificate signed by it; `issue` signs
certificates for modalities and workstations (client and server use) so that a
peer can be required to show one; `trust` adds another CA (a hospital's) whose
certificates peers present; `import_identity` installs a certificate and key that
someone else issued (the NAS's own, a hospital CA's). Keys are RSA: dcmtk's BCP 195
profile offers only ECDHE-RSA suites for TLS 1.2, so an EC key would lock dcmtk out.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dsmpacs.tls.files import TlsFiles

KEY_BITS = 3072          # RFC 9325 asks for at least 2048; 3072 matches 128-bit strength
CA_DAYS = 3650
LEAF_DAYS = 825          # the longest lifetime browsers accept for a server certificate


class AuthorityError(Exception):
    """Something the operator must fix (missing CA, existing files, mismatched key)."""


@dataclass(frozen=True)
class Issued:
    cert_path: Path
    key_path: Path
    subject: str
    not_after: dt.datetime


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _new_key(bits: int = KEY_BITS) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "DSM PACS"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])


def _leaf(ca_cert, ca_key, common_name: str, hosts: list[str], days: int, bits: int):
    key = _new_key(bits)
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True,
                                     content_commitment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        # Both uses: the archive's certificate also serves as its client certificate
        # towards peers that require one, and a modality's can accept C-MOVE traffic.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    if hosts:
        builder = builder.add_extension(_san(hosts), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _load_ca(files: TlsFiles):
    if not files.ca_key.is_file():
        raise AuthorityError(f"no local CA key in {files.directory}: run `dsmpacs tls init` first "
                             "(certificates that were imported cannot issue others)")
    ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    return ca_cert, ca_key


def default_hosts() -> list[str]:
    """The names and addresses peers are likely to dial: the host name, loopback,
    and the address of the interface that routes outwards (a UDP connect sends
    nothing, it only picks the interface)."""
    hosts = [socket.gethostname(), "localhost", "127.0.0.1"]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 9))
            hosts.append(probe.getsockname()[0])
    except OSError:
        pass
    return list(dict.fromkeys(h for h in hosts if h))


def init(files: TlsFiles, hosts: list[str], *, common_name: str = "", force: bool = False,
         bits: int = KEY_BITS) -> Issued:
    """Create a local CA and this archive's server certificate for ``hosts`` (the
    names and addresses peers and browsers dial)."""
    if not hosts:
        raise AuthorityError("give at least one host name or address the archive is reached by")
    if not force and (files.ca_cert.exists() or files.server_cert.exists()):
        raise AuthorityError(f"{files.directory} already holds certificates; --force replaces "
                             "them (peers that trust the old CA must then be given the new one)")
    files.make_directory()
    ca_key = _new_key(bits)
    now = _now()
    ca_name = _name(f"DSM PACS local CA {now:%Y-%m-%d}")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, key_encipherment=False,
                                     content_commitment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files.write_secret(files.ca_key, _key_pem(ca_key))
    files.write_public(files.ca_cert, _cert_pem(ca_cert))
    files.write_public(files.trusted, _cert_pem(ca_cert))
    return _write_server(files, ca_cert, ca_key, common_name or hosts[0], hosts, bits)


def _write_server(files, ca_cert, ca_key, common_name, hosts, bits) -> Issued:
    key, cert = _leaf(ca_cert, ca_key, common_name, hosts, LEAF_DAYS, bits)
    files.write_secret(files.server_key, _key_pem(key))
    files.write_public(files.server_cert, _cert_pem(cert) + _cert_pem(ca_cert))
    return Issued(files.server_cert, files.server_key, cert.subject.rfc4514_string(),
                  cert.not_valid_after_utc)


def renew_server(files: TlsFiles, hosts: list[str], *, bits: int = KEY_BITS) -> Issued:
    """A new key and certificate for this archive from the same local CA (rotation):
    peers that trust the CA need no change."""
    ca_cert, ca_key = _load_ca(files)
    if not hosts:
        hosts = hosts_of(files.server_cert)
    return _write_server(files, ca_cert, ca_key, hosts[0] if hosts else "dsmpacs", hosts, bits)


def issue(files: TlsFiles, name: str, hosts: list[str], out_dir: Path, *,
          days: int = LEAF_DAYS, bits: int = KEY_BITS) -> Issued:
    """Sign a certificate for a peer (a modality, a workstation, a test client) and
    write ``NAME.pem`` (certificate and chain), ``NAME.key`` and ``ca.pem`` to
    ``out_dir`` for installing on that device."""
    ca_cert, ca_key = _load_ca(files)
    out_dir.mkdir(parents=True, exist_ok=True)
    key, cert = _leaf(ca_cert, ca_key, name, hosts, days, bits)
    key_path, cert_path = out_dir / f"{name}.key", out_dir / f"{name}.pem"
    files.write_secret(key_path, _key_pem(key))
    files.write_public(cert_path, _cert_pem(cert) + _cert_pem(ca_cert))
    files.write_public(out_dir / "ca.pem", _cert_pem(ca_cert))
    return Issued(cert_path, key_path, cert.subject.rfc4514_string(), cert.not_valid_after_utc)


def _certificates(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except ValueError as exc:
        raise AuthorityError(f"{path}: not a PEM certificate ({exc})") from None


def trust(files: TlsFiles, ca_path: Path) -> list[str]:
    """Accept certificates signed by another CA (a hospital's) from peers."""
    certs = _certificates(ca_path)
    for cert in certs:
        try:
            if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                raise AuthorityError(f"{cert.subject.rfc4514_string()} is not a CA certificate")
        except x509.ExtensionNotFound:
            raise AuthorityError(f"{cert.subject.rfc4514_string()} is not a CA certificate") from None
    files.make_directory()
    existing = files.trusted.read_bytes() if files.trusted.is_file() else b""
    known = {c.fingerprint(hashes.SHA256()) for c in (_certificates(files.trusted) if existing else [])}
    added = [c for c in certs if c.fingerprint(hashes.SHA256()) not in known]
    files.write_public(files.trusted, existing + b"".join(_cert_pem(c) for c in added))
    return [c.subject.rfc4514_string() for c in added]


def import_identity(files: TlsFiles, cert_path: Path, key_path: Path) -> Issued:
    """Install a certificate (with its chain) and key issued elsewhere as this
    archive's identity. The key must match the certificate."""
    certs = _certificates(cert_path)
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise AuthorityError(f"{key_path}: not an unencrypted PEM private key ({exc})") from None
    leaf = certs[0]
    if leaf.public_key().public_numbers() != key.public_key().public_numbers():
        raise AuthorityError(f"{key_path} is not the key of {cert_path}")
    files.make_directory()
    files.write_secret(files.server_key, _key_pem(key))
    files.write_public(files.server_cert, b"".join(_cert_pem(c) for c in certs))
    return Issued(files.server_cert, files.server_key, leaf.subject.rfc4514_string(),
                  leaf.not_valid_after_utc)


def hosts_of(cert_path: Path) -> list[str]:
    cert = _certificates(cert_path)[0]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return ([str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
            + san.get_values_for_type(x509.DNSName))


def describe(files: TlsFiles) -> list[dict]:
    """One entry per certificate file present: what `dsmpacs tls show` prints."""
    rows = []
    for role, path in (("server", files.server_cert), ("local CA", files.ca_cert),
                       ("trusted", files.trusted)):
        if not path.is_file():
            continue
        for cert in _certificates(path)[: 1 if role == "server" else None]:
            rows.append({
                "role": role, "file": str(path), "subject": cert.subject.rfc4514_string(),
                "not_after": cert.not_valid_after_utc.isoformat(timespec="seconds"),
                "sha256": cert.fingerprint(hashes.SHA256()).hex(":"),
                "hosts": ", ".join(hosts_of(path)) if role == "server" else "",
            })
    return rows
