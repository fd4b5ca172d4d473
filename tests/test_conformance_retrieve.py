"""Sections 5 and 6 of docs/conformance.md say what the code does: SOP classes,
statuses (as the handlers' docstrings list them), conversions and failure reasons."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydicom.uid import UID, ExplicitVRLittleEndian
from pynetdicom.sop_class import StorageCommitmentPushModel

from dsmpacs.archive.transcode import can_convert, decoder_available
from dsmpacs.dicom.commitment import FAILURE_REASON, handle_n_action
from dsmpacs.dicom.get import handle_get
from dsmpacs.dicom.move import handle_move
from dsmpacs.dicom.retrieve_service import RETRIEVE_SOP_CLASSES

DOC = (Path(__file__).resolve().parent.parent / "docs" / "conformance.md").read_text()
STATUS = re.compile(r"0x[0-9A-F]{4}")


def section(start: str, end: str) -> str:
    i = DOC.index(start)
    return DOC[i:DOC.index(end, i + len(start))]


def table_codes(text: str) -> set[str]:
    return {m for line in text.splitlines() if line.startswith("| 0x") for m in STATUS.findall(line)[:1]}


def docstring_codes(handler) -> set[str]:
    doc = handler.__doc__
    return set(STATUS.findall(doc[doc.index("Statuses:"):]))


@pytest.mark.parametrize("handler, text", [
    (handle_move, lambda: section("C-MOVE:\n", "C-GET:\n")),
    (handle_get, lambda: section("C-GET:\n", "### 5.5")),
    (handle_n_action, lambda: section("**N-ACTION**", "**The check.**")),
])
def test_statuses_match_the_handlers(handler, text):
    assert table_codes(text()) == docstring_codes(handler)


def test_sop_classes_are_listed():
    for uid in (*RETRIEVE_SOP_CLASSES, StorageCommitmentPushModel):
        assert f"| {uid} " in DOC


def test_conversion_table_is_what_the_code_converts():
    table = section("Conversions it can make:", "Any other stored syntax")
    listed = set(re.findall(r"\| (1\.2\.840\.10008\.1\.2[0-9.]*) \|", table))
    for uid in listed:
        assert can_convert(uid, ExplicitVRLittleEndian), uid
    compressed = {u for u in (UID(x) for x in _registry()) if u.is_compressed and decoder_available(u)}
    assert compressed <= listed, compressed - listed


def _registry() -> list[str]:
    from pydicom._uid_dict import UID_dictionary

    return [uid for uid, entry in UID_dictionary.items() if entry[1] == "Transfer Syntax" and not entry[3]]


def test_failure_reasons_are_listed():
    reasons = section("| Failure Reason | When |", "**Where the report goes.**")
    assert table_codes(reasons) == {f"0x{code:04X}" for code in FAILURE_REASON.values()}
