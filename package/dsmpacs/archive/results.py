"""The outcome of a store, shared by every protocol.

The DICOM layer maps it once to DIMSE statuses and the web layer once to HTTP
(see dicom/status.py and the STOW-RS view); the domain never speaks either.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class StoreOutcome(Enum):
    STORED = "stored"                      # new instance archived
    DUPLICATE = "duplicate"                # identical resend: nothing new stored
    STORED_WITH_WARNINGS = "warning"       # archived unchanged; some text not decodable
    REPLACED = "replaced"                  # different payload, overwrite policy
    CONFLICT_QUARANTINED = "conflict"      # different payload kept in quarantine
    OUT_OF_RESOURCES = "out-of-resources"  # no space, storage missing or read-only
    INDEX_UNAVAILABLE = "index-unavailable"
    INVALID_DATASET = "invalid-dataset"    # unreadable, missing or path-like UIDs
    UID_MISMATCH = "uid-mismatch"          # dataset disagrees with the command
    REFUSED = "refused"                    # policy: the caller may not store

    @property
    def archived(self) -> bool:
        """True when the archive now holds these bytes as the instance."""
        return self in (StoreOutcome.STORED, StoreOutcome.DUPLICATE,
                        StoreOutcome.STORED_WITH_WARNINGS, StoreOutcome.REPLACED)

    @property
    def is_warning(self) -> bool:
        return self in (StoreOutcome.STORED_WITH_WARNINGS, StoreOutcome.CONFLICT_QUARANTINED)


@dataclass(frozen=True)
class StoreResult:
    outcome: StoreOutcome
    message: str = ""
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    path: str = ""          # relative path of the archived (or quarantined) file

    @property
    def archived(self) -> bool:
        return self.outcome.archived
