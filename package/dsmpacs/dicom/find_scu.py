"""This archive as a C-FIND SCU (`dsmpacs query`): query another AE, decode its answers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset

from dsmpacs.archive.charset import TEXT_VRS, encode_text, parse_charset
from dsmpacs.archive.peers import Peer
from dsmpacs.dicom.connect import open_association
from dsmpacs.dicom.find import PATIENT_ROOT, STUDY_ROOT, element_text
from dsmpacs.dicom.scu import client_ae
from dsmpacs.settings import Settings

MODELS = {"study": STUDY_ROOT, "patient": PATIENT_ROOT}
STATUS_TEXT = {
    0x0000: "Success", 0xFE00: "Cancelled", 0x0124: "Refused: not authorized",
    0x0122: "Refused: SOP class not supported", 0xA700: "Refused: out of resources",
    0xA900: "Identifier does not match SOP class", 0xFF00: "Pending", 0xFF01: "Pending (warning)",
}


class QueryFailed(Exception):
    pass


@dataclass(frozen=True)
class FindResult:
    status: int
    values: dict[str, str]            # keyword (or tag) -> decoded text
    comment: str = ""

    @property
    def pending(self) -> bool:
        return self.status in (0xFF00, 0xFF01)

    @property
    def describe(self) -> str:
        text = STATUS_TEXT.get(self.status) or (
            "Unable to process" if 0xC000 <= self.status <= 0xCFFF else "unknown status")
        return f"0x{self.status:04X} {text}" + (f": {self.comment}" if self.comment else "")


def keyword_vr(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise QueryFailed(f"{keyword!r} is not a DICOM keyword")
    return dictionary_VR(tag).split(" or ")[0]


def build_identifier(level: str, keys: Mapping[str, str], charset: str) -> Dataset:
    """The request identifier; text values encoded in ``charset``."""
    terms = parse_charset(charset)
    ds = Dataset()
    ds.SpecificCharacterSet = terms if len(terms) > 1 else charset
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        vr = keyword_vr(keyword)
        if not value:
            ds.add_new(tag_for_keyword(keyword), vr, None)
        elif vr in TEXT_VRS:
            encoded = encode_text(value, terms)
            if encoded is None:
                raise QueryFailed(f"{keyword}={value!r} cannot be written in character set {charset}")
            ds.add_new(tag_for_keyword(keyword), vr, encoded)
        else:
            ds.add_new(tag_for_keyword(keyword), vr, value)
    return ds


def decode_response(ds: Dataset) -> dict[str, str]:
    charset_elem = ds.get_item(0x00080005)
    charsets = parse_charset(element_text(ds, 0x00080005, "CS", [])) if charset_elem else []
    values = {}
    for tag in ds.keys():
        tag = int(tag)
        if tag in (0x00080005, 0x00080052):
            continue
        keyword = keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        vr = ds.get_item(tag).VR or (dictionary_VR(tag).split(" or ")[0] if keyword_for_tag(tag) else "UN")
        values[keyword] = "" if vr == "SQ" else element_text(ds, tag, vr, charsets)
    return values


def find(settings: Settings, target: Peer, level: str, keys: Mapping[str, str], *,
         model: str = "study", charset: str = "ISO_IR 192") -> Iterator[FindResult]:
    """C-FIND; yields each pending match, then the final status."""
    sop_class = MODELS[model]
    identifier = build_identifier(level, keys, charset)
    ae = client_ae(settings)
    ae.add_requested_context(sop_class)
    assoc = open_association(ae, target)
    try:
        for status, answer in assoc.send_c_find(identifier, sop_class):
            if "Status" not in status:
                raise QueryFailed(f"no valid answer from {target} (timeout or aborted association)")
            code = int(status.Status)
            comment = str(status.get("ErrorComment", "") or "")
            yield FindResult(code, decode_response(answer) if answer is not None else {}, comment)
    finally:
        if assoc.is_established:
            assoc.release()
