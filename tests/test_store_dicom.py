"""C-ECHO and C-STORE against the archive as a real process, with dcmtk as the sender."""
from __future__ import annotations

import socket

from dsmpacs.archive import Archive
from dsmpacs.archive.models import Instance, Patient, Study
from dsmpacs.settings import Settings
from tests import factories as f


def open_index(server) -> Archive:
    """The server's archive, opened beside it the way the web process will."""
    s = Settings.load(data_dir=server.data_dir, env={},
                      overrides={k: v for k, v in server.sets.items()})
    arc = Archive(s)
    arc.open()
    return arc


def stored_dataset_bytes(arc: Archive, sop_instance_uid: str) -> bytes:
    row = arc.index.find_instance(sop_instance_uid)
    assert row is not None, f"{sop_instance_uid} not indexed"
    with arc.storage.open(row.path) as fh:
        fh.seek(row.dataset_offset)
        return fh.read()


def test_echo(server):
    done = server.echoscu()
    assert done.returncode == 0, done.stderr


def test_xa_private_and_jpeg_kept_bit_exact(server, tmp_path):
    xa = f.write(f.xa_run(frames=40), tmp_path / "xa.dcm")
    csa = f.write(f.csa_non_image(), tmp_path / "csa.dcm")
    jpg = f.write(f.jpeg_baseline(), tmp_path / "jpeg.dcm")
    assert server.storescu(xa).returncode == 0
    assert server.storescu(jpg, extra=("-xy",)).returncode == 0   # propose JPEG baseline
    assert server.dcmsend(csa).returncode == 0

    arc = open_index(server)
    try:
        for path in (xa, csa, jpg):
            header_uid = f.read_uid(path)
            assert stored_dataset_bytes(arc, header_uid) == f.dataset_bytes(path)
        row = arc.index.find_instance(f.read_uid(jpg))
        assert row.transfer_syntax_uid == "1.2.840.10008.1.2.4.50"
        xa_row = arc.index.find_instance(f.read_uid(xa))
        assert xa_row.number_of_frames == 40 and xa_row.calling_ae == "STORESCU"
        csa_row = arc.index.find_instance(f.read_uid(csa))
        assert csa_row.sop_class_uid == f.CSA_NON_IMAGE
        # the whole file is a valid Part 10 file with a zero preamble
        with arc.storage.open(xa_row.path) as fh:
            assert fh.read(132) == b"\x00" * 128 + b"DICM"
        assert arc.storage.hash_file(xa_row.path) == (xa_row.size, xa_row.sha256)
    finally:
        arc.close()


def test_identical_resend_is_success_and_stores_nothing(server, tmp_path):
    path = f.write(f.secondary_capture(), tmp_path / "sc.dcm")
    assert server.storescu(path).returncode == 0
    files_before = sorted(p for p in server.storage.rglob("*.dcm"))
    again = server.storescu(path)
    assert again.returncode == 0, again.stderr
    assert sorted(p for p in server.storage.rglob("*.dcm")) == files_before


def test_different_payload_same_uid_keeps_first_and_quarantines(server, tmp_path):
    first = f.secondary_capture()
    uid = first.SOPInstanceUID
    a = f.write(first, tmp_path / "a.dcm")
    second = f.secondary_capture(sop_uid=uid)   # same UID, other pixels
    b = f.write(second, tmp_path / "b.dcm")
    assert server.storescu(a).returncode == 0
    done = server.storescu(b)
    # A failure, not a warning: this payload is not archived as the instance, and a
    # modality reading "stored" would delete its only copy.
    assert "Received Store Response (Error: CannotUnderstand)" in done.stderr, done.stderr
    arc = open_index(server)
    try:
        assert stored_dataset_bytes(arc, uid) == f.dataset_bytes(a)
        quarantined = list((server.storage / ".quarantine").glob("*.dcm"))
        assert len(quarantined) == 1
        assert f.dataset_bytes(quarantined[0]) == f.dataset_bytes(b)
    finally:
        arc.close()
    assert server.logged("quarantine")


def test_overwrite_policy_replaces(server_factory, tmp_path, database_url):
    srv = server_factory(database_url=database_url, duplicate_policy="overwrite")
    first = f.secondary_capture()
    a = f.write(first, tmp_path / "a.dcm")
    b = f.write(f.secondary_capture(sop_uid=first.SOPInstanceUID), tmp_path / "b.dcm")
    assert srv.storescu(a).returncode == 0
    assert srv.storescu(b).returncode == 0
    arc = open_index(srv)
    try:
        assert stored_dataset_bytes(arc, first.SOPInstanceUID) == f.dataset_bytes(b)
        with arc.index.read():
            assert Instance.select().count() == 1
    finally:
        arc.close()
    assert len(list(srv.storage.rglob("[0-9]*/*/*/*.dcm"))) == 1


def test_gb18030_name_indexed_as_unicode(server, tmp_path):
    ds = f.ct_slice(patient=f.Patient("Zhang^San=张^三=zhang^san", "GB1", charset="GB18030"))
    assert server.storescu(f.write(ds, tmp_path / "gb.dcm")).returncode == 0
    arc = open_index(server)
    try:
        with arc.index.read():
            p = Patient.get(Patient.patient_id == "GB1")
            assert p.patient_name == "Zhang^San=张^三=zhang^san"
            assert p.patient_name_ideo == "张^三"
            study = Study.get(Study.study_instance_uid == ds.StudyInstanceUID)
            assert study.modalities_in_study == "CT"
            assert study.number_of_study_related_instances == 1
    finally:
        arc.close()


def test_garbage_on_the_port_does_not_crash(server, tmp_path):
    for payload in (b"GET / HTTP/1.1\r\n\r\n", b"\x01\x00\xff\xff\xff\xff" + b"A" * 64,
                    b"\x04\x00\x00\x00\x00\x10" + b"\x00" * 16, bytes(range(256)) * 8):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(payload)
            sock.settimeout(5)
            try:
                sock.recv(1024)
            except (socket.timeout, ConnectionError):
                pass
    assert server.alive()
    assert server.echoscu().returncode == 0
    path = f.write(f.secondary_capture(), tmp_path / "after.dcm")
    assert server.storescu(path).returncode == 0
