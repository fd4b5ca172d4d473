"""C-FIND against the archive as a real process: dcmtk storescu stores the corpus,
dcmtk findscu queries every level of both information models, and the answers
are checked against what was stored."""
from __future__ import annotations

import pytest

from dsmpacs.archive import Archive
from dsmpacs.archive.models import Patient, Study
from dsmpacs.settings import Settings
from tests import qr_corpus
from tests.findscu import findscu, register

IR58_DESIGNATE = b"\x1b$)A"


@pytest.fixture
def loaded(server_factory, database_url, tmp_path):
    """A server holding the corpus, with FINDSCU registered as a remote AE."""
    def start(**sets):
        corpus = qr_corpus.build(tmp_path / "corpus")
        server = server_factory(database_url=database_url, **sets)
        done = server.storescu(*corpus.files)
        assert done.returncode == 0, done.stderr
        register(server, "workstation", "FINDSCU")
        return server, corpus
    return start


def labels(corpus, result) -> list[str]:
    return sorted(corpus.study_label(uid) for uid in result.values("StudyInstanceUID"))


def test_study_root_every_level_wildcards_dates_and_uid_lists(loaded, tmp_path):
    server, corpus = loaded()
    out = tmp_path / "rsp"

    study = findscu(server.port, ["QueryRetrieveLevel=STUDY", "PatientName=zhang*", "StudyInstanceUID",
                                  "StudyDate", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                                  "NumberOfStudyRelatedInstances", "AccessionNumber"], out)
    assert study.final == "Success" and set(study.pending) == {"Pending"}
    assert labels(corpus, study) == ["A", "B", "E"]
    for ds in study.responses:
        facts = corpus.studies[corpus.study_label(ds.StudyInstanceUID)]
        assert ds.QueryRetrieveLevel == "STUDY"
        assert ds.StudyDate == facts.date and ds.AccessionNumber == facts.accession
        modalities = ds["ModalitiesInStudy"].value
        assert (modalities if isinstance(modalities, str) else "\\".join(modalities)) == facts.modalities
        assert int(ds.NumberOfStudyRelatedSeries) == len(facts.series)
        assert int(ds.NumberOfStudyRelatedInstances) == len(facts.instances)
        assert "PatientName" in ds                     # requested keys only, with their values
        assert "PatientID" not in ds

    dated = findscu(server.port, ["QueryRetrieveLevel=STUDY", "StudyDate=20170101-20171231",
                                  "StudyInstanceUID"], out)
    assert labels(corpus, dated) == ["A", "B", "E"]
    assert labels(corpus, findscu(server.port, ["QueryRetrieveLevel=STUDY", "StudyDate=-20170105",
                                                "StudyInstanceUID"], out)) == ["A", "D"]
    a, c = corpus.studies["A"].uid, corpus.studies["C"].uid
    listed = findscu(server.port, ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={a}\\{c}"], out)
    assert labels(corpus, listed) == ["A", "C"]

    series = findscu(server.port, ["QueryRetrieveLevel=SERIES", f"StudyInstanceUID={a}", "SeriesInstanceUID",
                                   "Modality", "SeriesNumber", "NumberOfSeriesRelatedInstances"], out)
    stored = {s.uid: s for s in corpus.studies["A"].series}
    assert sorted(series.values("SeriesInstanceUID")) == sorted(stored)
    for ds in series.responses:
        assert ds.Modality == stored[ds.SeriesInstanceUID].modality
        assert int(ds.NumberOfSeriesRelatedInstances) == len(stored[ds.SeriesInstanceUID].instances)

    xa = corpus.studies["A"].series[0]
    images = findscu(server.port, ["QueryRetrieveLevel=IMAGE", f"SeriesInstanceUID={xa.uid}",
                                   "SOPInstanceUID", "InstanceNumber", "SOPClassUID", "Rows"], out)
    assert sorted((int(ds.InstanceNumber), ds.SOPInstanceUID, ds.SOPClassUID, ds.Rows)
                  for ds in images.responses) == [(i.number, i.uid, i.sop_class, 16) for i in xa.instances]
    one = findscu(server.port, ["QueryRetrieveLevel=IMAGE", "InstanceNumber=2", "Modality=X?",
                                "SOPInstanceUID"], out)
    assert one.values("SOPInstanceUID") == [xa.instances[1].uid]

    refused = findscu(server.port, ["QueryRetrieveLevel=PATIENT", "PatientName"], out)
    assert refused.responses == [] and "DataSetDoesNotMatchSOPClass" in refused.final


def test_patient_root_every_level(loaded, tmp_path):
    server, corpus = loaded()
    out = tmp_path / "rsp"
    patients = findscu(server.port, ["QueryRetrieveLevel=PATIENT", "PatientName", "PatientID",
                                     "PatientBirthDate", "NumberOfPatientRelatedStudies",
                                     "NumberOfPatientRelatedInstances"], out, model="-P")
    assert patients.final == "Success"
    by_id = {ds.PatientID: ds for ds in patients.responses}
    assert sorted(by_id) == sorted(p.patient_id for p in qr_corpus.PATIENTS.values())
    for key, patient in qr_corpus.PATIENTS.items():
        studies = [s for s in corpus.studies.values() if s.patient is patient]
        ds = by_id[patient.patient_id]
        assert ds.PatientBirthDate == patient.birth_date
        assert int(ds.NumberOfPatientRelatedStudies) == len(studies)
        assert int(ds.NumberOfPatientRelatedInstances) == sum(len(s.instances) for s in studies)

    studies = findscu(server.port, ["QueryRetrieveLevel=STUDY", "PatientID=QR-P2", "StudyInstanceUID"], out,
                      model="-P")
    assert labels(corpus, studies) == ["B", "E"]
    b = corpus.studies["B"]
    series = findscu(server.port, ["QueryRetrieveLevel=SERIES", "PatientID=QR-P2", f"StudyInstanceUID={b.uid}",
                                   "SeriesInstanceUID", "Modality"], out, model="-P")
    assert series.values("SeriesInstanceUID") == [b.series[0].uid] and series.values("Modality") == ["CT"]
    images = findscu(server.port, ["QueryRetrieveLevel=IMAGE", "PatientID=QR-P2", f"StudyInstanceUID={b.uid}",
                                   f"SeriesInstanceUID={b.series[0].uid}", "SOPInstanceUID",
                                   "ImageType"], out, model="-P")
    assert sorted(images.values("SOPInstanceUID")) == sorted(i.uid for i in b.instances)
    assert all(list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"] for ds in images.responses)


def test_chinese_names_in_gb18030_utf8_and_iso2022(loaded, tmp_path):
    server, corpus = loaded()
    out = tmp_path / "rsp"
    # The query identifier in GB18030, as a Chinese workstation sends it.
    gb = findscu(server.port, ["QueryRetrieveLevel=STUDY", "SpecificCharacterSet=GB18030",
                               b"PatientName=" + "张*".encode("gb18030"), "StudyInstanceUID", "PatientID"], out)
    assert labels(corpus, gb) == ["A"]
    answer = gb.responses[0]
    # answered in the character set the patient was stored in (GB18030), which says so
    assert answer.SpecificCharacterSet == "GB18030"
    assert answer.get_item(0x00100010).value.rstrip(b" ") == "Zhang^San=张^三".encode("gb18030")
    assert str(answer.PatientName) == "Zhang^San=张^三"

    # the same patient found with a UTF-8 query; the UTF-8 patient answered in UTF-8
    utf8 = findscu(server.port, ["QueryRetrieveLevel=STUDY", "SpecificCharacterSet=ISO_IR 192",
                                 b"PatientName=" + "张*".encode("utf-8"), "StudyInstanceUID"], out)
    assert labels(corpus, utf8) == ["A"]
    zhao = findscu(server.port, ["QueryRetrieveLevel=STUDY", "SpecificCharacterSet=GB18030",
                                 b"PatientName=" + "赵*".encode("gb18030"), "StudyInstanceUID"], out)
    assert labels(corpus, zhao) == ["C"]
    assert zhao.responses[0].SpecificCharacterSet == "ISO_IR 192"
    assert str(zhao.responses[0].PatientName) == "Zhao^Li=赵^丽"

    # ISO 2022 IR 58: each run of GB 2312 after a delimiter is designated again
    wang = findscu(server.port, ["QueryRetrieveLevel=STUDY", "SpecificCharacterSet=GB18030",
                                 b"PatientName=" + "*=王*".encode("gb18030"), "StudyInstanceUID"], out)
    assert labels(corpus, wang) == ["F"]
    assert list(wang.responses[0].SpecificCharacterSet) == ["", "ISO 2022 IR 58"]
    assert wang.responses[0].get_item(0x00100010).value.rstrip(b" ") == (
        b"Wang^XiaoDong=" + IR58_DESIGNATE + "王".encode("gb2312") + b"^" + IR58_DESIGNATE
        + "小东".encode("gb2312"))

    latin = findscu(server.port, ["QueryRetrieveLevel=PATIENT", "SpecificCharacterSet=ISO_IR 100",
                                  b"PatientName=" + "müller*".encode("latin-1"), "PatientID"], out, model="-P")
    assert latin.values("PatientID") == ["QR-P4"]
    assert latin.responses[0].SpecificCharacterSet == "ISO_IR 100"


def test_unsupported_keys_are_returned_empty_with_a_warning(loaded, tmp_path):
    server, corpus = loaded()
    out = tmp_path / "rsp"
    result = findscu(server.port, ["QueryRetrieveLevel=STUDY", "AccessionNumber=ACC-A", "Modality",
                                   "0029,1010", "WindowCenter", "RetrieveAETitle", "InstanceAvailability",
                                   "NumberOfStudyRelatedSeries=9"], out)
    assert result.final == "Success"
    assert result.pending == ["Pending: WarningUnsupportedOptionalKeys"]
    ds = result.responses[0]
    for unsupported in ("Modality", "WindowCenter", 0x00291010):
        assert ds[unsupported].VM == 0, unsupported            # present, zero length
    assert ds.RetrieveAETitle == server.ae_title and ds.InstanceAvailability == "ONLINE"
    assert int(ds.NumberOfStudyRelatedSeries) == 2        # a return key: the value, not a match
    plain = findscu(server.port, ["QueryRetrieveLevel=STUDY", "AccessionNumber=ACC-A", "PatientID"], out)
    assert plain.pending == ["Pending"] and plain.values("PatientID") == ["QR-P1"]


def test_bad_identifiers_get_a_clear_status_and_the_daemon_keeps_running(loaded, tmp_path):
    server, corpus = loaded()
    out = tmp_path / "rsp"
    bad_date = findscu(server.port, ["QueryRetrieveLevel=STUDY", "StudyDate=2017x", "StudyInstanceUID"], out)
    assert bad_date.responses == [] and "UnableToProcess" in bad_date.final
    wildcard_uid = findscu(server.port, ["QueryRetrieveLevel=STUDY", "StudyInstanceUID=1.2.*"], out)
    assert "UnableToProcess" in wildcard_uid.final
    no_level = findscu(server.port, ["PatientName=ZHANG*"], out)
    assert "DataSetDoesNotMatchSOPClass" in no_level.final
    assert server.logged("not a date or date range") and server.logged("QueryRetrieveLevel")
    assert server.alive()
    assert findscu(server.port, ["QueryRetrieveLevel=STUDY", "PatientName=ZHANG*"], out).final == "Success"


def _add_studies(server, count: int) -> None:
    """Index rows for ``count`` more studies of one patient, written beside the server."""
    settings = Settings.load(data_dir=server.data_dir, env={}, overrides=dict(server.sets))
    archive = Archive(settings)
    archive.open()
    try:
        with archive.index.write():
            patient = Patient.create(patient_key="bulk", patient_id="BULK", patient_name="BULK^PATIENT",
                                     patient_name_alpha="bulk^patient")
            rows = [{"patient": patient.id, "study_instance_uid": f"2.25.{n}", "study_date": "20200101"}
                    for n in range(count)]
            for start in range(0, count, 500):
                Study.insert_many(rows[start:start + 500]).execute()
    finally:
        archive.close()


def test_cancel_and_result_limit(loaded, tmp_path):
    server, corpus = loaded(query_limit=0)
    _add_studies(server, 3000)
    out = tmp_path / "rsp"
    cancelled = findscu(server.port, ["QueryRetrieveLevel=STUDY", "PatientID=BULK", "StudyInstanceUID"], out,
                        extra=("--cancel", "1"))
    assert cancelled.final.startswith("Cancel"), cancelled.final
    assert 1 <= len(cancelled.responses) < 3000
    assert server.logged("cancelled after")

    server.stop()
    limited = server.__class__(server.data_dir, {**server.sets, "query_limit": 4})
    limited.start()
    try:
        result = findscu(limited.port, ["QueryRetrieveLevel=STUDY", "PatientID=BULK", "StudyInstanceUID"], out)
        assert len(result.responses) == 4
        assert "OutOfResources" in result.final
        everything = findscu(limited.port, ["QueryRetrieveLevel=STUDY", "PatientID=QR-P2",
                                            "StudyInstanceUID"], out)
        assert everything.final == "Success" and labels(corpus, everything) == ["B", "E"]
    finally:
        limited.stop()


def _pynetdicom_find(port: int, identifier, extended: bytes | None):
    """pynetdicom as the SCU, optionally asking for SOP Class Extended Negotiation."""
    from pynetdicom import AE
    from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

    ae = AE(ae_title="FINDSCU")
    ae.add_requested_context(FIND)
    negotiation = []
    if extended is not None:
        item = SOPClassExtendedNegotiation()
        item.sop_class_uid = FIND
        item.service_class_application_information = extended
        negotiation.append(item)
    assoc = ae.associate("127.0.0.1", port, ae_title="DSMPACS", ext_neg=negotiation)
    assert assoc.is_established
    try:
        accepted = assoc.acceptor.sop_class_extended.get(FIND)
        answers = [ds for status, ds in assoc.send_c_find(identifier, FIND) if ds is not None]
    finally:
        assoc.release()
    return accepted, answers


def test_combined_date_time_matching_when_negotiated(loaded):
    from pydicom.dataset import Dataset

    server, corpus = loaded()
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyDate = "20170105-20171231"
    identifier.StudyTime = "1000-1100"
    identifier.StudyInstanceUID = ""

    accepted, answers = _pynetdicom_find(server.port, identifier, None)
    assert accepted is None
    assert sorted(corpus.study_label(ds.StudyInstanceUID) for ds in answers) == ["A"]

    accepted, answers = _pynetdicom_find(server.port, identifier, b"\x01\x01")
    assert accepted == b"\x01\x01"          # relational queries and combined date-time matching
    # 10:00 on 5 January to 11:00 on 31 December: E (1 June, 05:00) is inside
    assert sorted(corpus.study_label(ds.StudyInstanceUID) for ds in answers) == ["A", "E"]
