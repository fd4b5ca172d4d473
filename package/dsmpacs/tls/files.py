"""Where TLS keys and certificates live: one directory in the data directory.

Keeping them beside the index (not in the code directory, not in the system
store) means a backup of the data directory carries them, an upgrade keeps them,
and on DSM the package user owns them without root.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    directory: Path

    @classmethod
    def of(cls, settings) -> TlsFiles:
        return cls(Path(settings.data_dir) / "tls")

    @property
    def ca_cert(self) -> Path:
        """The local CA's certificate: give it to peers so they trust this archive."""
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        """The local CA's private key (absent when the certificates were imported)."""
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        """This archive's certificate followed by its chain, for the DICOM TLS port,
        HTTPS, and as the client certificate it shows to peers that require one."""
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def trusted(self) -> Path:
        """CA certificates whose certificates this archive accepts from peers: clients
        on the TLS port and servers it connects to."""
        return self.directory / "trusted.pem"

    def has_server_identity(self) -> bool:
        return self.server_cert.is_file() and self.server_key.is_file()

    def make_directory(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)

    def write_secret(self, path: Path, data: bytes) -> None:
        """Write a private key readable by the service user only, atomically."""
        self._write(path, data, 0o600)

    def write_public(self, path: Path, data: bytes) -> None:
        self._write(path, data, 0o640)

    @staticmethod
    def _write(path: Path, data: bytes, mode: int) -> None:
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
