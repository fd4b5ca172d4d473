"""Synthetic DICOM instances for tests and benchmarks.

Shapes follow what the suite this product serves produces: multi-frame XA
runs (512x512, 12 bits stored), CT-like slices, small secondary captures, a
Siemens CSA Non-Image object with private tags, and JPEG-compressed images.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

XA = "1.2.840.10008.5.1.4.1.1.12.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
SC = "1.2.840.10008.5.1.4.1.1.7"
CSA_NON_IMAGE = "1.3.12.2.1107.5.9.1"

_rng = np.random.default_rng(20261122)


@dataclass
class Patient:
    name: str = "DOE^JOHN"
    patient_id: str = "P0001"
    birth_date: str = "19600101"
    sex: str = "M"
    charset: str | None = None        # Specific Character Set; None: default repertoire


def base_dataset(sop_class: str, *, patient: Patient | None = None, study_uid: str | None = None,
                 series_uid: str | None = None, sop_uid: str | None = None, modality: str = "OT",
                 study_date: str = "20240115", study_time: str = "101500",
                 accession: str = "ACC001", study_description: str = "Study",
                 series_description: str = "Series", series_number: int = 1,
                 instance_number: int = 1) -> Dataset:
    patient = patient or Patient()
    ds = Dataset()
    if patient.charset:
        ds.SpecificCharacterSet = patient.charset
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.StudyDate = study_date
    ds.SeriesDate = study_date
    ds.StudyTime = study_time
    ds.AccessionNumber = accession
    ds.Modality = modality
    ds.Manufacturer = "DSMPACS-TEST"
    ds.ReferringPhysicianName = "REFERRER^A"
    ds.StudyDescription = study_description
    ds.SeriesDescription = series_description
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    return ds


def _image(ds: Dataset, pixels: np.ndarray, bits_stored: int) -> None:
    frames = pixels.shape[0] if pixels.ndim == 3 else 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if frames > 1 or ds.SOPClassUID == XA:
        ds.NumberOfFrames = frames
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()


def noise(shape: tuple[int, ...], bits: int) -> np.ndarray:
    dtype = np.uint8 if bits <= 8 else np.uint16
    return _rng.integers(0, 2 ** bits, size=shape, dtype=dtype)


def xa_run(frames: int = 40, size: int = 512, **kw) -> Dataset:
    """A DSA-like multi-frame XA run, 12 bits stored in 16."""
    ds = base_dataset(XA, modality="XA", **kw)
    ds.CineRate = 15
    ds.FrameTime = 66.7
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    _image(ds, noise((frames, size, size), 12), 12)
    return ds


def ct_slice(size: int = 512, **kw) -> Dataset:
    ds = base_dataset(CT, modality="CT", **kw)
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    _image(ds, noise((size, size), 12), 12)
    return ds


def secondary_capture(size: int = 64, **kw) -> Dataset:
    ds = base_dataset(SC, **kw)
    _image(ds, noise((size, size), 8), 8)
    return ds


def csa_non_image(payload_size: int = 200_000, **kw) -> Dataset:
    """Siemens CSA Non-Image: a private SOP class carrying a private OB blob."""
    ds = base_dataset(CSA_NON_IMAGE, modality="XA", **kw)
    block = ds.private_block(0x0029, "SIEMENS CSA NON-IMAGE", create=True)
    block.add_new(0x08, "CS", "XA3DRECON")
    block.add_new(0x10, "OB", bytes(_rng.integers(0, 256, payload_size, dtype=np.uint8)))
    return ds


def jpeg_baseline(size: int = 256, **kw) -> Dataset:
    """An 8-bit image compressed with JPEG baseline (lossy; the archive keeps it as is)."""
    from PIL import Image

    ds = base_dataset(SC, **kw)
    y, x = np.mgrid[0:size, 0:size]
    pixels = ((x * 255 // size + y) % 256).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    _image(ds, pixels, 8)
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    ds._jpeg = True  # marker for write(): the transfer syntax
    return ds


def write(ds: Dataset, path: Path, transfer_syntax: str | None = None) -> Path:
    """Write a Part 10 file with a fresh zero preamble and file meta."""
    if transfer_syntax is None:
        transfer_syntax = JPEGBaseline8Bit if getattr(ds, "_jpeg", False) else ExplicitVRLittleEndian
    if hasattr(ds, "_jpeg"):
        del ds._jpeg
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True,
               implicit_vr=transfer_syntax == ImplicitVRLittleEndian, little_endian=True)
    return path


def dataset_bytes(path: Path) -> bytes:
    """The dataset bytes of a Part 10 file (everything after the file meta group)."""
    from dsmpacs.archive.part10 import read_header

    offset = read_header(path).dataset_offset
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read()


def read_uid(path: Path) -> str:
    from pydicom import dcmread

    return str(dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)


def deflated_xa(path: Path, inflated_mb: int, size: int = 1024) -> Path:
    """A Deflated Explicit VR Little Endian XA run of black frames that inflates to
    about ``inflated_mb`` MiB from a file a thousand times smaller: a valid image
    below the archive's inflate bound, a deflate bomb above it. Written as a stream
    so a gigabyte costs the test no memory."""
    import struct
    import zlib

    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from dsmpacs.archive.part10 import file_meta_bytes

    frame = size * size * 2
    frames = max(1, inflated_mb * 2**20 // frame)
    ds = base_dataset(XA, modality="XA")
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.NumberOfFrames = frames
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, ds)
    pixels = frames * frame
    head = buf.getvalue() + struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, pixels)
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        out.write(file_meta_bytes(XA, ds.SOPInstanceUID, DeflatedExplicitVRLittleEndian))
        out.write(squeeze.compress(head))
        left = pixels
        while left:
            chunk = zeros[:min(left, len(zeros))]
            out.write(squeeze.compress(chunk))
            left -= len(chunk)
        out.write(squeeze.flush())
    return path
