"""A Chinese patient name is found by its pinyin in the study list (王^小明 by
`wang xiaoming` or `wxm`), on SQLite and MariaDB, for new instances and, through migration
m0008, for patients indexed before it."""
from __future__ import annotations

import pytest
from playhouse.migrate import MySQLMigrator, SqliteMigrator, migrate

from dsmpacs.archive.attributes import Level
from dsmpacs.archive.browse import search_studies
from dsmpacs.archive.database import is_mysql
from dsmpacs.archive.ingest import Origin
from dsmpacs.archive.migrations import m0008_patient_name_pinyin as m0008
from dsmpacs.archive.models import Patient
from dsmpacs.archive.names import initials_search_form, pinyin_search_form, typed_name_value
from dsmpacs.archive.query import Query, Search
from tests import factories as f
from tests.webclient import client_as


@pytest.mark.parametrize("name, form, initials", [
    ("王^小明", "wang^xiaoming", "wxm"), ("王小明", "wang^xiaoming", "wxm"), ("王 小明", "wang^xiaoming", "wxm"),
    ("Wang^Xiaoming=王^小明", "wang^xiaoming", "wxm"), ("欧阳娜娜", "ouyang^nana", "oynn"),
    ("曾^国藩", "zeng^guofan", "zgf"),           # the family name's reading, not the common ceng
    ("DOE^JOHN", "", ""), ("", "", ""),
])
def test_the_pinyin_form_of_a_name(name, form, initials):
    assert (pinyin_search_form(name), initials_search_form(name)) == (form, initials)


def _store(archive, tmp_path, name: str, patient_id: str) -> str:
    ds = f.secondary_capture(patient=f.Patient(name=name, patient_id=patient_id, charset="ISO_IR 192"))
    assert archive.ingest.import_file(f.write(ds, tmp_path / f"{patient_id}.dcm"), Origin("import")).archived
    return ds.StudyInstanceUID


def _found(archive, typed: str) -> list[str]:
    page = search_studies(archive.index, {"PatientName": typed_name_value(typed)})
    return sorted(str(r["PatientID"]) for r in page.rows)


@pytest.fixture
def chinese_patients(archive, tmp_path):
    _store(archive, tmp_path, "王^小明", "P-WANG")
    _store(archive, tmp_path, "张晓龙", "P-ZHANG")
    _store(archive, tmp_path, "WANG^XIAOBO", "P-LATIN")
    return archive


SEARCHES = [
    ("wang xiaoming", ["P-WANG"]), ("Wang Xiaoming", ["P-WANG"]), ("ＷＡＮＧ xiaom", ["P-WANG"]),
    ("wang", ["P-LATIN", "P-WANG"]),             # the Latin-script WANG^XIAOBO as before
    ("zhang xiaolong", ["P-ZHANG"]), ("王小明", ["P-WANG"]), ("li", []), ("xiaoming", []),
    ("wxm", ["P-WANG"]), ("WX", ["P-WANG"]), ("zxl", ["P-ZHANG"]), ("xm", []),
]


def test_the_study_list_finds_a_chinese_name_by_its_pinyin(chinese_patients):
    # one archive for every search: each typed name, the patients it finds
    assert [(typed, _found(chinese_patients, typed)) for typed, _ids in SEARCHES] == SEARCHES


def test_dicom_queries_do_not_match_pinyin(chinese_patients):
    """C-FIND and QIDO-RS match names as PS3.4 says; pinyin is the web list's extension."""
    search = Search(chinese_patients.index)
    assert search.count(Query(Level.STUDY, {"PatientName": "wang^xiaoming*"})) == 0
    assert search.count(Query(Level.STUDY, {"PatientName": "wang^xiaoming*"}, pn_pinyin=True)) == 1


def test_the_web_search_box_takes_pinyin(client, chinese_patients):
    client_as(client, chinese_patients, "viewer")
    body = client.get("/studies?patient_name=wang+xiaoming", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert "P-WANG" in body and "P-ZHANG" not in body and "P-LATIN" not in body


def test_migration_m0008_adds_and_fills_the_column(chinese_patients):
    """An index of the version before: the column and its index taken away, then m0008."""
    db = chinese_patients.index.db
    migrator = MySQLMigrator(db) if is_mysql(db) else SqliteMigrator(db)
    with db.connection_context():
        migrate(*(migrator.drop_index("patient", name) for name in m0008.INDEXES),
                *(migrator.drop_column("patient", name) for name in ("patient_name_pinyin", "patient_name_initials")))
        assert not {"patient_name_pinyin", "patient_name_initials"} & {c.name for c in db.get_columns("patient")}
        with db.atomic():
            m0008.up(db)
        assert set(m0008.INDEXES) <= {i.name for i in db.get_indexes("patient")}
        forms = list(Patient.select(Patient.patient_id, Patient.patient_name_pinyin, Patient.patient_name_initials)
                     .order_by(Patient.patient_id).tuples())
        m0008.up(db)                             # again, as after an interrupted run: nothing changes
        assert list(Patient.select(Patient.patient_id, Patient.patient_name_pinyin, Patient.patient_name_initials)
                    .order_by(Patient.patient_id).tuples()) == forms
    assert forms == [("P-LATIN", "", ""), ("P-WANG", "wang^xiaoming", "wxm"), ("P-ZHANG", "zhang^xiaolong", "zxl")]
    assert _found(chinese_patients, "wang xiaoming") == _found(chinese_patients, "wxm") == ["P-WANG"]
