"""One meaning per store outcome: the DIMSE status (dicom/status.py) and the STOW-RS
answer (web/dicomweb/stow.py) put every outcome in the same category, read by the
standard's ranges rather than by our own table."""
from __future__ import annotations

import pytest

from dsmpacs.archive.results import Category, StoreOutcome, StoreResult
from dsmpacs.dicom.status import STORE_STATUS
from dsmpacs.web.dicomweb.stow import response_body

UIDS = dict(sop_class_uid="1.2.840.10008.5.1.4.1.1.7", sop_instance_uid="1.2.3.4",
            study_instance_uid="1.2.3", series_instance_uid="1.2.3.1")


def dimse_category(code: int) -> Category:
    """PS3.7 C.1.2 and Annex C: 0x0000 success; 0x0001, 0x0107, 0x0116 and 0xBxxx
    warning; anything else failure (PS3.4 B.2.3 for C-STORE)."""
    if code == 0x0000:
        return Category.SUCCESS
    if code in (0x0001, 0x0107, 0x0116) or 0xB000 <= code <= 0xBFFF:
        return Category.WARNING
    return Category.FAILURE


def stow_category(outcome: StoreOutcome) -> Category:
    """PS3.18 10.5.3: referenced without WarningReason, referenced with one, or failed."""
    body, status = response_body([StoreResult(outcome, "why", **UIDS)], "http://pacs", None)
    failed = body.get("00081198", {}).get("Value", [])
    referenced = body.get("00081199", {}).get("Value", [])
    assert len(failed) + len(referenced) == 1
    if failed:
        assert "00081197" in failed[0], "a failure names its FailureReason"
        assert status in (409, 503)
        return Category.FAILURE
    if "00081196" in referenced[0]:
        assert status == 202
        return Category.WARNING
    assert status == 200
    return Category.SUCCESS


@pytest.mark.parametrize("outcome", list(StoreOutcome), ids=lambda o: o.value)
def test_dimse_and_stow_agree_on_every_outcome(outcome):
    assert dimse_category(STORE_STATUS[outcome]) is stow_category(outcome) is outcome.category


def test_a_quarantined_conflict_is_a_failure_everywhere():
    """A modality deletes what it reads as stored; this payload is not the instance."""
    assert dimse_category(STORE_STATUS[StoreOutcome.CONFLICT_QUARANTINED]) is Category.FAILURE
    assert stow_category(StoreOutcome.CONFLICT_QUARANTINED) is Category.FAILURE


def test_store_statuses_are_the_documented_ones():
    """docs/conformance.md section 3 and handle_store's docstring list exactly the
    statuses the outcome mapping can return, and the engine's answer to a handler
    that raised."""
    import re

    from dsmpacs.dicom.engine.store_service import PROCESSING_FAILURE
    from dsmpacs.dicom.store import handle_store
    from tests.conftest import ROOT

    text = (ROOT / "docs" / "conformance.md").read_text(encoding="utf-8")
    section = text.split("## 3. Storage SCP (C-STORE)", 1)[1].split("\n## ", 1)[0]
    documented = {int(code, 16) for code in re.findall(r"\| 0x([0-9A-F]{4}) \|", section)}
    in_docstring = {int(code, 16) for code in re.findall(r"0x([0-9A-F]{4})", handle_store.__doc__)}
    assert documented == in_docstring == set(STORE_STATUS.values()) | {PROCESSING_FAILURE}
