"""C-MOVE and C-GET SCP against real dcmtk peers: movescu/getscu as requesters,
storescp as the workstation that receives the originals."""
from __future__ import annotations

import re

import numpy as np
import pytest
from pydicom import dcmread

from tests import factories as f
from tests.peers import dcmtk
from tests.retrieval import StoreSCP, decode_like_archive, register


@pytest.fixture
def study(tmp_path, server):
    """One angiography study in the server: a multi-frame XA run, two CT slices of one
    series (stored in reverse order), a Siemens CSA Non-Image object and a JPEG
    baseline image; plus another study that must not be sent."""
    study_uid = "1.2.826.0.1.3680043.8.498.1001"
    src = tmp_path / "src"
    p = f.Patient("LI^WEI", "PID-RET")
    xa = f.write(f.xa_run(frames=6, size=128, patient=p, study_uid=study_uid, series_number=1),
                 src / "xa.dcm")
    ct_series = "1.2.826.0.1.3680043.8.498.1002"
    ct2 = f.write(f.ct_slice(size=64, patient=p, study_uid=study_uid, series_uid=ct_series, series_number=2,
                             instance_number=2), src / "ct2.dcm")
    ct1 = f.write(f.ct_slice(size=64, patient=p, study_uid=study_uid, series_uid=ct_series, series_number=2,
                             instance_number=1), src / "ct1.dcm")
    csa = f.write(f.csa_non_image(payload_size=20_000, patient=p, study_uid=study_uid, series_number=3),
                  src / "csa.dcm")
    jpg = f.write(f.jpeg_baseline(size=64, patient=p, study_uid=study_uid, series_number=4), src / "jpg.dcm")
    other = f.write(f.secondary_capture(patient=p), src / "other.dcm")
    assert server.storescu(xa, ct2, ct1, other).returncode == 0
    assert server.storescu(jpg, extra=("-xy",)).returncode == 0
    assert server.dcmsend(csa).returncode == 0
    return {"uid": study_uid, "files": [xa, ct1, ct2, csa, jpg], "other": other, "ct_series": ct_series,
            "xa": xa, "jpg": jpg, "ct1": ct1, "ct2": ct2, "csa": csa}


def received_by_uid(scp: StoreSCP) -> dict[str, object]:
    return {f.read_uid(p): p for p in scp.files()}


def dimse_responses(output: str) -> list[dict[str, str]]:
    """The C-MOVE/C-GET responses dcmtk printed with -d: counts and status of each."""
    responses: list[dict[str, str]] = []
    for line in output.splitlines():
        m = re.match(r"D: (Remaining|Completed|Failed|Warning) Suboperations\s*: (\S+)", line)
        if m:
            if m[1] == "Remaining":
                responses.append({})
            responses[-1][m[1]] = m[2]
        m = re.match(r"D: DIMSE Status\s*: (.*)", line)
        if m and responses and "Status" not in responses[-1]:
            responses[-1]["Status"] = m[1]
    return responses


def movescu(server, *args: str):
    return dcmtk("movescu", "-d", "-aet", "MOVER", "-aec", server.ae_title, *args, "127.0.0.1", server.port)


@pytest.fixture
def workstation(tmp_path):
    scp = StoreSCP(tmp_path / "ws", "WORKSTATION", "+xa", "-pm", "-d").start()
    yield scp
    scp.stop()


def test_movescu_retrieves_study_bit_exact(server, study, workstation):
    register(server, "mover", "MOVER", 104, may_retrieve=True, is_move_destination=False)
    register(server, "ws", "WORKSTATION", workstation.port)
    done = movescu(server, "-S", "-aem", "WORKSTATION", "-k", "QueryRetrieveLevel=STUDY",
                   "-k", f"StudyInstanceUID={study['uid']}")
    assert done.returncode == 0, done.stdout + done.stderr
    received = received_by_uid(workstation)
    assert sorted(received) == sorted(f.read_uid(p) for p in study["files"])
    for original in study["files"]:
        assert f.dataset_bytes(received[f.read_uid(original)]) == f.dataset_bytes(original)
    # the JPEG went out as JPEG: the receiver accepted the stored syntax
    jpg = dcmread(received[f.read_uid(study["jpg"])], stop_before_pixels=True)
    assert jpg.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    log = workstation.log_path.read_text(errors="replace")
    assert log.count("Move Originator AE Title      : MOVER") == 5
    assert log.count("Move Originator ID            : 1") == 5
    # pending responses carried counts, and the final one reported all completed
    responses = dimse_responses(done.stdout + done.stderr)
    assert [r["Remaining"] for r in responses[:-1]] == ["4", "3", "2", "1"]
    assert responses[-1]["Completed"] == "5" and responses[-1]["Failed"] == "0"
    assert responses[-1]["Status"].startswith("0x0000")


def test_move_series_level_sends_in_instance_order(server, study, workstation):
    register(server, "mover", "MOVER", 104, may_retrieve=True, is_move_destination=False)
    register(server, "ws", "WORKSTATION", workstation.port)
    done = movescu(server, "-S", "-aem", "WORKSTATION", "-k", "QueryRetrieveLevel=SERIES",
                   "-k", f"StudyInstanceUID={study['uid']}", "-k", f"SeriesInstanceUID={study['ct_series']}")
    assert done.returncode == 0, done.stderr
    assert sorted(received_by_uid(workstation)) == sorted([f.read_uid(study["ct1"]), f.read_uid(study["ct2"])])
    log = workstation.log_path.read_text(errors="replace")
    # stored ct2 first, but instance 1 goes out first
    assert log.index(f.read_uid(study["ct1"])) < log.index(f.read_uid(study["ct2"]))


def test_unknown_move_destination_is_a801(server, study, workstation):
    register(server, "mover", "MOVER", 104, may_retrieve=True, is_move_destination=False)
    done = movescu(server, "-S", "-aem", "NOBODY", "-k", "QueryRetrieveLevel=STUDY",
                   "-k", f"StudyInstanceUID={study['uid']}")
    out = (done.stdout + done.stderr).lower()
    assert "a801" in out, out
    assert workstation.files() == []
    assert server.logged("not a registered move destination")


def test_registered_peer_that_is_not_a_destination_is_a801(server, study, workstation):
    register(server, "mover", "MOVER", 104, may_retrieve=True, is_move_destination=False)
    register(server, "ws", "WORKSTATION", workstation.port, is_move_destination=False)
    done = movescu(server, "-S", "-aem", "WORKSTATION", "-k", "QueryRetrieveLevel=STUDY",
                   "-k", f"StudyInstanceUID={study['uid']}")
    assert "a801" in (done.stdout + done.stderr).lower()
    assert workstation.files() == []


def test_unregistered_requester_is_refused_and_logged(server, study, workstation):
    register(server, "ws", "WORKSTATION", workstation.port)
    done = movescu(server, "-S", "-aem", "WORKSTATION", "-k", "QueryRetrieveLevel=STUDY",
                   "-k", f"StudyInstanceUID={study['uid']}")
    assert "0x0124" in (done.stdout + done.stderr).lower() or "not authorized" in \
        (done.stdout + done.stderr).lower()
    assert workstation.files() == []
    assert server.logged("C-MOVE refused for MOVER (127.0.0.1")


def test_bad_identifier_is_a900(server, study, workstation):
    register(server, "mover", "MOVER", 104, may_retrieve=True, is_move_destination=False)
    register(server, "ws", "WORKSTATION", workstation.port)
    done = movescu(server, "-S", "-aem", "WORKSTATION", "-k", "QueryRetrieveLevel=STUDY",
                   "-k", "StudyInstanceUID=1.2.3*")
    assert "a900" in (done.stdout + done.stderr).lower()
    done = movescu(server, "-S", "-aem", "WORKSTATION", "-k", "QueryRetrieveLevel=PATIENT",
                   "-k", "PatientID=PID-RET")
    assert "a900" in (done.stdout + done.stderr).lower()   # no PATIENT level in Study Root
    assert server.alive()


def test_patient_root_patient_level(server, study, workstation):
    register(server, "mover", "MOVER", 104, may_retrieve=True, is_move_destination=False)
    register(server, "ws", "WORKSTATION", workstation.port)
    done = movescu(server, "-P", "-aem", "WORKSTATION", "-k", "QueryRetrieveLevel=PATIENT",
                   "-k", "PatientID=PID-RET")
    assert done.returncode == 0, done.stderr
    expected = {f.read_uid(p) for p in study["files"]} | {f.read_uid(study["other"])}
    assert set(received_by_uid(workstation)) == expected


def test_move_cancel_stops_sub_operations(server, study, tmp_path):
    # The destination sleeps a second after each store, so the C-CANCEL that movescu sends
    # after the first pending response arrives while sub-operations remain, however
    # loaded the machine (with a prompt destination all five were sometimes sent first).
    slow = StoreSCP(tmp_path / "slow", "WORKSTATION", "+xa", "-pm", "--sleep-after", "1").start()
    try:
        register(server, "mover", "MOVER", 104, may_retrieve=True, is_move_destination=False)
        register(server, "ws", "WORKSTATION", slow.port)
        done = movescu(server, "-S", "--cancel", "1", "-aem", "WORKSTATION", "-k", "QueryRetrieveLevel=STUDY",
                       "-k", f"StudyInstanceUID={study['uid']}")
        out = (done.stdout + done.stderr).lower()
        assert "fe00" in out or "cancel" in out, out
        assert 1 <= len(slow.files()) < len(study["files"])
        assert server.logged("cancelled after")
    finally:
        slow.stop()


def test_jpeg_decompressed_for_a_receiver_that_refuses_it(server, study, tmp_path):
    """storescp without +xa accepts only uncompressed syntaxes (Explicit VR Little
    Endian preferred): the JPEG goes out decompressed, pixel values equal to the
    decoded original, every other element unchanged."""
    plain = StoreSCP(tmp_path / "plain", "PLAINWS", "+xe").start()
    try:
        register(server, "mover", "MOVER", 104, may_retrieve=True, is_move_destination=False)
        register(server, "plain", "PLAINWS", plain.port)
        jpg_uid = f.read_uid(study["jpg"])
        done = movescu(server, "-S", "-aem", "PLAINWS", "-k", "QueryRetrieveLevel=IMAGE",
                       "-k", f"StudyInstanceUID={study['uid']}", "-k", f"SOPInstanceUID={jpg_uid}")
        assert done.returncode == 0, done.stderr
        [received] = plain.files()
        ds = dcmread(received)
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        original = dcmread(study["jpg"])
        decoded = decode_like_archive(study["jpg"])
        assert np.array_equal(ds.pixel_array, decoded)
        assert ds.SOPInstanceUID == jpg_uid and ds.PatientName == original.PatientName
        assert ds.LossyImageCompression == "01"
        assert server.logged("converted to 1.2.840.10008.1.2.1")
    finally:
        plain.stop()


def test_getscu_retrieves_study(server, study, tmp_path):
    register(server, "getter", "GETTER", 104, may_retrieve=True, is_move_destination=False)
    out = tmp_path / "got"
    out.mkdir()
    done = dcmtk("getscu", "-d", "-S", "-aet", "GETTER", "-aec", server.ae_title, "-od", str(out), "+B",
                 "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study['uid']}",
                 "127.0.0.1", server.port)
    received = {f.read_uid(p): p for p in out.iterdir()}
    # getscu proposes storage contexts for the standard SOP classes only, and only
    # uncompressed syntaxes: the private CSA object cannot go back to it.
    final = dimse_responses(done.stdout + done.stderr)[-1]
    assert final["Status"].startswith("0xb000") and (final["Completed"], final["Failed"]) == ("4", "1")
    assert f.read_uid(study["csa"]) not in received
    assert server.logged("failed to send " + f.read_uid(study["csa"]))
    expected = [p for p in study["files"] if p != study["csa"]]
    for original in expected:
        uid = f.read_uid(original)
        assert uid in received, (uid, done.stdout)
        if original == study["jpg"]:
            # uncompressed only was offered: decompressed, pixels equal to the decoded original
            assert np.array_equal(dcmread(received[uid]).pixel_array,
                                  decode_like_archive(original))
        else:
            assert f.dataset_bytes(received[uid]) == f.dataset_bytes(original)


def test_getscu_unregistered_is_refused(server, study, tmp_path):
    out = tmp_path / "got"
    out.mkdir()
    done = dcmtk("getscu", "-d", "-S", "-aet", "STRANGER", "-aec", server.ae_title, "-od", str(out),
                 "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study['uid']}",
                 "127.0.0.1", server.port)
    assert list(out.iterdir()) == []
    assert dimse_responses(done.stdout + done.stderr)[-1]["Status"].startswith("0x0124")
    assert server.logged("C-GET refused for STRANGER")


def test_failed_sub_operation_is_listed_in_the_final_response(server, study, tmp_path):
    """storescp without -pm refuses the private CSA SOP class: that one instance fails,
    the rest arrive, and the final 0xB000 names the failed instance."""
    picky = StoreSCP(tmp_path / "picky", "PICKY", "+xa").start()
    try:
        register(server, "mover", "MOVER", 104, may_retrieve=True, is_move_destination=False)
        register(server, "picky", "PICKY", picky.port)
        done = movescu(server, "-S", "-aem", "PICKY", "-k", "QueryRetrieveLevel=STUDY",
                       "-k", f"StudyInstanceUID={study['uid']}")
        final = dimse_responses(done.stdout + done.stderr)[-1]
        assert final["Status"].startswith("0xb000"), done.stdout
        assert (final["Completed"], final["Failed"], final["Warning"]) == ("4", "1", "0")
        csa_uid = f.read_uid(study["csa"])
        assert re.search(r"\(0008,0058\) UI \[" + re.escape(csa_uid), done.stdout + done.stderr)
        assert csa_uid not in received_by_uid(picky) and len(picky.files()) == 4
    finally:
        picky.stop()


def test_implicit_only_receiver_gets_implicit_vr(server, study, tmp_path):
    """Implicit VR Little Endian when that is all the receiver takes: the JPEG is
    decoded, the explicit-VR originals are re-encoded, values unchanged."""
    implicit = StoreSCP(tmp_path / "implicit", "IMPLICIT", "+xi", "-pm").start()
    try:
        register(server, "mover", "MOVER", 104, may_retrieve=True, is_move_destination=False)
        register(server, "implicit", "IMPLICIT", implicit.port)
        done = movescu(server, "-S", "-aem", "IMPLICIT", "-k", "QueryRetrieveLevel=STUDY",
                       "-k", f"StudyInstanceUID={study['uid']}")
        assert done.returncode == 0, done.stderr
        received = received_by_uid(implicit)
        assert len(received) == len(study["files"])
        for original in study["files"]:
            ds = dcmread(received[f.read_uid(original)])
            assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
            expected = decode_like_archive(original) if "PixelData" in ds else None
            if expected is not None:
                assert np.array_equal(ds.pixel_array, expected)
            assert ds.PatientName == dcmread(original, stop_before_pixels=True).PatientName
    finally:
        implicit.stop()
