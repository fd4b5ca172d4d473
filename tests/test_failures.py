"""Failure behaviour of the store path, against the archive as a real process.

Each case checks three things: the sender gets a clear status, the daemon
keeps running, and nothing partial or orphaned is left in storage or index.
"""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import time
import warnings
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.filewriter import write_dataset
from pynetdicom import AE
from pynetdicom.sop_class import SecondaryCaptureImageStorage

from dsmpacs.archive.part10 import file_meta_bytes
from tests import factories as f
from tests.peers import MARIADB, require, store_unchanged
from tests.tcpproxy import TcpProxy

# --- helpers -------------------------------------------------------------------

def published_files(storage: Path) -> list[Path]:
    return sorted(storage.glob("[0-9][0-9][0-9][0-9]/*/*/*.dcm"))


def staged_files(storage: Path) -> list[Path]:
    tmp = storage / ".tmp"
    return sorted(tmp.iterdir()) if tmp.is_dir() else []


def crafted_file(path: Path, *, meta_uid: str, dataset: bytes,
                 sop_class: str = SecondaryCaptureImageStorage) -> Path:
    """A Part 10 file whose meta says one thing and whose dataset bytes are anything."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        head = file_meta_bytes(sop_class, meta_uid, "1.2.840.10008.1.2.1")
    path.write_bytes(head + dataset)
    return path


def encode(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pydicom.filebase import DicomFileLike
        fp = DicomFileLike(buf)
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_dataset(fp, ds)
    return buf.getvalue()


def send_raw(port: int, path: Path) -> tuple[int, str]:
    """C-STORE a file's dataset bytes as they are (pynetdicom, chunked send)."""
    return store_unchanged(port, path, SecondaryCaptureImageStorage, "1.2.840.10008.1.2.1")


def store_after(port: int, path: Path, before_store) -> int:
    """Open an association, run ``before_store``, then C-STORE ``path``: the status."""
    from pydicom import dcmread
    from pynetdicom import AE

    ds = dcmread(path)
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="DSMPACS")
    assert assoc.is_established
    try:
        before_store()
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


def refused_out_of_resources(done: subprocess.CompletedProcess) -> bool:
    """storescu -v prints 'Received Store Response (Refused: OutOfResources)' for 0xA7xx."""
    return "refused: outofresources" in (done.stdout + done.stderr).lower()


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    require(os.geteuid() == 0, "mounting a small tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    require(done.returncode == 0, f"cannot mount tmpfs: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def index_has(server, sop_instance_uid: str) -> bool:
    from tests.test_store_dicom import open_index

    arc = open_index(server)
    try:
        return arc.index.find_instance(sop_instance_uid) is not None
    finally:
        arc.close()


# --- storage --------------------------------------------------------------------

def test_no_space_left_gives_a700_and_leaves_nothing(server_factory, tmp_path):
    with tmpfs(tmp_path / "small", "8m") as root:
        srv = server_factory(storage_root=root / "pacs")
        small = f.write(f.secondary_capture(), tmp_path / "small.dcm")
        assert srv.storescu(small).returncode == 0
        before = published_files(srv.storage)
        big = f.write(f.xa_run(frames=40), tmp_path / "big.dcm")      # 21 MB > 8 MB
        done = srv.storescu(big)
        assert refused_out_of_resources(done), done.stderr
        assert published_files(srv.storage) == before
        assert staged_files(srv.storage) == []
        assert not index_has(srv, f.read_uid(big))
        assert srv.logged("no space left")
        assert srv.alive() and srv.storescu(f.write(f.secondary_capture(), tmp_path / "s2.dcm")).returncode == 0


def test_stow_on_a_full_disk_names_a700_in_the_body(server_factory, tmp_path):
    """STOW-RS says why in its body (FailureReason 0xA700), not with a bare 503."""
    import requests

    from tests.webclient import add_user

    with tmpfs(tmp_path / "small", "8m") as root:
        srv = server_factory(storage_root=root / "pacs", only="web")
        password = add_user(srv, "rad1", "radiologist")
        big = f.write(f.xa_run(frames=40), tmp_path / "big.dcm")      # 21 MB > 8 MB
        body = (b"--bnd\r\nContent-Type: application/dicom\r\n\r\n" + big.read_bytes()
                + b"\r\n--bnd--\r\n")
        response = requests.post(srv.url("/dicom-web/studies"), data=body, auth=("rad1", password),
                                 headers={"Content-Type": 'multipart/related; type="application/dicom"; '
                                                          "boundary=bnd"}, timeout=60)
        assert response.status_code == 503, response.text
        failed = response.json()["00081198"]["Value"]
        assert [item["00081197"]["Value"] for item in failed] == [[0xA700]]
        assert failed[0]["00081155"]["Value"] == [f.read_uid(big)]
        assert published_files(root / "pacs") == [] and staged_files(root / "pacs") == []
        assert srv.logged("no space left")


def test_free_space_reserve_refuses_with_a700(server_factory, tmp_path):
    srv = server_factory(min_free_mb=10**9)       # a reserve no disk can satisfy
    path = f.write(f.secondary_capture(), tmp_path / "sc.dcm")
    done = srv.storescu(path)
    assert refused_out_of_resources(done), done.stderr
    assert published_files(srv.storage) == [] and staged_files(srv.storage) == []
    assert srv.logged("below the reserve")


def test_read_only_storage_gives_a700(server_factory, tmp_path):
    with tmpfs(tmp_path / "ro", "64m") as root:
        srv = server_factory(storage_root=root)
        subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
        path = f.write(f.secondary_capture(), tmp_path / "sc.dcm")
        done = srv.storescu(path)
        assert refused_out_of_resources(done), done.stderr
        assert published_files(root) == [] and staged_files(root) == []
        assert srv.alive()


def test_missing_storage_root_gives_a700_and_is_not_recreated(server_factory, tmp_path):
    root = tmp_path / "share"
    srv = server_factory(storage_root=root)
    # the volume holding the share goes away while the archive runs
    import shutil
    shutil.rmtree(root)
    path = f.write(f.secondary_capture(), tmp_path / "sc.dcm")
    done = srv.storescu(path)
    assert refused_out_of_resources(done), done.stderr
    assert not root.exists(), "a missing storage root must never be recreated by a store"
    assert srv.alive()


# --- index -----------------------------------------------------------------------

def test_index_unreachable_gives_failure_and_no_orphan(server_factory, tmp_path, mariadb_url):
    db = mariadb_url.rsplit("/", 1)[1]
    proxy = TcpProxy((MARIADB["host"], MARIADB["port"])).start()
    try:
        url = f"mysql://{MARIADB['user']}@127.0.0.1:{proxy.port}/{db}?connect_timeout=2"
        srv = server_factory(database_url=url)
        first = f.write(f.secondary_capture(), tmp_path / "a.dcm")
        assert srv.storescu(first).returncode == 0
        before = published_files(srv.storage)

        # MariaDB goes away while a modality's association is open. (A new association
        # is rejected as transient then: the registry cannot be read to check its transport.)
        second = f.write(f.secondary_capture(), tmp_path / "b.dcm")
        status = store_after(srv.port, second, before_store=proxy.stop)
        assert status & 0xFF00 == 0xA700, hex(status)
        later = srv.storescu(second)
        assert "rejected transient" in (later.stdout + later.stderr).lower(), later.stderr
        assert published_files(srv.storage) == before, "no orphan file may stay behind"
        assert staged_files(srv.storage) == []
        assert srv.logged("index database")
        assert srv.alive()

        proxy = TcpProxy((MARIADB["host"], MARIADB["port"]), port=proxy.port).start()
        assert srv.storescu(second).returncode == 0    # recovers once the database is back
        assert len(published_files(srv.storage)) == len(before) + 1
    finally:
        proxy.stop()


# --- hostile datasets ----------------------------------------------------------------

@pytest.mark.parametrize("label", ["garbage", "truncated"])
def test_malformed_dataset_gives_c000(server, tmp_path, label):
    uid = "1.2.826.0.1.3680043.10.1.1"
    if label == "garbage":
        payload = bytes(range(256)) * 64
    else:
        payload = encode(f.secondary_capture(sop_uid=uid))[:-3000] + b"\xe0\x7f\x10\x00OW\x00\x00\xff\xff"
    path = crafted_file(tmp_path / f"{label}.dcm", meta_uid=uid, dataset=payload)
    status, comment = send_raw(server.port, path)
    assert status in (0xC000, 0xA900), hex(status)
    assert published_files(server.storage) == [] and staged_files(server.storage) == []
    assert server.alive() and server.echoscu().returncode == 0


def test_dataset_uid_differs_from_command_gives_a900(server, tmp_path):
    ds = f.secondary_capture(sop_uid="1.2.826.0.1.3680043.10.1.2")
    path = crafted_file(tmp_path / "mismatch.dcm", meta_uid="1.2.826.0.1.3680043.10.1.3",
                        dataset=encode(ds))
    status, comment = send_raw(server.port, path)
    assert status == 0xA900 and "differs" in comment
    assert published_files(server.storage) == []
    assert server.logged("uid-mismatch")


@pytest.mark.parametrize("bad_uid", ["1.2.3/../../etc/passwd", "..", "1.2.3\x00/x", "1.2.3/4"])
def test_path_like_uid_gives_c000(server, tmp_path, bad_uid):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = f.secondary_capture(sop_uid=bad_uid)
    path = crafted_file(tmp_path / "bad.dcm", meta_uid=bad_uid, dataset=encode(ds))
    status, comment = send_raw(server.port, path)
    assert status == 0xC000 and "not a valid UID" in comment
    assert published_files(server.storage) == [] and staged_files(server.storage) == []
    assert not any(p.name in ("passwd", "etc") for p in server.data_dir.rglob("*"))
    assert server.logged("invalid-dataset")


# --- crash ------------------------------------------------------------------------------

def test_kill_9_during_large_transfer_leaves_nothing_and_restart_cleans(server_factory, tmp_path,
                                                                         database_url):
    data_dir = tmp_path / "crash"
    srv = server_factory(data_dir=data_dir, database_url=database_url)
    big = f.write(f.xa_run(frames=600, size=512), tmp_path / "big.dcm")      # ~315 MB
    env = dict(os.environ, TCP_NODELAY="1")
    sender = subprocess.Popen(["storescu", "-aec", "DSMPACS", "127.0.0.1", str(srv.port), str(big)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            parts = staged_files(srv.storage)
            if parts and parts[0].stat().st_size > 20 * 2**20:
                break
            time.sleep(0.005)
        else:
            pytest.fail("never saw the transfer in progress")
        srv.kill()                                     # kill -9 mid-transfer
    finally:
        sender.kill()
        sender.wait()
    assert published_files(srv.storage) == []
    assert staged_files(srv.storage), "the partial file stays hidden in .tmp until restart"

    again = server_factory(data_dir=data_dir, database_url=database_url)
    assert staged_files(again.storage) == []
    assert again.logged("left by an interrupted transfer")
    assert not index_has(again, f.read_uid(big))
    small = f.write(f.secondary_capture(), tmp_path / "after.dcm")
    assert again.storescu(small).returncode == 0


def test_oversized_pdu_is_refused_without_buffering_it(server, tmp_path):
    """A peer announcing a 3 GB P-DATA PDU gets aborted at once; memory stays flat."""
    import struct

    from pynetdicom.sop_class import Verification

    ae = AE(ae_title="EVIL")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", server.port, ae_title="DSMPACS")
    assert assoc.is_established
    raw = assoc.dul.socket.socket
    # Write a P-DATA-TF header claiming 3 GB straight onto the association's socket.
    raw.sendall(struct.pack(">BBL", 0x04, 0, 3 * 2**30) + b"\x00" * 65536)
    deadline = time.monotonic() + 20
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not assoc.is_established, "the server should have dropped the association"
    assert server.alive() and server.echoscu().returncode == 0
    assert server.logged("refusing PDU type 0x04")
    rss_kb = int(next(line for line in open(f"/proc/{server.proc.pid}/status")
                      if line.startswith("VmHWM:")).split()[1])
    assert rss_kb < 300_000, f"peak RSS {rss_kb} kB after a 3 GB PDU announcement"
