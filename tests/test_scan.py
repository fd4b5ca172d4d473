"""archive/scan.py, the one pass that parses and walks a small dataset in memory,
answers what the general path (pydicom's parse, then validation's walk) answers, on
every shape of dataset the store meets, and gives up on what it does not take."""
from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian

from dsmpacs.archive import part10
from dsmpacs.archive.attributes import extract
from dsmpacs.archive.part10 import HEADER_DEFER_SIZE, parse_header
from dsmpacs.archive.validation import _walk, dataset_problem
from tests import factories as f
from tests.test_validation import BROKEN, SOUND


def _undefined_lengths(ds: Dataset) -> Dataset:
    for elem in ds.iterall():
        if elem.VR == "SQ":
            elem.is_undefined_length = True
            for item in elem.value:
                item.is_undefined_length_sequence_item = True
    return ds


def _coded(meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "121070", "DCM", meaning
    return item


def sequences(ds: Dataset) -> Dataset:
    ds.ProcedureCodeSequence = [_coded("Angiography")]
    ds.ReferencedStudySequence = [Dataset()]
    ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID = "1.2.3"
    ds.ReferencedStudySequence[0].ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ds.RequestAttributesSequence = [_coded("one"), _coded("two")]
    ds.RequestAttributesSequence[1].ScheduledProtocolCodeSequence = [_coded("nested")]
    return ds


def chinese(charset: str, name: str) -> Dataset:
    ds = f.secondary_capture(size=16, patient=f.Patient(name=name, charset=charset))
    ds.StudyDescription = "冠状动脉造影"
    return sequences(ds)


def build(path: Path, ds: Dataset, syntax: str | None = None, tail: bytes = b"") -> Path:
    f.write(ds, path, syntax)
    if tail:
        path.write_bytes(path.read_bytes() + tail)
    return path


def long_and_empty(ds: Dataset) -> Dataset:
    ds.PatientComments = "x" * (HEADER_DEFER_SIZE + 904)     # deferred by both parses
    ds.StudyID = ""
    ds.OperatorsName = ""
    ds.AcquisitionDateTime = ""
    return ds


def trailing_padding(ds: Dataset) -> Dataset:
    ds.add_new(0xFFFCFFFC, "OB", b"\0" * 64)    # Data Set Trailing Padding, after Pixel Data
    return ds


def un_sequence(path: Path) -> Path:
    """A private sequence relayed as UN of undefined length (Implicit VR items)."""
    f.write(f.secondary_capture(size=16), path)
    text = b"SIEMENS "
    inner = struct.pack("<HHL", 0x0029, 0x1001, len(text)) + text
    item = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF) + inner + struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
    un = struct.pack("<HH2sHL", 0x0029, 0x1010, b"UN", 0, 0xFFFFFFFF) + item \
        + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    raw = path.read_bytes()
    at = raw.rfind(b"\xe0\x7f\x10\x00")
    path.write_bytes(raw[:at] + un + raw[at:])
    return path


def private_implicit_sequence(path: Path) -> Path:
    """Implicit VR: a private element of undefined length, a sequence by its first item."""
    ds = f.secondary_capture(size=16)
    block = ds.private_block(0x0019, "ACME 1.0", create=True)
    block.add_new(0x10, "SQ", [_coded("private")])
    f.write(_undefined_lengths(ds), path, ImplicitVRLittleEndian)
    return path


SHAPES = {
    "secondary-capture": lambda p: build(p, f.secondary_capture(size=104)),
    "implicit-vr": lambda p: build(p, f.secondary_capture(size=64), ImplicitVRLittleEndian),
    "ct-multivalued": lambda p: build(p, f.ct_slice(size=64)),
    "csa-private-ob": lambda p: build(p, f.csa_non_image(payload_size=100_000)),
    "jpeg-encapsulated": lambda p: build(p, f.jpeg_baseline(size=64)),
    "sequences-defined": lambda p: build(p, sequences(f.secondary_capture(size=16))),
    "sequences-undefined": lambda p: build(p, _undefined_lengths(sequences(f.secondary_capture(size=16)))),
    "sequences-undefined-implicit": lambda p: build(
        p, _undefined_lengths(sequences(f.secondary_capture(size=16))), ImplicitVRLittleEndian),
    "gb18030": lambda p: build(p, _undefined_lengths(chinese("GB18030", "张^三"))),
    "iso2022-ir58": lambda p: build(p, _undefined_lengths(
        chinese(["", "ISO 2022 IR 58"], "Zhang^San=张^三=ㄓㄤ^ㄙㄢ"))),
    "long-and-empty": lambda p: build(p, long_and_empty(f.secondary_capture(size=16))),
    "long-and-empty-implicit": lambda p: build(p, long_and_empty(f.secondary_capture(size=16)),
                                               ImplicitVRLittleEndian),
    "after-pixel-data": lambda p: build(p, trailing_padding(f.secondary_capture(size=16))),
    "zero-padded-end": lambda p: build(p, f.secondary_capture(size=16), tail=b"\0\0\0"),
    "un-sequence": un_sequence,
    "private-implicit-sequence": private_implicit_sequence,
    **SOUND,
}


def _general(data: bytes) -> part10.Header:
    """The header as the general path parses it (what parse_header did before scan.py)."""
    return part10._parse_header(io.BytesIO(data), data)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_one_pass_answers_as_the_general_path(tmp_path, name):
    data = SHAPES[name](tmp_path / f"{name}.dcm").read_bytes()
    header, general = parse_header(data), _general(data)
    if name == "deflated-xa":            # not Little Endian as stored: the general path's alone
        assert header.walked is None
        return
    assert header.walked is not None, "the one pass gave up on a sound dataset"
    assert header.dataset._dict == general.dataset._dict
    assert list(header.dataset.keys()) == list(general.dataset.keys())
    assert header.dataset.original_encoding == general.dataset.original_encoding
    assert header.dataset.original_character_set == general.dataset.original_character_set
    assert (header.meta, header.transfer_syntax_uid, header.dataset_offset) == \
        (general.meta, general.transfer_syntax_uid, general.dataset_offset)
    assert header.walked == _walk(io.BytesIO(data), len(data), general).pixels
    assert dataset_problem("", header) == dataset_problem("", general) == ""
    assert extract(header.dataset, lambda e: header.deferred_value(e, "")) == \
        extract(general.dataset, lambda e: general.deferred_value(e, ""))


def test_the_shapes_cover_what_the_one_pass_handles_apart(tmp_path):
    """The cases above reach the one pass's own branches: a value deferred and one
    empty, an undefined-length sequence handed to pydicom, encapsulated fragments,
    an element after Pixel Data."""
    from pydicom.dataelem import DataElement

    seen = set()
    for name in ("long-and-empty", "sequences-undefined", "jpeg-encapsulated", "after-pixel-data"):
        header = parse_header(SHAPES[name](tmp_path / f"{name}.dcm").read_bytes())
        elems = list(header.dataset._dict.values())
        if any(getattr(e, "value", 0) is None and e.length for e in elems):
            seen.add("deferred")
        if any(getattr(e, "value", None) == b"" for e in elems):
            seen.add("empty")
        if any(isinstance(e, DataElement) and e.VR == "SQ" for e in elems):
            seen.add("pydicom's sequence")
        if any(p.length is None and p.fragments for p in header.walked.values()):
            seen.add("fragments")
        if header.data.rfind(b"\xfc\xff\xfc\xff") > header.data.rfind(b"\xe0\x7f\x10\x00"):
            seen.add("after pixel data")
    assert seen == {"deferred", "empty", "pydicom's sequence", "fragments", "after pixel data"}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_datasets_are_left_to_the_general_path_or_judged_alike(tmp_path, name):
    path = BROKEN[name][0](tmp_path / f"{name}.dcm")
    data = path.read_bytes()
    if len(data) > part10.READ_WHOLE:
        pytest.fail(f"{name} is {len(data)} bytes: not a case for the in-memory pass")
    if name == "deflate-bomb":          # deflated: the general path's alone (its bound is a setting)
        assert part10._scanned_header(data) is None
        return
    try:
        general = _general(data)
    except part10.InvalidDataset:
        assert part10._scanned_header(data) is None
        return
    expected = dataset_problem(path, general)               # the walk over the file
    assert expected, name
    header = parse_header(data)
    assert dataset_problem(path, header) == expected
    structural = name in ("length-past-end", "nested-length-past-item", "deep-nesting")
    assert (header.walked is None) == structural, name


def test_a_dataset_cut_anywhere_is_judged_as_the_general_path_judges_it(tmp_path):
    """Cut after every byte of a small dataset with sequences: where the one pass
    answers, its answer is the general path's; it answers for few cuts (those at an
    element's end, which leave a shorter but sound dataset)."""
    data = build(tmp_path / "cut.dcm", _undefined_lengths(sequences(f.secondary_capture(size=4)))).read_bytes()
    offset = _general(data).dataset_offset
    taken = 0
    for at in range(offset, len(data)):
        try:
            header = parse_header(data[:at])
        except part10.InvalidDataset:
            continue                    # refused by the general path's parse
        if header.walked is not None:
            taken += 1
            general = _general(data[:at])
            assert header.dataset._dict == general.dataset._dict, at
            assert dataset_problem("", header) == dataset_problem("", general), at
    assert 0 < taken < 40, taken


def test_a_transfer_syntax_the_sender_made_up_is_not_remembered(tmp_path):
    """The transfer syntax comes from the sender (an upload's File Meta may name any):
    only syntaxes pydicom knows are kept in the one pass's table, which stays bounded."""
    data = SHAPES["secondary-capture"](tmp_path / "sc.dcm").read_bytes()
    parse_header(data)
    known = dict(part10._SYNTAXES)
    for n in range(50):
        made_up = f"1.2.840.10008.9.{n:03d}".encode()        # as long as Explicit VR LE's UID
        assert len(made_up) == len(b"1.2.840.10008.1.2.1")
        with pytest.raises(part10.InvalidDataset, match="not a transfer syntax"):     # the general path's
            parse_header(data.replace(b"1.2.840.10008.1.2.1\0", made_up + b"\0", 1))
    assert part10._SYNTAXES == known
