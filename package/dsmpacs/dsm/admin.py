"""The first administrator's credentials, handed from the install wizard to the archive.

The wizard asks for the password at install time, before the index exists.
postinst keeps only the password's scrypt hash (made by archive/users.py, the
one hasher the web sign-in checks against) in ``<data_dir>/initial-admin.json``
(mode 0600). The first start, after the index schema exists, creates the admin
account from it when no account exists yet, and deletes the file either way.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from dsmpacs.archive.users import Role, Users, check_password_quality, hash_password

log = logging.getLogger(__name__)
FILE_NAME = "initial-admin.json"
USERNAME = "admin"


def write_initial_admin(data_dir: Path, password: str) -> Path:
    """Validate the wizard's password and store its hash (raises UserError with the reason)."""
    check_password_quality(password)
    path = data_dir / FILE_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"username": USERNAME, "password_hash": hash_password(password)}, fh)
        fh.write("\n")
    return path


def create_initial_admin(data_dir: Path, users: Users) -> bool:
    """Create the wizard's admin if the index has no account yet; True when created."""
    path = data_dir / FILE_NAME
    if not path.exists():
        return False
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if users.list():
            log.info("accounts exist already; the installer's admin password was not applied")
            return False
        users.add_hashed(record["username"], record["password_hash"], Role.ADMIN)
        log.info("created the administrator %r chosen in the install wizard", record["username"])
        return True
    finally:
        path.unlink(missing_ok=True)
