"""Writing config.toml once, from the install wizard's answers.

The file is created only when none exists: an upgrade, a repair or a reinstall
after "keep data" never overwrites what the administrator has, including edits
made by hand. It may hold the MariaDB password, so only the package user can
read it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from dsmpacs.settings import CONFIG_FILE

HEADER = (
    "# DSM PACS settings, written once by the package installer from the wizard's answers.\n"
    "# Edit and restart the package to apply; upgrades keep this file as it is.\n"
    "# Every setting is described in docs/settings.md (`dsmpacs settings` prints the effective values).\n"
)


def _toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return _toml_string(str(value))


def render(values: Mapping[str, object]) -> str:
    """One ``name = value`` line per setting: the flat form Settings reads, and the
    form the upgrade wizard's shell script can read back."""
    return HEADER + "".join(f"{name} = {_toml_value(value)}\n" for name, value in values.items())


def write_new(data_dir: Path, values: Mapping[str, object]) -> bool:
    """Create <data_dir>/config.toml (mode 0600). False if one already exists.

    The text goes to a temporary file first and is hard-linked into place, which
    fails if the name exists: an interrupted install leaves no half-written
    config that a later install would then refuse to replace.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / CONFIG_FILE
    if path.exists():
        return False
    tmp = data_dir / f".{CONFIG_FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(render(values))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    finally:
        tmp.unlink(missing_ok=True)
    return True
