"""A small query/retrieve corpus: five patients in five character sets, six studies.

Used by the index-level query tests (imported through the ingest path) and by
the C-FIND tests (sent with storescu to a server process), so both check
answers against the same stored facts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydicom.uid import generate_uid

from dsmpacs.archive.charset import encode_text
from tests import factories as f

IR58 = "\\ISO 2022 IR 58"


@dataclass
class StudyFacts:
    label: str
    patient: f.Patient
    uid: str
    date: str
    time: str
    accession: str
    series: list["SeriesFacts"] = field(default_factory=list)

    @property
    def instances(self) -> list["InstanceFacts"]:
        return [i for s in self.series for i in s.instances]

    @property
    def modalities(self) -> str:
        return "\\".join(sorted({s.modality for s in self.series}))


@dataclass
class SeriesFacts:
    uid: str
    modality: str
    number: int
    instances: list["InstanceFacts"] = field(default_factory=list)


@dataclass
class InstanceFacts:
    uid: str
    sop_class: str
    number: int
    path: Path


PATIENTS = {
    "P1": f.Patient("Zhang^San=张^三", "QR-P1", "19500101", "M", "GB18030"),
    "P2": f.Patient("ZHANG^WEI", "QR-P2", "19620315", "F", None),
    "P3": f.Patient("Zhao^Li=赵^丽", "QR-P3", "19701120", "F", "ISO_IR 192"),
    "P4": f.Patient("Müller^Hans", "QR-P4", "19801224", "M", "ISO_IR 100"),
    "P5": f.Patient("Wang^XiaoDong=王^小东", "QR-P5", "19900707", "M", IR58),
}

# label: patient, date, time, [(modality, kind, instances)]
LAYOUT = {
    "A": ("P1", "20170105", "101500", [("XA", "xa", 3), ("OT", "sc", 1)]),
    "B": ("P2", "20171231", "235959", [("CT", "ct", 2)]),
    "E": ("P2", "20170601", "050000", [("XA", "xa", 1)]),
    "C": ("P3", "20180301", "080000", [("MR", "sc", 1)]),
    "D": ("P4", "20160101", "120000", [("OT", "sc", 1)]),
    "F": ("P5", "20190101", "090000", [("XA", "xa", 1)]),
}


@dataclass
class Corpus:
    studies: dict[str, StudyFacts]

    @property
    def files(self) -> list[Path]:
        return [i.path for s in self.studies.values() for i in s.instances]

    def study_label(self, uid: str) -> str:
        return next(label for label, s in self.studies.items() if s.uid == uid)

    def series(self) -> list[tuple[str, SeriesFacts]]:
        return [(label, se) for label, st in self.studies.items() for se in st.series]

    def instances(self) -> list[tuple[str, InstanceFacts]]:
        return [(label, i) for label, st in self.studies.items() for i in st.instances]


def _instance(kind: str, **kw):
    if kind == "xa":
        return f.xa_run(frames=2, size=16, **kw)
    if kind == "ct":
        return f.ct_slice(size=16, **kw)
    return f.secondary_capture(size=16, **kw)


def build(directory: Path) -> Corpus:
    studies: dict[str, StudyFacts] = {}
    for label, (pkey, date, time, series_layout) in LAYOUT.items():
        patient = PATIENTS[pkey]
        study = StudyFacts(label, patient, generate_uid(), date, time, f"ACC-{label}")
        for number, (modality, kind, count) in enumerate(series_layout, start=1):
            series = SeriesFacts(generate_uid(), modality, number)
            for inumber in range(1, count + 1):
                ds = _instance(kind, patient=patient, study_uid=study.uid, series_uid=series.uid,
                               study_date=date, study_time=time, accession=study.accession,
                               series_number=number, instance_number=inumber,
                               study_description=f"Study {label}")
                ds.Modality = modality
                if patient.charset == IR58:
                    # pydicom 3.0 would write GB 2312 without the ESC $ ) A designator.
                    ds.add_new(0x00100010, "PN", encode_text(patient.name, ["", "ISO 2022 IR 58"]))
                path = f.write(ds, directory / label / f"{series.number}-{inumber}.dcm")
                series.instances.append(InstanceFacts(str(ds.SOPInstanceUID), str(ds.SOPClassUID),
                                                      inumber, path))
            study.series.append(series)
        studies[label] = study
    return Corpus(studies)
