"""DICOM JSON (PS3.18 F.2): index rows (QIDO-RS) and stored headers (metadata).

Always UTF-8: the index holds decoded text and pydicom decodes stored values in
their Specific Character Set, so every response says ISO_IR 192. Person names
are objects with Alphabetic/Ideographic/Phonetic groups; IS, DS and the binary
integer VRs are JSON numbers; attributes without a value appear as ``{"vr": ..}``.
"""
from __future__ import annotations

import logging
from typing import Callable, Mapping

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset

from dsmpacs.archive.attributes import INTEGER_VRS
from dsmpacs.archive.metadata import StoredMetadata

log = logging.getLogger(__name__)
UTF8 = "ISO_IR 192"
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def tag_key(tag: int) -> str:
    return f"{tag:08X}"


def keyword_key(keyword: str) -> str:
    return tag_key(tag_for_keyword(keyword))


def person_name(value: str) -> dict[str, str]:
    groups = value.split("=")
    return {name: text for name, text in zip(_PN_GROUPS, groups) if text}


def attribute(vr: str, value: object) -> dict:
    """One attribute from an index value (str, int or None)."""
    if value is None or value == "":
        return {"vr": vr}
    if vr in INTEGER_VRS:
        return {"vr": vr, "Value": [int(v) for v in str(value).split("\\") if v.strip()]
                if isinstance(value, str) else [value]}
    text = str(value)
    parts = text.split("\\")
    if vr == "PN":
        return {"vr": vr, "Value": [person_name(p) if p else None for p in parts]}
    if vr == "DS":
        numbers = []
        for p in parts:
            try:
                numbers.append(float(p))
            except ValueError:
                numbers.append(None)
        return {"vr": vr, "Value": numbers}
    return {"vr": vr, "Value": parts}


def from_row(row: Mapping[str, object], vr_of: Callable[[str], str]) -> dict[str, dict]:
    """A QIDO-RS result from a Search row (keyword -> value)."""
    out: dict[str, dict] = {}
    for keyword, value in row.items():
        if keyword == "SpecificCharacterSet":
            continue
        out[keyword_key(keyword)] = attribute(vr_of(keyword), value)
    out[keyword_key("SpecificCharacterSet")] = {"vr": "CS", "Value": [UTF8]}
    return dict(sorted(out.items()))


def from_metadata(meta: StoredMetadata, bulk_uri: Callable[[int], str],
                  extra: Mapping[str, tuple[str, object]] = {}) -> dict[str, dict]:
    """A stored header as DICOM JSON; ``bulk_uri(tag)`` names each bulk value."""
    ds: Dataset = meta.dataset
    out: dict[str, dict] = {}
    for tag in list(ds.keys()):
        if tag.group == 0x0002:
            continue
        try:
            elem = ds[tag]
            out[tag_key(int(tag))] = elem.to_json_dict(None, 1 << 62)
        except Exception as exc:     # a value pydicom cannot decode must not sink the response
            log.warning("metadata: element %s not encodable: %s", tag, exc)
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                vr = "UN"
            out[tag_key(int(tag))] = {"vr": vr}
    for tag, value in meta.bulk.items():
        out[tag_key(tag)] = {"vr": value.vr, "BulkDataURI": bulk_uri(tag)}
    out[keyword_key("SpecificCharacterSet")] = {"vr": "CS", "Value": [UTF8]}
    for keyword, (vr, value) in extra.items():
        out[keyword_key(keyword)] = attribute(vr, value)
    return dict(sorted(out.items()))
