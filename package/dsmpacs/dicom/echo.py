"""Verification SCP (C-ECHO)."""
from __future__ import annotations

from dsmpacs.dicom import associations
from dsmpacs.dicom.status import SUCCESS


def handle_echo(event) -> int:
    """C-ECHO. Statuses: 0x0000 Success. (Who may echo is decided at association time.)"""
    associations.count(event.assoc, "C-ECHO")
    return SUCCESS
