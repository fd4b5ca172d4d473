"""docs/conformance.md says what the code does: the C-FIND key table is checked
against the SCP's own list of supported keys and against the query engine."""
from __future__ import annotations

import re

from pydicom.datadict import dictionary_VR, tag_for_keyword

from dsmpacs.archive.attributes import Level
from dsmpacs.archive.query import KEYS, key_for
from dsmpacs.dicom.find import PROTOCOL_KEYS, SUPPORTED_KEYS
from tests.conftest import ROOT

DOC = ROOT / "docs" / "conformance.md"


def key_table() -> dict[str, dict[str, str]]:
    """Rows of the table under '### 4.4 Supported keys', by keyword."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("### 4.4 Supported keys", 1)[1].split("\n### ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or cells[0] in ("Keyword", "") or set(cells[0]) <= {"-"}:
            continue
        keyword, tag, vr, level, matching = cells
        assert keyword not in rows, f"{keyword} listed twice"
        rows[keyword] = {"tag": tag, "vr": vr, "level": level, "matching": matching}
    return rows


def test_every_supported_key_is_documented_and_every_documented_key_supported():
    documented = key_table()
    assert len(documented) > 40, "the key table was not found or not parsed"
    assert sorted(documented) == sorted(SUPPORTED_KEYS)


def test_documented_level_vr_tag_and_matching_agree_with_the_code():
    for keyword, row in key_table().items():
        tag = tag_for_keyword(keyword)
        assert row["tag"] == f"({tag >> 16:04X},{tag & 0xFFFF:04X})", keyword
        assert row["vr"] == dictionary_VR(tag), keyword
        if keyword in PROTOCOL_KEYS:
            assert (row["level"], row["matching"]) == ("any", "return key only"), keyword
            continue
        key = KEYS[keyword]
        assert row["level"] == key.level.value, keyword
        documented = [m.strip() for m in row["matching"].split(",")]
        expected = list(key.matching) if key.matching else ["return key only"]
        assert documented == expected, keyword


def test_documented_levels_are_where_the_engine_accepts_the_key():
    order = ["PATIENT", "STUDY", "SERIES", "IMAGE"]
    for keyword, row in key_table().items():
        if keyword in PROTOCOL_KEYS:
            continue
        for level in order:
            supported = key_for(Level(level), keyword) is not None
            assert supported == (order.index(level) >= order.index(row["level"])), (keyword, level)


def test_statuses_of_the_handler_are_documented():
    from dsmpacs.dicom import find

    text = DOC.read_text(encoding="utf-8")
    section = text.split("### 4.6 Status codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(code, 16) for code in re.findall(r"\| 0x([0-9A-F]{4}) \|", section)}
    in_docstring = {int(code, 16) for code in re.findall(r"0x([0-9A-F]{4})", find.handle_find.__doc__)}
    assert documented == in_docstring
