"""DICOM objects the archive makes itself from what users do in the viewer: a
Grayscale Softcopy Presentation State for their annotations (presentation_state.py)
and a Key Object Selection Document for their key images (key_objects.py).

They enter the archive like any received object, through archive.ingest.Ingest,
so they are indexed, served by C-MOVE/C-GET/WADO and audited the same way. Each is
a new series in the study of the images it references.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dsmpacs.archive.browse import instance_file
from dsmpacs.archive.index import Index
from dsmpacs.archive.ingest import Ingest, Origin
from dsmpacs.archive.part10 import file_meta_bytes
from dsmpacs.archive.results import StoreResult
from dsmpacs.archive.storage import Storage

# Copied from a referenced image: a derived object belongs to the same patient and study.
PATIENT_STUDY = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
                 "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
                 "AccessionNumber", "StudyDescription")
ORIGIN_KIND = "derived"         # Instance.origin of objects the archive made


class SourceMissing(LookupError):
    """A referenced image is not in the archive (or not in that series and study)."""


@dataclass(frozen=True)
class SourceImage:
    """What a derived object needs to know of an image it references."""
    study: str
    series: str
    sop: str
    sop_class: str
    rows: int
    columns: int
    frames: int
    header: Dataset


def load_source(index: Index, storage: Storage, study: str, series: str, sop: str) -> SourceImage:
    found = instance_file(index, study, series, sop)
    if found is None or found.corrupt:
        raise SourceMissing(f"no image {sop} in series {series} of study {study}")
    header = dcmread(storage.path(found.path), stop_before_pixels=True)
    return SourceImage(study, series, sop, found.sop_class_uid, int(header.get("Rows") or 0),
                       int(header.get("Columns") or 0), found.frames, header)


def new_uid() -> str:
    # 2.25 + a random UUID: unique without a registered root (PS3.5 B.2).
    return generate_uid(prefix=None)


def common_header(source: SourceImage, sop_class: str, modality: str, series_description: str,
                  series_number: int, now: datetime) -> Dataset:
    """SOP Common, Patient, General Study, a new General Series and General Equipment."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"      # labels may be Chinese: UTF-8 throughout
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = new_uid()
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    for keyword in PATIENT_STUDY:
        value = source.header.get(keyword)
        setattr(ds, keyword, value if value is not None else "")
    ds.Modality = modality
    ds.SeriesInstanceUID = new_uid()
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.SeriesDate = ds.InstanceCreationDate
    ds.SeriesTime = ds.InstanceCreationTime
    ds.Manufacturer = "DSM PACS"
    ds.InstanceNumber = 1
    return ds


def store(ingest: Ingest, ds: Dataset, who: str) -> StoreResult:
    """Encode ``ds`` (Explicit VR Little Endian) behind our own file meta and hand it to
    the single ingest path; the result says whether it was stored."""
    body = io.BytesIO()
    ds.save_as(body, implicit_vr=False, little_endian=True, enforce_file_format=False)
    head = file_meta_bytes(ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian)
    body.seek(0)
    staged = ingest.storage.stage_stream(head, body, sync=False)
    return ingest.store(staged, Origin(ORIGIN_KIND, peer=who),
                        expected_sop_class_uid=ds.SOPClassUID,
                        expected_sop_instance_uid=ds.SOPInstanceUID,
                        expected_study_instance_uid=ds.StudyInstanceUID)


def next_series_number(index: Index, study: str) -> int:
    """One past the study's highest series number, so the new series sorts last."""
    from dsmpacs.archive.browse import study_detail

    detail = study_detail(index, study)
    numbers = [s.series_number for s in (detail.series if detail else []) if s.series_number is not None]
    return max(numbers, default=0) + 1
