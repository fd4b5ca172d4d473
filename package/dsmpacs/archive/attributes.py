"""The attributes the index keeps at each level, and their extraction from a header.

This table is the single list of what C-FIND and QIDO-RS can match and return
from the index (PS3.4 C.6.1.1 and C.6.2.1, PS3.18 Tables 10.6.1-5 to 10.6.1-7).
The models declare one column per entry (a test checks that), and the query
layer looks attributes up here by keyword.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from typing import Callable

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from dsmpacs.archive.charset import TEXT_VRS, decode_text, parse_charset, person_name_search_forms
from dsmpacs.archive.names import initials_search_form, pinyin_search_form
from dsmpacs.archive.part10 import raw_us
from dsmpacs.archive.uids import clean_uid


class Level(str, Enum):
    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


@dataclass(frozen=True)
class Attribute:
    keyword: str
    vr: str
    level: Level
    max_length: int
    derived: bool = False   # computed by the archive (counts, ModalitiesInStudy)

    # Cached: every stored instance asks each attribute for both (the ingest's
    # extract, the index's statements), and the dictionary look-up and the regex
    # were a tenth of the DICOM process's Python time per small instance.
    @cached_property
    def tag(self) -> int:
        return tag_for_keyword(self.keyword)

    @cached_property
    def column(self) -> str:
        return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", self.keyword).lower()


P, ST, SE, IM = Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE

ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("PatientName", "PN", P, 256),
    Attribute("PatientID", "LO", P, 64),
    Attribute("IssuerOfPatientID", "LO", P, 64),
    Attribute("PatientBirthDate", "DA", P, 8),
    Attribute("PatientBirthTime", "TM", P, 16),
    Attribute("PatientSex", "CS", P, 16),
    Attribute("OtherPatientIDs", "LO", P, 256),
    Attribute("EthnicGroup", "SH", P, 64),
    Attribute("PatientComments", "LT", P, 1024),

    Attribute("StudyInstanceUID", "UI", ST, 64),
    Attribute("StudyDate", "DA", ST, 8),
    Attribute("StudyTime", "TM", ST, 16),
    Attribute("AccessionNumber", "SH", ST, 64),
    Attribute("StudyID", "SH", ST, 64),
    Attribute("StudyDescription", "LO", ST, 128),
    Attribute("ReferringPhysicianName", "PN", ST, 256),
    Attribute("NameOfPhysiciansReadingStudy", "PN", ST, 256),
    Attribute("PatientAge", "AS", ST, 8),
    Attribute("PatientSize", "DS", ST, 16),
    Attribute("PatientWeight", "DS", ST, 16),
    Attribute("TimezoneOffsetFromUTC", "SH", ST, 16),
    Attribute("ModalitiesInStudy", "CS", ST, 256, derived=True),
    Attribute("NumberOfStudyRelatedSeries", "IS", ST, 12, derived=True),
    Attribute("NumberOfStudyRelatedInstances", "IS", ST, 12, derived=True),

    Attribute("SeriesInstanceUID", "UI", SE, 64),
    Attribute("Modality", "CS", SE, 16),
    Attribute("SeriesNumber", "IS", SE, 12),
    Attribute("SeriesDescription", "LO", SE, 128),
    Attribute("SeriesDate", "DA", SE, 8),
    Attribute("SeriesTime", "TM", SE, 16),
    Attribute("BodyPartExamined", "CS", SE, 16),
    Attribute("Laterality", "CS", SE, 16),
    Attribute("ProtocolName", "LO", SE, 128),
    Attribute("PerformedProcedureStepStartDate", "DA", SE, 8),
    Attribute("PerformedProcedureStepStartTime", "TM", SE, 16),
    Attribute("InstitutionName", "LO", SE, 128),
    Attribute("StationName", "SH", SE, 64),
    Attribute("Manufacturer", "LO", SE, 128),
    Attribute("ManufacturerModelName", "LO", SE, 128),
    Attribute("OperatorsName", "PN", SE, 256),
    Attribute("NumberOfSeriesRelatedInstances", "IS", SE, 12, derived=True),

    Attribute("SOPInstanceUID", "UI", IM, 64),
    Attribute("SOPClassUID", "UI", IM, 64),
    Attribute("InstanceNumber", "IS", IM, 12),
    Attribute("ContentDate", "DA", IM, 8),
    Attribute("ContentTime", "TM", IM, 16),
    Attribute("AcquisitionDateTime", "DT", IM, 32),
    Attribute("ImageType", "CS", IM, 128),
    Attribute("Rows", "US", IM, 6),
    Attribute("Columns", "US", IM, 6),
    Attribute("BitsAllocated", "US", IM, 6),
    Attribute("NumberOfFrames", "IS", IM, 12),
    Attribute("PhotometricInterpretation", "CS", IM, 16),
)

BY_KEYWORD = {a.keyword: a for a in ATTRIBUTES}
INTEGER_VRS = frozenset({"IS", "US", "UL", "SS", "SL"})
ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI"})


def attributes_at(level: Level) -> tuple[Attribute, ...]:
    return tuple(a for a in ATTRIBUTES if a.level is level)


# Person-name attributes whose normalised component groups get their own columns.
NAME_SEARCH = {"patient_name": Level.PATIENT, "referring_physician_name": Level.STUDY}


def extracted_columns(level: Level) -> tuple[str, ...]:
    """Every column ``extract()`` can fill at ``level`` (derived counters excluded)."""
    cols = [a.column for a in attributes_at(level) if not a.derived]
    cols.append("specific_character_set")
    for column, at in NAME_SEARCH.items():
        if at is level:
            cols += [f"{column}_{group}" for group in ("alpha", "ideo", "phon")]
    if level is Level.PATIENT:
        cols += ["patient_name_pinyin", "patient_name_initials"]
    return tuple(cols)


# --- value normalisation ----------------------------------------------------

_DATE = re.compile(r"\d{8}")
_TIME = re.compile(r"(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?")


def normalise_date(value: str) -> str:
    """YYYYMMDD, accepting the old ACR-NEMA ``YYYY.MM.DD``; anything else becomes empty."""
    value = value.strip().replace(".", "").replace("-", "")
    return value if _DATE.fullmatch(value) else ""


def normalise_time(value: str) -> str:
    """HHMMSS[.ffffff] padded, so that times compare as strings; ``1230`` is ``123000``."""
    value = value.strip().replace(":", "")
    m = _TIME.fullmatch(value)
    if not m:
        return ""
    hh, mm, ss, frac = m.groups()
    return f"{hh}{mm or '00'}{ss or '00'}{frac or ''}"


def _to_int(value: str) -> int | None:
    try:
        return int(str(value).strip().split("\\")[0])
    except ValueError:
        try:
            return int(float(str(value).strip().split("\\")[0]))
        except ValueError:
            return None


@dataclass
class Extracted:
    """Index values per level, plus what could not be decoded."""
    values: dict[Level, dict[str, object]]
    specific_character_set: str
    problems: list[str]


# The longest value extract() reads back when the header parse left it unread: every
# index column holds at most 256 characters of it.
LONGEST_READ = 64 * 1024
_TEXT, _ASCII, _US, _OTHER = range(4)     # how extract() turns an attribute's raw bytes into text


def _kind(vr: str) -> int:
    return (_TEXT if vr in TEXT_VRS else _ASCII if vr in ASCII_VRS else _US if vr == "US"
            else _OTHER)


def _normaliser(attr: Attribute) -> Callable[[str], object]:
    if attr.vr == "DA":
        return normalise_date
    if attr.vr == "TM":
        return normalise_time
    if attr.vr in INTEGER_VRS:
        return _to_int
    if attr.vr == "UI":
        return clean_uid
    return lambda text, longest=attr.max_length: text.strip()[:longest]


# What extract() reads, in the table's order, each with what it needs decided once
# rather than per instance (its level, column, kind of value and normaliser).
_EXTRACTED = tuple((attr, attr.tag, attr.level, attr.column, _kind(attr.vr), _normaliser(attr))
                   for attr in ATTRIBUTES if not attr.derived)


def extract(ds: Dataset, deferred: Callable[[RawDataElement], bytes | None] | None = None) -> Extracted:
    """Index values from a header read with pydicom (raw elements are decoded here).
    ``deferred`` reads a value the header parse left unread (``Header.deferred_value``);
    without it, or over LONGEST_READ bytes, such a value is not indexed and is named
    among the problems."""
    raw_cs = ds.get_item(0x00080005)
    charset_value = raw_cs.value if raw_cs is not None else None
    # A multi-valued Specific Character Set (``\ISO 2022 IR 58``) is already a
    # MultiValue, which is not a list.
    if isinstance(charset_value, (list, tuple, MultiValue)):
        charset_value = "\\".join(str(v) for v in charset_value)
    charsets = parse_charset(charset_value)
    problems: list[str] = []
    values: dict[Level, dict[str, object]] = {lvl: {} for lvl in Level}
    # The header's elements by plain int: a look-up by pydicom's BaseTag calls its
    # Python __eq__, and get_item builds a Tag from the key first; one dict of the
    # 20-60 elements a header has costs less than that for the 50 attributes asked.
    present = {int(tag): elem for tag, elem in ds._dict.items()}

    for attr, tag, level, column, kind, normalised in _EXTRACTED:
        elem = present.get(tag)
        if elem is None:
            continue
        value = elem.value
        if value is None:
            if not isinstance(elem, RawDataElement) or not elem.length:
                continue                    # empty (implicit VR reads an empty value as None)
            # Left unread by the header parse (part10.HEADER_DEFER_SIZE): no indexed
            # attribute is that long in a conformant file, but a modality's may be.
            value = (deferred(elem) if deferred is not None and elem.length <= LONGEST_READ
                     and kind in (_TEXT, _ASCII) else None)
            if value is None:
                problems.append(f"{attr.keyword}: a value of {elem.length} bytes was not indexed")
                continue
            elem = elem._replace(value=value)
        if kind == _TEXT and isinstance(value, bytes):
            decoded = decode_text(value, charsets)
            if not decoded.ok:
                problems.append(f"{attr.keyword}: {decoded.reason}")
            text = decoded.text.rstrip("\x00 ")
        elif kind == _ASCII and isinstance(value, bytes):
            # Raw bytes of a default-repertoire value: no need for pydicom's conversion.
            text = value.decode("ascii", "replace").rstrip("\x00 ")
        elif kind == _US and (number := raw_us(ds, elem)) is not None:
            text = str(number)
        else:
            try:
                text = _as_text(ds[tag].value)
            except Exception as exc:  # a malformed value must not stop the store
                problems.append(f"{attr.keyword}: unreadable value ({exc})")
                continue
        values[level][column] = normalised(text)

    for lvl in Level:
        values[lvl]["specific_character_set"] = "\\".join(charsets)[:64]
    for column, level in NAME_SEARCH.items():
        alpha, ideo, phon = person_name_search_forms(str(values[level].get(column, "")))
        values[level][f"{column}_alpha"] = alpha[:128]
        values[level][f"{column}_ideo"] = ideo[:128]
        values[level][f"{column}_phon"] = phon[:128]
    patient = values[Level.PATIENT]
    patient["patient_name_pinyin"] = pinyin_search_form(str(patient.get("patient_name", "")))
    patient["patient_name_initials"] = initials_search_form(str(patient.get("patient_name", "")))
    return Extracted(values, "\\".join(charsets), problems)


def _as_text(value) -> str:
    """A non-text value (already converted by pydicom, so endianness is handled) as a string."""
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").rstrip("\x00 ")
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value).rstrip("\x00 ")
