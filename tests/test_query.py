"""archive/query.py against the real index, on SQLite and MariaDB.

The corpus is imported through the one ingest path, so the rows queried here are
the rows C-STORE would have written.
"""
from __future__ import annotations

import pytest

from dsmpacs.archive.attributes import Level
from dsmpacs.archive.ingest import Origin
from dsmpacs.archive.query import Query, QueryError, Search, keys_at
from tests import factories as f
from tests import qr_corpus

STUDY, SERIES, IMAGE, PATIENT = Level.STUDY, Level.SERIES, Level.IMAGE, Level.PATIENT


@pytest.fixture
def corpus(archive, tmp_path):
    corpus = qr_corpus.build(tmp_path / "corpus")
    for path in corpus.files:
        result = archive.ingest.import_file(path, Origin("import"))
        assert result.archived, result
    return corpus


@pytest.fixture
def search(archive):
    return Search(archive.index)


def studies(search, corpus, **filters) -> set[str]:
    opts = {k: filters.pop(k) for k in ("pn_case_insensitive", "combined_datetime") if k in filters}
    rows = search.search(Query(STUDY, filters, ["StudyInstanceUID"], **opts))
    return {corpus.study_label(r["StudyInstanceUID"]) for r in rows}


def test_person_name_is_case_insensitive_and_matches_any_group(search, corpus):
    assert studies(search, corpus, PatientName="ZHANG*") == {"A", "B", "E"}
    assert studies(search, corpus, PatientName="zhang*") == {"A", "B", "E"}
    assert studies(search, corpus, PatientName="张*") == {"A"}
    assert studies(search, corpus, PatientName="王^小东") == {"F"}           # ISO 2022 IR 58
    assert studies(search, corpus, PatientName="赵*") == {"C"}               # UTF-8
    assert studies(search, corpus, PatientName="MÜLLER*") == {"D"}          # Latin-1, folded
    assert studies(search, corpus, PatientName="Zhang^San") == {"A"}        # single value
    assert studies(search, corpus, PatientName="Zhang") == set()            # not a prefix match


def test_person_name_groups_and_question_mark(search, corpus):
    assert studies(search, corpus, PatientName="*=张*") == {"A"}
    assert studies(search, corpus, PatientName="Zhang*=王*") == set()
    assert studies(search, corpus, PatientName="zhang^sa?") == {"A"}
    assert studies(search, corpus, PatientName="zhang^s?") == set()
    assert studies(search, corpus, PatientName="zh??g^*") == {"A", "B", "E"}
    assert studies(search, corpus, PatientName="*ang*") == {"A", "B", "E", "F"}


def test_case_sensitive_mode_matches_the_stored_value_literally(search, corpus):
    assert studies(search, corpus, PatientName="ZHANG*", pn_case_insensitive=False) == {"B", "E"}
    assert studies(search, corpus, PatientName="Zhang*", pn_case_insensitive=False) == {"A"}
    assert studies(search, corpus, PatientName="张*", pn_case_insensitive=False) == set()


def test_date_ranges(search, corpus):
    assert studies(search, corpus, StudyDate="20170101-") == {"A", "B", "E", "C", "F"}
    assert studies(search, corpus, StudyDate="-20171231") == {"A", "B", "E", "D"}
    assert studies(search, corpus, StudyDate="20170101-20171231") == {"A", "B", "E"}
    assert studies(search, corpus, StudyDate="20171231") == {"B"}
    assert studies(search, corpus, StudyDate="20160101\\20180301") == {"C", "D"}
    assert studies(search, corpus, PatientBirthDate="19600101-19751231") == {"B", "E", "C"}
    with pytest.raises(QueryError):
        studies(search, corpus, StudyDate="2017x")


def test_time_ranges_and_combined_date_time(search, corpus):
    assert studies(search, corpus, StudyTime="1000-1100") == {"A"}
    assert studies(search, corpus, StudyTime="10") == {"A"}                  # the whole hour
    assert studies(search, corpus, StudyTime="-0600") == {"E"}
    window = dict(StudyDate="20170105-20171231", StudyTime="1000-1100")
    # independent matching: 10:00-11:00 on any of those days
    assert studies(search, corpus, **window) == {"A"}
    # combined: from 10:00 on Jan 5 to 11:00 on Dec 31 (E at 05:00 on Jun 1 is inside)
    assert studies(search, corpus, combined_datetime=True, **window) == {"A", "E"}
    later = dict(StudyDate="20170105-20171231", StudyTime="1100-2359")
    assert studies(search, corpus, combined_datetime=True, **later) == {"E", "B"}


def test_uid_lists_and_single_values(search, corpus):
    a, c = corpus.studies["A"].uid, corpus.studies["C"].uid
    assert studies(search, corpus, StudyInstanceUID=f"{a}\\{c}") == {"A", "C"}
    assert studies(search, corpus, StudyInstanceUID=a) == {"A"}
    assert studies(search, corpus, AccessionNumber="ACC-?") == set(qr_corpus.LAYOUT)
    assert studies(search, corpus, AccessionNumber="ACC-D") == {"D"}
    assert studies(search, corpus, AccessionNumber="acc-d") == set()         # not a PN: exact case
    with pytest.raises(QueryError):
        studies(search, corpus, StudyInstanceUID="1.2.*")


def test_modalities_in_study_and_counts(search, corpus):
    assert studies(search, corpus, ModalitiesInStudy="CT") == {"B"}
    assert studies(search, corpus, ModalitiesInStudy="CT\\MR") == {"B", "C"}
    rows = list(search.search(Query(STUDY, {"StudyInstanceUID": corpus.studies["A"].uid}, [
        "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
        "SOPClassesInStudy", "NumberOfPatientRelatedStudies", "PatientName"])))
    assert len(rows) == 1
    row = rows[0]
    a = corpus.studies["A"]
    assert row["ModalitiesInStudy"] == a.modalities == "OT\\XA"
    assert row["NumberOfStudyRelatedSeries"] == len(a.series)
    assert row["NumberOfStudyRelatedInstances"] == len(a.instances)
    assert row["SOPClassesInStudy"] == "\\".join(sorted({i.sop_class for i in a.instances}))
    assert row["NumberOfPatientRelatedStudies"] == 1
    assert row["PatientName"] == "Zhang^San=张^三"
    assert row["SpecificCharacterSet"] == "GB18030"


def test_patient_level_counts(search, corpus):
    rows = list(search.search(Query(PATIENT, {"PatientID": "QR-P2"}, [
        "PatientName", "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
        "NumberOfPatientRelatedInstances"])))
    assert rows == [{"SpecificCharacterSet": "", "PatientName": "ZHANG^WEI",
                     "NumberOfPatientRelatedStudies": 2,
                     "NumberOfPatientRelatedSeries": len(corpus.studies["B"].series) + 1,
                     "NumberOfPatientRelatedInstances": 3}]


def test_series_and_image_levels_are_relational(search, corpus):
    rows = list(search.search(Query(SERIES, {"PatientName": "zhang*", "Modality": "XA"},
                                    ["SeriesInstanceUID", "NumberOfSeriesRelatedInstances"])))
    expected = {se.uid: len(se.instances) for label, se in corpus.series()
                if label in ("A", "E") and se.modality == "XA"}
    assert {r["SeriesInstanceUID"]: r["NumberOfSeriesRelatedInstances"] for r in rows} == expected

    ct = corpus.studies["B"].series[0]
    rows = list(search.search(Query(IMAGE, {"SeriesInstanceUID": ct.uid, "ImageType": "AXIAL"},
                                    ["SOPInstanceUID", "InstanceNumber", "SOPClassUID", "Rows"])))
    assert sorted((r["InstanceNumber"], r["SOPInstanceUID"], r["SOPClassUID"], r["Rows"]) for r in rows) \
        == [(i.number, i.uid, f.CT, 16) for i in ct.instances]
    assert list(search.search(Query(IMAGE, {"ImageType": "AXIA"}, ["SOPInstanceUID"]))) == []
    xa_numbers = search.search(Query(IMAGE, {"InstanceNumber": "2\\3", "Modality": "XA"}, ["InstanceNumber"]))
    assert sorted(r["InstanceNumber"] for r in xa_numbers) == [2, 3]


def test_limit_offset_and_count(search, corpus):
    everything = [r["StudyInstanceUID"] for r in search.search(Query(STUDY, {}, ["StudyInstanceUID"]))]
    assert sorted(everything) == sorted(s.uid for s in corpus.studies.values())
    page = [r["StudyInstanceUID"] for r in search.search(
        Query(STUDY, {}, ["StudyInstanceUID"], limit=2, offset=1))]
    assert page == everything[1:3]
    # batches smaller than the result still give the same stable order
    assert [r["StudyInstanceUID"] for r in search.search(
        Query(STUDY, {}, ["StudyInstanceUID"]), batch=2)] == everything
    assert search.count(Query(STUDY, {"PatientName": "ZHANG*"})) == 3
    assert search.count(Query(IMAGE, {})) == len(corpus.files)


def test_all_attributes_of_a_level(search, corpus):
    rows = list(search.search(Query(SERIES, {"Modality": "CT"}, None)))
    assert len(rows) == 1
    assert set(rows[0]) == set(keys_at(SERIES)) | {"SpecificCharacterSet"}
    assert rows[0]["Modality"] == "CT" and rows[0]["PatientID"] == "QR-P2"
    assert rows[0]["StudyDate"] == "20171231" and rows[0]["StudyTime"] == "235959"


def test_keys_of_lower_levels_are_refused(search, corpus):
    with pytest.raises(QueryError):
        list(search.search(Query(STUDY, {"Modality": "CT"}, [])))
    with pytest.raises(QueryError):
        list(search.search(Query(STUDY, {}, ["SOPInstanceUID"])))
    with pytest.raises(QueryError):
        list(search.search(Query(STUDY, {"NumberOfStudyRelatedSeries": "2"}, [])))


def test_prefix_wildcard_uses_the_name_index(archive, search):
    """PatientName=ZHANG* at STUDY level starts from the normalised name indexes and
    reaches the studies through the patient foreign key, on both databases."""
    from dsmpacs.archive.index import patient_key
    from dsmpacs.archive.models import Patient, Study

    surnames = ["wang", "li", "zhang", "liu", "chen", "yang", "huang", "zhao", "wu", "zhou"]
    with archive.index.write():
        patients = [{"patient_key": patient_key({"patient_id": f"X{n}"}), "patient_id": f"X{n}",
                     "patient_name": f"{surnames[n % 10].upper()}^{n}",
                     "patient_name_alpha": f"{surnames[n % 10]}^{n}"} for n in range(3000)]
        for start in range(0, len(patients), 500):
            Patient.insert_many(patients[start:start + 500]).execute()
        ids = [p.id for p in Patient.select(Patient.id)]
        studies = [{"patient": pid, "study_instance_uid": f"2.25.{pid}"} for pid in ids]
        for start in range(0, len(studies), 500):
            Study.insert_many(studies[start:start + 500]).execute()
    query = Query(STUDY, {"PatientName": "ZHANG*"}, ["PatientName", "StudyInstanceUID"])
    assert search.count(query) == 300
    plan = "\n".join(search.explain(query))
    if archive.index._mysql:
        patient_step = next(line for line in plan.splitlines() if "patient_name_alpha" in line)
        assert "type=range" in patient_step or "type=index_merge" in patient_step, plan
        assert "key=study_patient_id" in plan, plan
    else:
        assert "USING INDEX patient_patient_name_alpha (patient_name_alpha>? AND patient_name_alpha<?)" in plan
        assert "INDEX study_patient_id (patient_id=?)" in plan, plan
        assert "SCAN" not in plan, plan


def test_full_width_and_ideographic_patterns_are_normalised(search, corpus):
    assert studies(search, corpus, PatientName="Ｚｈａｎｇ*") == {"A", "B", "E"}     # NFKC
    assert studies(search, corpus, PatientName="zhang^san^^") == {"A"}             # trailing ^ ignored


def test_patient_condition_with_patient_values_and_counts(search, corpus):
    rows = search.search(Query(STUDY, {"PatientName": "zhang*"}, [
        "StudyInstanceUID", "PatientID", "PatientName", "NumberOfPatientRelatedStudies"]))
    got = sorted((corpus.study_label(r["StudyInstanceUID"]), r["PatientID"], r["PatientName"],
                  r["NumberOfPatientRelatedStudies"]) for r in rows)
    assert got == [("A", "QR-P1", "Zhang^San=张^三", 1), ("B", "QR-P2", "ZHANG^WEI", 2),
                   ("E", "QR-P2", "ZHANG^WEI", 2)]
