"""archive/retrieve.py: identifiers, selection on the real index (SQLite and MariaDB),
and the transfer-syntax plan."""
from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
)

from dsmpacs.archive.attributes import Level
from dsmpacs.archive.ingest import Origin
from dsmpacs.archive.retrieve import (
    MAX_CONTEXTS,
    RetrieveError,
    RetrieveKeys,
    StoredInstance,
    choose_transfer_syntax,
    plan_batches,
    proposals,
    retrieve_keys,
    select_instances,
)
from tests import factories as f

STUDY_A = "1.2.826.0.1.3680043.8.498.2001"
STUDY_B = "1.2.826.0.1.3680043.8.498.2002"
SERIES_A1 = "1.2.826.0.1.3680043.8.498.2011"
SERIES_A2 = "1.2.826.0.1.3680043.8.498.2012"


def identifier(**values) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


@pytest.fixture
def loaded(archive, tmp_path):
    """Two patients; patient 1 has study A (two series, stored out of order) and B."""
    p1, p2 = f.Patient("WANG^FANG", "P1"), f.Patient("ZHAO^LEI", "P2")
    made = {
        "a2_i2": f.ct_slice(size=16, patient=p1, study_uid=STUDY_A, series_uid=SERIES_A2, series_number=2,
                            instance_number=2),
        "a2_i1": f.ct_slice(size=16, patient=p1, study_uid=STUDY_A, series_uid=SERIES_A2, series_number=2,
                            instance_number=1),
        "a1_i1": f.secondary_capture(size=16, patient=p1, study_uid=STUDY_A, series_uid=SERIES_A1,
                                     series_number=1, instance_number=1),
        "b": f.secondary_capture(size=16, patient=p1, study_uid=STUDY_B),
        "other": f.secondary_capture(size=16, patient=p2),
    }
    uids = {}
    for name, ds in made.items():
        path = f.write(ds, tmp_path / f"{name}.dcm")
        assert archive.ingest.import_file(path, Origin("import")).archived
        uids[name] = ds.SOPInstanceUID
    return uids


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_identifier_rules():
    keys = retrieve_keys(identifier(QueryRetrieveLevel="SERIES", StudyInstanceUID=STUDY_A,
                                    SeriesInstanceUID=[SERIES_A1, SERIES_A2]), patient_root=False)
    assert keys.level is Level.SERIES and keys.series_instance_uids == (SERIES_A1, SERIES_A2)
    assert retrieve_keys(identifier(QueryRetrieveLevel="PATIENT", PatientID="P1"),
                         patient_root=True).patient_id == "P1"
    bad = [
        (identifier(StudyInstanceUID=STUDY_A), False, "QueryRetrieveLevel"),
        (identifier(QueryRetrieveLevel="PATIENT", PatientID="P1"), False, "no PATIENT level"),
        (identifier(QueryRetrieveLevel="PATIENT", PatientID="P*"), True, "wildcards"),
        (identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID="1.2.*"), False, "wildcards"),
        (identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID="../../etc"), False, "not a valid UID"),
        (identifier(QueryRetrieveLevel="SERIES", StudyInstanceUID=STUDY_A), False, "SeriesInstanceUID is required"),
        (identifier(QueryRetrieveLevel="IMAGE", SOPInstanceUID=""), False, "SOPInstanceUID is required"),
    ]
    for ds, patient_root, message in bad:
        with pytest.raises(RetrieveError, match=message):
            retrieve_keys(ds, patient_root=patient_root)


def test_selection_at_each_level(archive, loaded):
    def select(**values):
        keys = retrieve_keys(identifier(**values), patient_root=True)
        return [i.sop_instance_uid for i in select_instances(archive.index, keys)]

    study_a = [loaded["a1_i1"], loaded["a2_i1"], loaded["a2_i2"]]       # series 1, then series 2 by instance
    assert select(QueryRetrieveLevel="STUDY", StudyInstanceUID=STUDY_A) == study_a
    assert set(select(QueryRetrieveLevel="PATIENT", PatientID="P1")) == set(study_a) | {loaded["b"]}
    assert sorted(select(QueryRetrieveLevel="STUDY", StudyInstanceUID=[STUDY_A, STUDY_B])) == \
        sorted(study_a + [loaded["b"]])
    assert select(QueryRetrieveLevel="SERIES", StudyInstanceUID=STUDY_A, SeriesInstanceUID=SERIES_A2) == \
        [loaded["a2_i1"], loaded["a2_i2"]]
    assert select(QueryRetrieveLevel="IMAGE", SOPInstanceUID=[loaded["other"], loaded["a2_i2"]]) == \
        [loaded["a2_i2"], loaded["other"]]        # index order (study A first), not request order
    # a higher-level key that does not match selects nothing
    assert select(QueryRetrieveLevel="STUDY", PatientID="P2", StudyInstanceUID=STUDY_A) == []
    assert select(QueryRetrieveLevel="SERIES", StudyInstanceUID=STUDY_B, SeriesInstanceUID=SERIES_A1) == []
    assert select(QueryRetrieveLevel="STUDY", StudyInstanceUID="1.2.3.4") == []


def test_selected_rows_carry_what_sending_needs(archive, loaded):
    [row] = select_instances(archive.index, RetrieveKeys(Level.IMAGE, sop_instance_uids=(loaded["b"],)))
    assert row.sop_class_uid == f.SC and row.transfer_syntax_uid == ExplicitVRLittleEndian
    assert row.study_instance_uid == STUDY_B and archive.storage.path(row.path).is_file()
    assert row.size == archive.storage.path(row.path).stat().st_size


def test_long_uid_lists_are_chunked(archive, loaded):
    many = tuple(f"1.2.826.0.1.3680043.8.498.9{n}" for n in range(1200)) + (loaded["b"],)
    rows = select_instances(archive.index, RetrieveKeys(Level.IMAGE, sop_instance_uids=many))
    assert [r.sop_instance_uid for r in rows] == [loaded["b"]]


def instance(n: int, sop_class: str, ts: str) -> StoredInstance:
    return StoredInstance(sop_class, f"1.2.3.{n}", ts, f"x/{n}.dcm", 1)


def test_contexts_offer_the_stored_syntax_alone_then_uncompressed():
    jpeg = instance(1, f.SC, JPEGLosslessSV1)
    assert proposals(jpeg) == [(f.SC, (JPEGLosslessSV1,)),
                               (f.SC, (ExplicitVRLittleEndian, ImplicitVRLittleEndian))]
    assert proposals(instance(2, f.CT, ExplicitVRLittleEndian)) == [
        (f.CT, (ExplicitVRLittleEndian,)), (f.CT, (ImplicitVRLittleEndian,))]
    assert proposals(instance(3, f.CT, ExplicitVRBigEndian)) == [(f.CT, (ExplicitVRBigEndian,))]


def test_choice_prefers_the_original_bytes():
    jpeg = instance(1, f.SC, JPEGBaseline8Bit)
    assert choose_transfer_syntax(jpeg, {(f.SC, JPEGBaseline8Bit), (f.SC, ExplicitVRLittleEndian)}) == \
        JPEGBaseline8Bit
    assert choose_transfer_syntax(jpeg, {(f.SC, ImplicitVRLittleEndian)}) == ImplicitVRLittleEndian
    assert choose_transfer_syntax(jpeg, {(f.CT, ExplicitVRLittleEndian)}) is None
    assert choose_transfer_syntax(instance(2, f.CT, ExplicitVRBigEndian), {(f.CT, ExplicitVRLittleEndian)}) \
        is None


def test_batches_fit_one_association_each_and_keep_order():
    classes = [f"1.2.840.10008.5.1.4.1.1.{n}" for n in range(1, 101)]
    instances = [instance(n, classes[n % 100], ExplicitVRLittleEndian if n % 2 else JPEGLosslessSV1)
                 for n in range(300)]
    batches = plan_batches(instances)
    assert len(batches) > 1
    assert [i for b in batches for i in b.instances] == instances
    for batch in batches:
        assert len(batch.contexts) <= MAX_CONTEXTS
        assert len(set(batch.contexts)) == len(batch.contexts)
        offered = {(a, t) for a, ts in batch.contexts for t in ts}
        for i in batch.instances:
            assert (i.sop_class_uid, i.transfer_syntax_uid) in offered
