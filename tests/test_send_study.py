"""`dsmpacs send PEER --study UID`: push a stored study to a workstation (dcmtk storescp)."""
from __future__ import annotations

import numpy as np
from pydicom import dcmread

from tests import factories as f
from tests.retrieval import StoreSCP, decode_like_archive, register, run_cli

STUDY = "1.2.826.0.1.3680043.8.498.4001"


def load(server, tmp_path):
    p = f.Patient("HUANG^MIN", "PID-SEND")
    xa = f.write(f.xa_run(frames=3, size=64, patient=p, study_uid=STUDY), tmp_path / "src" / "xa.dcm")
    jpg = f.write(f.jpeg_baseline(size=64, patient=p, study_uid=STUDY, series_number=2), tmp_path / "src" / "j.dcm")
    other = f.write(f.secondary_capture(patient=p), tmp_path / "src" / "other.dcm")
    assert server.storescu(xa, other).returncode == 0
    assert server.storescu(jpg, extra=("-xy",)).returncode == 0
    return xa, jpg


def test_send_study_bit_exact_to_a_registered_workstation(server, tmp_path):
    xa, jpg = load(server, tmp_path)
    ws = StoreSCP(tmp_path / "ws", "WS3D", "+xa").start()
    try:
        register(server, "ws3d", "WS3D", ws.port)
        done = run_cli(server.data_dir, server.sets, "send", "ws3d", "--study", STUDY)
        assert done.returncode == 0, done.stdout + done.stderr
        received = {f.read_uid(p): p for p in ws.files()}
        assert sorted(received) == sorted([f.read_uid(xa), f.read_uid(jpg)])
        for original in (xa, jpg):
            assert f.dataset_bytes(received[f.read_uid(original)]) == f.dataset_bytes(original)
            assert f"sent {f.read_uid(original)} as stored" in done.stdout
        assert "sent 2 (0 converted), failed 0" in done.stdout
    finally:
        ws.stop()


def test_send_study_converts_only_what_the_receiver_refuses(server, tmp_path):
    xa, jpg = load(server, tmp_path)
    ws = StoreSCP(tmp_path / "plain", "PLAIN").start()         # uncompressed syntaxes only
    try:
        done = run_cli(server.data_dir, server.sets, "send", f"PLAIN@127.0.0.1:{ws.port}", "--study", STUDY)
        assert done.returncode == 0, done.stdout + done.stderr
        received = {f.read_uid(p): p for p in ws.files()}
        assert f.dataset_bytes(received[f.read_uid(xa)]) == f.dataset_bytes(xa)
        converted = dcmread(received[f.read_uid(jpg)])
        assert converted.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert np.array_equal(converted.pixel_array, decode_like_archive(jpg))
        assert f"sent {f.read_uid(jpg)} converted to Explicit VR Little Endian" in done.stdout
        assert "sent 2 (1 converted), failed 0" in done.stdout
    finally:
        ws.stop()


def test_send_usage_errors(server, tmp_path):
    done = run_cli(server.data_dir, server.sets, "send", "WS@127.0.0.1:104")
    assert done.returncode == 2 and "either files to send or --study" in done.stderr
    done = run_cli(server.data_dir, server.sets, "send", "WS@127.0.0.1:104", "--study", "1.2.3.4.5")
    assert done.returncode == 1 and "no stored instances for study 1.2.3.4.5" in done.stderr
    done = run_cli(server.data_dir, server.sets, "send", "WS@127.0.0.1:104", "--study", "../etc")
    assert done.returncode == 2 and "is not a valid UID" in done.stderr
