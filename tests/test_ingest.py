"""The single ingest path, in process, against SQLite and the real MariaDB."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from dsmpacs.archive import database
from dsmpacs.archive.ingest import Origin
from dsmpacs.archive.models import Instance, Patient, Quarantine, SchemaVersion, Series, Study
from dsmpacs.archive.results import StoreOutcome
from tests import factories as f

ORIGIN = Origin("import", "TESTSCU")


def store(archive, ds, tmp_path: Path, name: str | None = None, source_ae: str = ""):
    path = f.write(ds, tmp_path / (name or f"{ds.SOPInstanceUID}.dcm"))
    return archive.ingest.store(archive.ingest.restage(path, source_ae), ORIGIN), path


def test_store_indexes_levels_and_counts(archive, tmp_path):
    patient = f.Patient("Li^Si=李^四", "LS1", charset="ISO_IR 192")
    study = "1.2.826.0.1.3680043.10.9.1"
    results = []
    for series_no, modality in ((1, "XA"), (2, "XA"), (3, "SR")):
        series = f"{study}.{series_no}"
        for n in range(3):
            ds = f.secondary_capture(patient=patient, study_uid=study, series_uid=series,
                                     modality=modality, instance_number=n + 1, series_number=series_no)
            results.append(store(archive, ds, tmp_path)[0])
    assert {r.outcome for r in results} == {StoreOutcome.STORED}
    with archive.index.read():
        st = Study.get(Study.study_instance_uid == study)
        assert (st.number_of_study_related_series, st.number_of_study_related_instances) == (3, 9)
        assert st.modalities_in_study == "SR\\XA"
        assert Series.get(Series.series_instance_uid == f"{study}.2").number_of_series_related_instances == 3
        p = Patient.get(Patient.patient_id == "LS1")
        assert (p.patient_name, p.patient_name_ideo, p.patient_name_alpha) == ("Li^Si=李^四", "李^四", "li^si")
        assert Instance.select().count() == 9


def _spooled(archive, ds, tmp_path: Path):
    """``ds`` staged as the DICOM receiver stages it: spooled, its bytes kept when small."""
    data = f.write(ds, tmp_path / "spooled.dcm").read_bytes()
    with archive.storage.spool(suffix=".dcm") as spool:
        spool.write(data)
        return spool.staged(sync=False)


def test_an_indexed_value_over_the_header_s_defer_size_is_read_and_indexed(archive, tmp_path):
    """The header parse leaves values over part10.HEADER_DEFER_SIZE unread. An indexed
    attribute's value that long (no conformant file has one, a modality's may) is read
    back when the index values are extracted: from a small spool's bytes, from a large
    file, behind a restaged File Meta, and by reindex. A SOP Instance UID that long is
    refused as invalid, with a reason; a number that long is left out, with a warning."""
    from dsmpacs.archive.maintenance import reindex
    from dsmpacs.archive.part10 import HEADER_DEFER_SIZE, READ_WHOLE

    long_text = ("Angio " * (HEADER_DEFER_SIZE // 5))[: HEADER_DEFER_SIZE + 10]
    expected = long_text[:128].strip()

    def described(study_uid: str, size: int = 64):
        ds = f.secondary_capture(size, study_uid=study_uid)
        ds.StudyDescription = long_text
        return ds

    def indexed(study_uid: str) -> str:
        with archive.index.read():
            return Study.get(Study.study_instance_uid == study_uid).study_description

    spooled = archive.ingest.store(_spooled(archive, described("1.2.826.0.1.3680043.10.9.6"), tmp_path),
                                   Origin("dicom", "MODALITY"))
    assert spooled.outcome is StoreOutcome.STORED, spooled.message
    assert indexed("1.2.826.0.1.3680043.10.9.6") == expected
    for study_uid, size in (("1.2.826.0.1.3680043.10.9.7", 64), ("1.2.826.0.1.3680043.10.9.8", 600)):
        result, path = store(archive, described(study_uid, size), tmp_path)
        assert result.outcome is StoreOutcome.STORED, result.message
        assert indexed(study_uid) == expected
    assert path.stat().st_size > READ_WHOLE

    with archive.index.write():
        Instance.delete().execute()
        Series.delete().execute()
        Study.delete().execute()
    assert reindex(archive).indexed == 3
    assert indexed("1.2.826.0.1.3680043.10.9.8") == expected

    hostile = f.secondary_capture()
    hostile.SOPInstanceUID = "1." * (HEADER_DEFER_SIZE // 2 + 4)
    refused = archive.ingest.store(_spooled(archive, hostile, tmp_path), Origin("dicom", "MODALITY"))
    assert refused.outcome is StoreOutcome.INVALID_DATASET
    assert f"(a value of {HEADER_DEFER_SIZE + 8} bytes)" in refused.message and "not a valid UID" in refused.message
    assert list(archive.storage.tmp_dir.iterdir()) == []

    # A number the pixel check reads, with 2,500 values: stored, the index without it.
    rows = f.secondary_capture(study_uid="1.2.826.0.1.3680043.10.9.9")
    rows.Rows = [64] * 2500
    warned = archive.ingest.store(_spooled(archive, rows, tmp_path), Origin("dicom", "MODALITY"))
    assert warned.outcome is StoreOutcome.STORED_WITH_WARNINGS
    assert "Rows: a value of 5000 bytes was not indexed" in warned.message


def test_identical_content_in_another_envelope_is_a_duplicate(archive, tmp_path):
    ds = f.secondary_capture()
    first, path = store(archive, ds, tmp_path, "a.dcm")
    # Same dataset bytes, but a different file meta (source AE): still the same instance.
    again = archive.ingest.store(archive.ingest.restage(path, "OTHERAE"), ORIGIN)
    assert first.outcome is StoreOutcome.STORED and again.outcome is StoreOutcome.DUPLICATE
    assert again.path == first.path
    assert len(list(archive.storage.iter_published())) == 1
    assert list(archive.storage.tmp_dir.iterdir()) == []


def test_a_small_staged_file_is_parsed_from_its_spool_s_bytes(archive, tmp_path, monkeypatch):
    """A spooled file up to part10.READ_WHOLE reaches the ingest with its bytes, and its
    header is parsed from them (one open, read and close less per small instance); a
    larger one is read from its file. Both are stored as the bytes that were sent."""
    from dsmpacs.archive import ingest as ingest_module

    read = []
    real = ingest_module.read_header
    monkeypatch.setattr(ingest_module, "read_header", lambda path: read.append(path) or real(path))
    small = f.write(f.secondary_capture(), tmp_path / "small.dcm").read_bytes()
    large = f.write(f.ct_slice(), tmp_path / "large.dcm").read_bytes()
    stored = []
    for data in (small, large):
        with archive.storage.spool() as spool:
            spool.write(data)
            staged = spool.staged(sync=False)
        result = archive.ingest.store(staged, ORIGIN)
        assert result.outcome is StoreOutcome.STORED
        assert archive.storage.path(result.path).read_bytes() == data
        stored.append(result.path)
    assert read == [archive.storage.root / stored[1]]       # the large one only
    assert list(archive.storage.tmp_dir.iterdir()) == []


def test_conflict_keeps_first_and_records_quarantine(archive, tmp_path):
    ds = f.secondary_capture()
    first, a = store(archive, ds, tmp_path, "a.dcm")
    second, b = store(archive, f.secondary_capture(sop_uid=ds.SOPInstanceUID), tmp_path, "b.dcm")
    assert second.outcome is StoreOutcome.CONFLICT_QUARANTINED
    row = archive.index.find_instance(ds.SOPInstanceUID)
    with archive.storage.open(row.path) as fh:
        fh.seek(row.dataset_offset)
        assert fh.read() == f.dataset_bytes(a)
    with archive.index.read():
        q = Quarantine.get(Quarantine.sop_instance_uid == ds.SOPInstanceUID)
    assert f.dataset_bytes(archive.storage.root / q.path) == f.dataset_bytes(b)


def test_undecodable_text_is_stored_with_a_warning(archive, tmp_path):
    ds = f.secondary_capture(patient=f.Patient("X", "BAD1", charset="ISO_IR 192"))
    path = f.write(ds, tmp_path / "bad.dcm")
    raw = path.read_bytes().replace(b"X ", b"\xff\xfe", 1)      # invalid UTF-8, same length
    path.write_bytes(raw)
    result = archive.ingest.import_file(path, ORIGIN)
    assert result.outcome is StoreOutcome.STORED_WITH_WARNINGS and "PatientName" in result.message
    row = archive.index.find_instance(ds.SOPInstanceUID)
    with archive.storage.open(row.path) as fh:
        fh.seek(row.dataset_offset)
        assert fh.read() == f.dataset_bytes(path)      # stored unchanged despite the warning


def test_concurrent_stores_of_one_study_keep_counts_right(archive, tmp_path):
    study = "1.2.826.0.1.3680043.10.9.2"
    paths = [f.write(f.secondary_capture(study_uid=study, series_uid=f"{study}.{i % 3}",
                                         modality="XA" if i % 3 else "CT"), tmp_path / f"{i}.dcm")
             for i in range(24)]
    errors: list[BaseException] = []

    def worker(chunk):
        try:
            for p in chunk:
                assert archive.ingest.import_file(p, ORIGIN).outcome is StoreOutcome.STORED
        except BaseException as exc:   # surfaced below
            errors.append(exc)
        finally:
            archive.db.close()

    threads = [threading.Thread(target=worker, args=(paths[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    with archive.index.read():
        st = Study.get(Study.study_instance_uid == study)
        assert (st.number_of_study_related_series, st.number_of_study_related_instances) == (3, 24)
        assert st.modalities_in_study == "CT\\XA"
        assert Patient.select().count() == 1


def test_an_index_newer_than_the_code_is_refused(archive):
    with archive.index.write():
        SchemaVersion.create(version=database.LATEST_VERSION + 1)
    with pytest.raises(database.IndexTooNew, match="newer than this program"):
        database.check(archive.db)
    with pytest.raises(database.IndexTooNew):
        database.upgrade(archive.db)


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"])
def test_image_attributes_are_indexed_and_checked_in_every_native_byte_order(archive, tmp_path, syntax):
    """Rows, Columns and Bits Allocated (US) are read from their raw bytes on the store
    path (part10.raw_us): in the dataset's byte order, and with implicit VR too."""
    import pydicom
    from pydicom.dataset import FileMetaDataset

    ds = f.secondary_capture(size=64)
    ds.Rows, ds.Columns = 300, 64          # 0x012C: the wrong byte order reads 11,265
    ds.PixelData = b"\0" * (300 * 64)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    path = tmp_path / "native.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=True, implicit_vr=syntax == "1.2.840.10008.1.2",
                     little_endian=syntax != "1.2.840.10008.1.2.2")
    result = archive.ingest.import_file(path, ORIGIN)
    assert result.outcome is StoreOutcome.STORED, result.message
    with archive.index.read():
        row = Instance.get(Instance.sop_instance_uid == ds.SOPInstanceUID)
        assert (row.rows, row.columns, row.bits_allocated) == (300, 64, 8)

    short = f.secondary_capture(size=64)
    short.Rows = 300                        # 300 x 64 bytes needed, 64 x 64 there
    short.file_meta = FileMetaDataset()
    short.file_meta.TransferSyntaxUID = syntax
    short.file_meta.MediaStorageSOPClassUID = short.SOPClassUID
    short.file_meta.MediaStorageSOPInstanceUID = short.SOPInstanceUID
    pydicom.dcmwrite(tmp_path / "short.dcm", short, enforce_file_format=True,
                     implicit_vr=syntax == "1.2.840.10008.1.2", little_endian=syntax != "1.2.840.10008.1.2.2")
    refused = archive.ingest.import_file(tmp_path / "short.dcm", ORIGIN)
    assert refused.outcome is StoreOutcome.INVALID_DATASET
    assert "Pixel Data has 4096 bytes, attributes need 19200" in refused.message


def test_an_identical_resend_repairs_a_damaged_copy(archive, tmp_path):
    """A stored copy marked corrupt, or missing, is replaced by a resend of the very
    file first acknowledged; it is served again, and the damaged file is gone. A
    same-size alteration nobody has found yet stays a plain duplicate (no re-read of
    every resend); a resend in another envelope is not taken as proof of the content."""
    from dsmpacs.archive.integrity import hash_check, record, refusal

    ds = f.secondary_capture(size=32)
    first, path = store(archive, ds, tmp_path)
    original = archive.storage.path(first.path).read_bytes()

    # Flipped in place, same size, not yet re-hashed: nothing tells, a duplicate.
    damaged = archive.storage.path(first.path)
    damaged.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    assert store(archive, ds, tmp_path, "again.dcm")[0].outcome is StoreOutcome.DUPLICATE

    # The verification job finds it: marked corrupt, refused to every retrieve.
    row = archive.index.find_instance(str(ds.SOPInstanceUID))
    record(archive.index, row, hash_check(archive.storage, row.path, row.size, row.sha256), "job")
    row = archive.index.find_instance(str(ds.SOPInstanceUID))
    assert row.corrupt and refusal(archive.index, archive.storage, row) is not None

    # Another envelope (another source AE) over the damaged copy: not a repair.
    other = archive.ingest.store(archive.ingest.restage(path, "OTHERAE"), ORIGIN)
    assert other.outcome is StoreOutcome.CONFLICT_QUARANTINED
    assert archive.index.find_instance(str(ds.SOPInstanceUID)).corrupt

    repaired, _ = store(archive, ds, tmp_path, "third.dcm")
    assert repaired.outcome is StoreOutcome.REPAIRED, repaired.message
    assert "damaged" in repaired.message and repaired.path != first.path
    row = archive.index.find_instance(str(ds.SOPInstanceUID))
    assert (row.path, row.corrupt, row.corrupt_reason) == (repaired.path, False, "")
    assert row.verified_at is not None
    assert archive.storage.path(row.path).read_bytes() == original
    assert refusal(archive.index, archive.storage, row) is None
    assert not damaged.exists(), "the damaged file stays beside the repaired one"

    # Gone altogether (a disk error, a wrong rm): the resend puts it back as well.
    archive.storage.path(row.path).unlink()
    back, _ = store(archive, ds, tmp_path, "fourth.dcm")
    assert back.outcome is StoreOutcome.REPAIRED and "missing" in back.message
    assert archive.storage.path(back.path).read_bytes() == original
    assert len(list(archive.storage.iter_published())) == 1
    assert list(archive.storage.tmp_dir.iterdir()) == []
