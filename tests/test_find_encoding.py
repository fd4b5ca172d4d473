"""The hand-written parts of the C-FIND answer: element encoding and ISO 2022 IR 58,
read back with pydicom (an independent decoder)."""
from __future__ import annotations

import struct
from io import BytesIO

import pytest
from pydicom.filereader import read_dataset

from dsmpacs.archive.charset import decode_text, encode_text
from dsmpacs.dicom.engine.wire import encode_elements


@pytest.mark.parametrize("implicit", [True, False])
def test_encoded_elements_read_back_with_pydicom(implicit):
    name = encode_text("Zhang^San=张^三", ["GB18030"])
    elements = [
        (0x00100010, "PN", name),                                  # odd length: space padded
        (0x00080005, "CS", b"GB18030"),
        (0x0020000D, "UI", b"1.2.3"),                              # odd length: NUL padded
        (0x00280010, "US", struct.pack("<H", 512)),
        (0x00201208, "IS", b"40"),
        (0x00081110, "SQ", b""),                                   # unsupported sequence: empty
        (0x00080061, "CS", b"OT\\XA"),
        (0x00100020, "LO", b""),
    ]
    data = encode_elements(elements, implicit=implicit)
    assert len(data) % 2 == 0
    ds = read_dataset(BytesIO(data), is_implicit_VR=implicit, is_little_endian=True)
    assert [int(t) for t in ds.keys()] == sorted(e[0] for e in elements)
    assert str(ds.PatientName) == "Zhang^San=张^三"
    assert ds.StudyInstanceUID == "1.2.3"
    assert ds.Rows == 512 and ds.NumberOfStudyRelatedInstances == 40
    assert list(ds.ModalitiesInStudy) == ["OT", "XA"]
    assert len(ds.ReferencedStudySequence) == 0 and ds.PatientID == ""


def test_iso2022_ir58_designates_each_run_after_a_delimiter():
    charsets = ["", "ISO 2022 IR 58"]
    raw = encode_text("Wang^XiaoDong=王^小东=", charsets)
    esc = b"\x1b$)A"
    assert raw == b"Wang^XiaoDong=" + esc + "王".encode("gb2312") + b"^" + esc + "小东".encode("gb2312") + b"="
    assert decode_text(raw, charsets).text == "Wang^XiaoDong=王^小东="
    assert encode_text("Wang^XiaoDong", charsets) == b"Wang^XiaoDong"


def test_text_that_a_character_set_cannot_hold_is_reported():
    assert encode_text("张", ["ISO_IR 100"]) is None
    assert encode_text("张", []) is None
    assert encode_text("Müller", ["ISO_IR 100"]) == "Müller".encode("latin-1")
    assert encode_text("𠀀", ["", "ISO 2022 IR 58"]) is None          # outside GB 2312
