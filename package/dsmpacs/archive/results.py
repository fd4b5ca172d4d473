"""The outcome of a store, shared by every protocol.

The DICOM layer maps it once to DIMSE statuses and the web layer once to HTTP
(see dicom/status.py and the STOW-RS view); the domain never speaks either.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Category(Enum):
    """What an outcome means to the sender, the same over DIMSE and over HTTP."""
    SUCCESS = "success"        # archived as sent (or already was)
    WARNING = "warning"        # archived as sent, with something the sender should know
    FAILURE = "failure"        # not archived as this instance: the sender must not delete it


class StoreOutcome(Enum):
    STORED = "stored"                      # new instance archived
    DUPLICATE = "duplicate"                # identical resend: nothing new stored
    STORED_WITH_WARNINGS = "warning"       # archived unchanged; some text not decodable
    REPLACED = "replaced"                  # different payload, overwrite policy
    REPAIRED = "repaired"                  # identical resend put back a damaged stored copy
    CONFLICT_QUARANTINED = "conflict"      # different payload kept in quarantine, not archived
    OUT_OF_RESOURCES = "out-of-resources"  # no space, storage missing or read-only
    INDEX_UNAVAILABLE = "index-unavailable"
    INVALID_DATASET = "invalid-dataset"    # unreadable, missing or path-like UIDs
    UID_MISMATCH = "uid-mismatch"          # dataset disagrees with the command
    REFUSED = "refused"                    # policy: the caller may not store

    @property
    def category(self) -> Category:
        """The one meaning of this outcome; dicom/status.py and the STOW-RS view
        (web/dicomweb/stow.py) both derive their answers from it."""
        return _CATEGORY[self]

    @property
    def archived(self) -> bool:
        """True when the archive now holds these bytes as the instance."""
        return self.category is not Category.FAILURE

    @property
    def is_warning(self) -> bool:
        return self.category is Category.WARNING


_CATEGORY = {
    StoreOutcome.STORED: Category.SUCCESS,
    StoreOutcome.DUPLICATE: Category.SUCCESS,
    StoreOutcome.REPLACED: Category.SUCCESS,
    StoreOutcome.REPAIRED: Category.SUCCESS,
    StoreOutcome.STORED_WITH_WARNINGS: Category.WARNING,
    # The archive keeps its first copy and this payload is NOT the instance a later
    # retrieve returns: a warning would let a modality delete its only copy.
    StoreOutcome.CONFLICT_QUARANTINED: Category.FAILURE,
    StoreOutcome.OUT_OF_RESOURCES: Category.FAILURE,
    StoreOutcome.INDEX_UNAVAILABLE: Category.FAILURE,
    StoreOutcome.INVALID_DATASET: Category.FAILURE,
    StoreOutcome.UID_MISMATCH: Category.FAILURE,
    StoreOutcome.REFUSED: Category.FAILURE,
}


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
