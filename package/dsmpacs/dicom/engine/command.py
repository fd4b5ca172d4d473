"""Received DIMSE command sets split into elements by hand, their numbers and UIDs
converted at once.

pynetdicom's ``decode_msg`` decodes every received command set (group 0000,
always Implicit VR Little Endian, PS3.7 6.3.1) with pydicom's ``read_dataset``
into raw elements, then reads them by keyword: CommandField and
CommandDataSetType to know the message, the two UIDs of a C-STORE-RQ for the
spool's File Meta, and store_service the primitive's parameters. pydicom
converts each raw element on its first read, through its hooks, the keyword
and VR dictionaries and a DataElement made anew; with the reader's own
generator, about 60 µs of the association thread for every C-STORE on the
development VM, about half of it in those conversions.

``decode`` here walks the command set's element headers itself. A single-valued
element whose dictionary VR is US, UL or UI (every parameter of a C-STORE-RQ
but the Move Originator's AE title) becomes a DataElement holding the value
pydicom's own converter gives (``convert_numbers``' integer, ``convert_UI``'s
UID, validated on reading as pydicom validates it); every other element stays
a RawDataElement exactly as pydicom's reader makes it, converted by pydicom on
its first read. Anything that is not a plain command set (an element outside
group 0000, a length running past the end or undefined, a tag pydicom's
dictionary does not know) goes to pynetdicom's own ``decode``, which reads it as
before, as does every data set and every other encoding.
"""
from __future__ import annotations

import struct
from io import BytesIO

from pydicom.datadict import DicomDictionary
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.values import convert_UI
from pynetdicom import dimse_messages

_installed = False
_HEADER = struct.Struct("<HHL")
_original_decode = dimse_messages.decode


def _unsigned(size: int):
    def convert(value: bytes) -> int | None:
        return int.from_bytes(value, "little") if len(value) == size else None
    return convert


def _uid(value: bytes) -> UID | None:
    converted = convert_UI(value, True)
    return converted if isinstance(converted, UID) else None     # several values: a list


# (0000,eeee) -> (tag, VR, converter or None), from pydicom's own dictionary.
_CONVERTERS = {"US": _unsigned(2), "UL": _unsigned(4), "UI": _uid}
_COMMAND_ELEMENTS = {
    tag & 0xFFFF: (BaseTag(tag), entry[0], _CONVERTERS.get(entry[0]) if entry[1] == "1" else None)
    for tag, entry in DicomDictionary.items() if tag >> 16 == 0
}


def command_set(data: bytes) -> Dataset | None:
    """The command set in ``data`` as pydicom's reader would give it, with its numbers
    and UIDs already converted; None when it is not a plain command set."""
    elements: dict[BaseTag, DataElement | RawDataElement] = {}
    position, end = 0, len(data)
    while position < end:
        if end - position < 8:
            return None
        group, element, length = _HEADER.unpack_from(data, position)
        start = position + 8
        position = start + length
        known = _COMMAND_ELEMENTS.get(element)
        if group != 0 or position > end or known is None:
            return None
        tag, vr, convert = known
        value = data[start:position]
        converted = convert(value) if convert is not None else None
        if converted is None:
            elements[tag] = RawDataElement(tag, None, length, value, start, True, True)
        else:
            elements[tag] = DataElement(tag, vr, converted, start, already_converted=True)
    dataset = Dataset(elements)
    dataset.set_original_encoding(True, True, dataset._parent_encoding)
    return dataset


def decode(bytestring: BytesIO, is_implicit_vr: bool, is_little_endian: bool,
           deflated: bool = False) -> Dataset:
    """pynetdicom's ``dsutils.decode`` as ``decode_msg`` calls it for command sets."""
    if is_implicit_vr and is_little_endian and not deflated:
        dataset = command_set(bytestring.getvalue())
        if dataset is not None:
            return dataset
    return _original_decode(bytestring, is_implicit_vr, is_little_endian, deflated)


def install() -> None:
    """Decode received command sets with ``decode`` (engine.install)."""
    global _installed
    if _installed:
        return
    dimse_messages.decode = decode
    _installed = True
