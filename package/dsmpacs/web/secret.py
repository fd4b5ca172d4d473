"""The key that signs session cookies: generated once, kept in the data directory.

Never in code or config.toml (which people paste into support tickets). Deleting
the file signs everybody out; that is also how to revoke every session at once.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

FILE_NAME = "web-secret.key"


def load_or_create(data_dir: Path) -> bytes:
    path = Path(data_dir) / FILE_NAME
    try:
        existing: bytes | None = path.read_bytes().strip()
    except FileNotFoundError:
        existing = None
    if existing is not None and len(existing) >= 32:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode("ascii")
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if existing is None:
            # A hard link fails if another process created the key meanwhile;
            # then both use that one.
            os.link(tmp, path)
        else:
            os.replace(tmp, path)           # a truncated key file is worthless
    except FileExistsError:
        key = path.read_bytes().strip()
    finally:
        tmp.unlink(missing_ok=True)
    return key
