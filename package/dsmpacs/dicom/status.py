"""The one mapping from store outcomes to DIMSE statuses (PS3.4 Annex B.2.3).

Each code lies in the range of its outcome's category (archive/results.py):
0x0000 success, 0xBxxx warning, 0xA7xx/0xA9xx/0xCxxx/0x01xx failure.
"""
from __future__ import annotations

from pydicom.dataset import Dataset

from dsmpacs.archive.results import StoreOutcome, StoreResult

SUCCESS = 0x0000
WARNING_COERCION = 0xB000          # stored; see ErrorComment for what differs
OUT_OF_RESOURCES = 0xA700          # no space, storage missing or read-only
OUT_OF_RESOURCES_INDEX = 0xA701    # index database unreachable; retry later
DATASET_MISMATCH = 0xA900          # dataset does not match the command
CANNOT_UNDERSTAND = 0xC000         # unreadable dataset or invalid UIDs
# Cannot-understand range (PS3.4 B.2.3 Cxxx, low bits ours): a different payload under a
# SOP Instance UID already archived; it was quarantined, not stored as the instance.
# The low bits echo the general status 0x0111 "Duplicate SOP Instance" (PS3.7 C.4) that
# STOW-RS reports for the same outcome.
CONFLICTING_DUPLICATE = 0xC111
NOT_AUTHORIZED = 0x0124            # refused by the access policy

STORE_STATUS: dict[StoreOutcome, int] = {
    StoreOutcome.STORED: SUCCESS,
    StoreOutcome.DUPLICATE: SUCCESS,
    StoreOutcome.REPLACED: SUCCESS,
    StoreOutcome.REPAIRED: SUCCESS,
    StoreOutcome.STORED_WITH_WARNINGS: WARNING_COERCION,
    StoreOutcome.CONFLICT_QUARANTINED: CONFLICTING_DUPLICATE,
    StoreOutcome.OUT_OF_RESOURCES: OUT_OF_RESOURCES,
    StoreOutcome.INDEX_UNAVAILABLE: OUT_OF_RESOURCES_INDEX,
    StoreOutcome.UID_MISMATCH: DATASET_MISMATCH,
    StoreOutcome.INVALID_DATASET: CANNOT_UNDERSTAND,
    StoreOutcome.REFUSED: NOT_AUTHORIZED,
}


def status_dataset(code: int, comment: str = "") -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        # ErrorComment is LO: 64 characters of the default repertoire, and a backslash
        # would split it into two values (UIDs from hostile senders contain anything).
        text = "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in comment)
        ds.ErrorComment = text[:64]
    return ds


def store_status(result: StoreResult) -> Dataset | int:
    """A bare code for success (cheaper for pynetdicom to encode, and success needs no
    comment); a Dataset with ErrorComment otherwise."""
    code = STORE_STATUS[result.outcome]
    return code if code == SUCCESS else status_dataset(code, result.message)
