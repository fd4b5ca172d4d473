"""DICOMweb with the real Python dicomweb-client (what 3D Slicer uses) against a
real `dsmpacs serve --only web` process, HTTP Basic auth on a requests session."""
from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.encaps import generate_frames

from dsmpacs.archive.ingest import Origin
from dsmpacs.archive.models import Instance
from tests import factories as f
from tests.peers import ServerProcess
from tests.webclient import add_user, server_archive


@pytest.fixture(scope="module")
def env(tmp_path_factory, module_database_url):
    """One web server per index kind, with a few studies imported through the ingest path."""
    root = tmp_path_factory.mktemp("dicomweb-client")
    server = ServerProcess(root / "server", {"database_url": module_database_url}, only="web").start()
    try:
        password = add_user(server, "rad1", "radiologist")
        data = {"paged": [], "xa": None, "jpeg": None}
        with server_archive(server) as archive:
            for i in range(5):
                path = f.write(f.secondary_capture(size=16, patient=f.Patient(patient_id=f"PAGE{i}"),
                                                   accession=f"PG{i}"), root / f"page{i}.dcm")
                assert archive.ingest.import_file(path, Origin("import")).archived
                data["paged"].append(path)
            study = pydicom.uid.generate_uid()
            xa = f.write(f.xa_run(frames=4, size=64, study_uid=study,
                                  patient=f.Patient(name="Zhang^San=张^三", patient_id="XA1",
                                                    charset="ISO_IR 192")), root / "xa.dcm")
            jpeg = f.write(f.jpeg_baseline(size=64, study_uid=study, patient=f.Patient(patient_id="XA1")),
                           root / "jpeg.dcm")
            for path in (xa, jpeg):
                assert archive.ingest.import_file(path, Origin("import")).archived
            data.update(xa=xa, jpeg=jpeg, study=study)
        session = requests.Session()
        session.auth = ("rad1", password)
        client = DICOMwebClient(url=server.url("/dicom-web"), session=session)
        yield server, client, data
    finally:
        server.stop()


def stored_path(server, sop_instance_uid: str):
    with server_archive(server) as archive:
        row = archive.index.find_instance(sop_instance_uid)
        return archive.storage.path(row.path)


def uids(path) -> tuple[str, str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def test_search_pages_with_limit_and_offset(env):
    _server, client, data = env
    flt = {"PatientID": "PAGE*"}
    first = client.search_for_studies(search_filters=flt, limit=2, offset=0)
    last = client.search_for_studies(search_filters=flt, limit=2, offset=4)
    everything = client.search_for_studies(search_filters=flt, get_remaining=True, limit=2)
    assert len(first) == 2 and len(last) == 1
    ids = [s["00100020"]["Value"][0] for s in everything]
    assert sorted(ids) == [f"PAGE{i}" for i in range(5)]
    assert len({s["0020000D"]["Value"][0] for s in first + last}) == 3
    assert client.search_for_studies(search_filters={"PatientID": "NOBODY"}) == []


def test_search_levels_return_the_minimum_attributes(env):
    _server, client, data = env
    [study] = client.search_for_studies(search_filters={"PatientName": "zhang*"})
    assert study["00100010"]["Value"] == [{"Alphabetic": "Zhang^San", "Ideographic": "张^三"}]
    assert study["00080061"]["Value"] == ["OT", "XA"]
    assert study["00201206"]["Value"] == [2] and study["00201208"]["Value"] == [2]
    assert study["00081190"]["Value"][0].endswith(f"/dicom-web/studies/{data['study']}")
    # Chinese ideographic search finds the same study.
    assert [s["0020000D"] for s in client.search_for_studies(search_filters={"PatientName": "张*"})] \
        == [study["0020000D"]]
    series = client.search_for_series(data["study"], search_filters={"Modality": "XA"})
    assert [s["00080060"]["Value"] for s in series] == [["XA"]]
    _, series_uid, sop_uid = uids(data["xa"])
    [instance] = client.search_for_instances(data["study"], series_uid)
    assert instance["00080018"]["Value"] == [sop_uid]
    assert instance["00280008"]["Value"] == [4] and instance["00280010"]["Value"] == [64]
    assert instance["00083002"]["Value"] == ["1.2.840.10008.1.2.1"]


def test_retrieve_instance_and_study(env):
    server, client, data = env
    study, series, sop = uids(data["jpeg"])
    ds = client.retrieve_instance(study, series, sop)
    original = pydicom.dcmread(data["jpeg"])
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"     # the stored syntax, untouched
    assert ds.PixelData == original.PixelData and ds == original
    whole = client.retrieve_study(study)
    assert sorted(str(d.SOPInstanceUID) for d in whole) == sorted([uids(data["xa"])[2], sop])


def test_retrieve_frames_are_the_stored_frames(env):
    server, client, data = env
    study, series, sop = uids(data["xa"])
    frames = client.retrieve_instance_frames(study, series, sop, frame_numbers=[2, 4])
    pixels = np.frombuffer(pydicom.dcmread(data["xa"]).PixelData, dtype="<u2").reshape(4, 64, 64)
    assert frames == [pixels[1].tobytes(), pixels[3].tobytes()]

    study, series, sop = uids(data["jpeg"])
    [codestream] = client.retrieve_instance_frames(study, series, sop, frame_numbers=[1])
    original = pydicom.dcmread(data["jpeg"])
    assert codestream == next(generate_frames(original.PixelData, number_of_frames=1))
    assert codestream[:2] == b"\xff\xd8"


def test_metadata_and_bulk_data(env):
    server, client, data = env
    study, series, sop = uids(data["xa"])
    meta = client.retrieve_instance_metadata(study, series, sop)    # the client unwraps the array
    assert meta["00100010"]["Value"] == [{"Alphabetic": "Zhang^San", "Ideographic": "张^三"}]
    assert meta["00080005"]["Value"] == ["ISO_IR 192"]
    assert meta["00083002"]["Value"] == ["1.2.840.10008.1.2.1"]
    assert "Value" not in meta["7FE00010"] and "InlineBinary" not in meta["7FE00010"]
    [pixels] = client.retrieve_bulkdata(meta["7FE00010"]["BulkDataURI"])
    assert pixels == pydicom.dcmread(data["xa"]).PixelData
    series_meta = client.retrieve_series_metadata(study, series)
    assert [m["00080018"]["Value"] for m in series_meta] == [[sop]]


def test_store_instances_round_trips_the_bytes(env, tmp_path):
    server, client, data = env
    datasets = [f.secondary_capture(size=32, patient=f.Patient(patient_id="STOW1")) for _ in range(2)]
    study = str(datasets[0].StudyInstanceUID)
    for ds in datasets:
        ds.StudyInstanceUID = study
        f.write(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm")       # gives each its file meta
    response = client.store_instances(datasets)
    assert len(response.ReferencedSOPSequence) == 2 and "FailedSOPSequence" not in response
    for ds in datasets:
        # dicomweb-client sends pydicom.dcmwrite's encoding; the archive keeps those dataset bytes.
        sent = io.BytesIO()
        pydicom.dcmwrite(sent, ds)
        sent_path = tmp_path / "sent.dcm"
        sent_path.write_bytes(sent.getvalue())
        stored = stored_path(server, str(ds.SOPInstanceUID))
        assert f.dataset_bytes(stored) == f.dataset_bytes(sent_path)
        back = client.retrieve_instance(study, str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
        assert back == ds
    with server_archive(server) as archive:
        with archive.index.read():
            origins = {i.origin for i in Instance.select().where(
                Instance.sop_instance_uid.in_([str(d.SOPInstanceUID) for d in datasets]))}
    assert origins == {"stow"}
