"""DICOM TLS (PS3.15 BCP 195 non-downgrading profile) against real dcmtk peers and
OpenSSL: the TLS listener beside the plain one, per-peer client certificates, and
TLS on the archive's own associations (send, C-MOVE sub-operations, echo)."""
from __future__ import annotations

import ast
import socket
import subprocess
import time
from pathlib import Path

import pytest

from dsmpacs.archive.audit import AuditTrail
from dsmpacs.archive.peers import Peer, PeerError, PeerRegistry
from tests import factories as f
from tests.peers import ROOT, ServerProcess, dcmtk, free_port, tool
from tests.retrieval import StoreSCP, open_archive_at, open_index, register, run_cli

STUDY = "1.2.826.0.1.3680043.8.498.7001"
MOVED_STUDY = "1.2.826.0.1.3680043.8.498.7002"
FOUND_STUDY = "1.2.826.0.1.3680043.8.498.7003"
ACSE_TIMEOUT = 10


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The server's data directory with `dsmpacs tls init` done, and certificates
    issued by its CA for a dcmtk client and a dcmtk workstation."""
    root = tmp_path_factory.mktemp("tls")
    data = root / "server"
    sets = {"database_url": f"sqlite:///{data / 'index.sqlite3'}"}
    for args in (("tls", "init", "--host", "127.0.0.1"),
                 ("tls", "issue", "modality", "--host", "127.0.0.1", "--out", str(root / "modality")),
                 ("tls", "issue", "ws", "--host", "127.0.0.1", "--out", str(root / "ws"))):
        done = run_cli(data, sets, *args)
        assert done.returncode == 0, done.stdout + done.stderr
    return root


@pytest.fixture(scope="module")
def server(pki):
    data = pki / "server"
    proc = ServerProcess(data, {"database_url": f"sqlite:///{data / 'index.sqlite3'}",
                                "dicom_tls_port": free_port(), "acse_timeout": ACSE_TIMEOUT,
                                "connection_timeout": 5}, only="dicom").start()
    proc.tls_port = int(proc.sets["dicom_tls_port"])
    register(proc, "tlsws", "TLSWS", 104, tls=True)                      # may query, over TLS
    register(proc, "strict", "STRICT", 104, tls=True, tls_client_cert=True)
    yield proc
    proc.stop()


def client_tls(pki, identity: str | None = "modality") -> tuple[str, ...]:
    """dcmtk's TLS options: our certificate (or anonymous TLS) and the archive's CA."""
    ca = str(pki / "modality" / "ca.pem")
    if identity is None:
        return ("+tla", "+cf", ca)
    return ("+tls", str(pki / identity / f"{identity}.key"), str(pki / identity / f"{identity}.pem"),
            "+cf", ca)


def over_tls(server, pki, tool_name: str, *args: str, identity: str | None = "modality",
             aet: str = "TLSWS", files: tuple[Path, ...] = ()):
    return dcmtk(tool_name, *client_tls(pki, identity), "-aet", aet, "-aec", server.ae_title, *args,
                 "127.0.0.1", server.tls_port, *files, timeout=60)


def stored(server, path: Path) -> bool:
    arc = open_index(server)
    try:
        return arc.index.find_instance(f.read_uid(path)) is not None
    finally:
        arc.close()


def new_file(tmp_path: Path, name: str, pid: str = "PID-TLS", study_uid: str | None = None) -> Path:
    return f.write(f.secondary_capture(patient=f.Patient("TLS^TEST", pid), study_uid=study_uid),
                   tmp_path / f"{name}.dcm")


def test_dcmtk_echo_store_and_find_over_tls(server, pki, tmp_path):
    assert over_tls(server, pki, "echoscu").returncode == 0
    sent = new_file(tmp_path, "a", pid="PID-TLS-FIND", study_uid=FOUND_STUDY)
    done = over_tls(server, pki, "storescu", "-v", files=(sent,))
    assert done.returncode == 0 and "Success" in done.stderr, done.stderr
    assert stored(server, sent)
    found = over_tls(server, pki, "findscu", "-v", "-S", "-k", "QueryRetrieveLevel=STUDY",
                     "-k", "PatientID=PID-TLS-FIND", "-k", "StudyInstanceUID")
    assert found.returncode == 0, found.stderr
    # the match carries the study's UID, which the request left empty
    assert FOUND_STUDY in found.stdout + found.stderr, found.stdout + found.stderr


def test_plaintext_and_tls_1_1_are_refused_on_the_tls_port(server, pki, tmp_path):
    sent = new_file(tmp_path, "plain")
    plain = dcmtk("storescu", "-aec", server.ae_title, "127.0.0.1", server.tls_port, sent, timeout=60)
    assert plain.returncode != 0
    old = subprocess.run([tool("openssl"), "s_client", "-tls1_1", "-connect", f"127.0.0.1:{server.tls_port}"],
                         input="", capture_output=True, text=True, timeout=30)
    assert old.returncode != 0 and "BEGIN CERTIFICATE" not in old.stdout
    assert server.logged("UNSUPPORTED_PROTOCOL", timeout=30)
    assert server.logged("plaintext DICOM (an A-ASSOCIATE-RQ) on the TLS port")
    assert not stored(server, sent)


def test_a_peer_marked_tls_is_refused_on_the_plain_port(server, pki, tmp_path):
    sent = new_file(tmp_path, "downgrade")
    done = dcmtk("storescu", "-aet", "TLSWS", "-aec", server.ae_title, "127.0.0.1", server.port, sent)
    assert done.returncode != 0 and "Association Rejected" in done.stderr, done.stderr
    assert not stored(server, sent)
    # Unregistered AEs keep the plain port (the access policy is unchanged).
    assert server.storescu(sent).returncode == 0 and stored(server, sent)


def test_client_certificate_required_per_peer(server, pki, tmp_path):
    sent = new_file(tmp_path, "strict")
    anonymous = over_tls(server, pki, "storescu", "-v", files=(sent,), identity=None, aet="STRICT")
    assert anonymous.returncode != 0 and "Association Rejected" in anonymous.stderr, anonymous.stderr
    assert not stored(server, sent)
    arc = open_index(server)
    try:
        refusals = [e for e in AuditTrail.of(arc).recent(limit=50)
                    if e.action == "assoc-rejected" and e.calling_ae == "STRICT"]
    finally:
        arc.close()
    assert refusals and "client certificate" in refusals[0].detail
    # Anonymous TLS is fine for an AE that need not show a certificate...
    assert over_tls(server, pki, "echoscu", identity=None).returncode == 0
    # ...and the strict one gets in with its certificate.
    done = over_tls(server, pki, "storescu", "-v", files=(sent,), aet="STRICT")
    assert done.returncode == 0, done.stderr
    assert stored(server, sent)


def test_a_silent_client_does_not_hold_up_other_clients(server, pki):
    """Connections that send nothing, or plain DICOM that waits for an answer, sit in
    their own threads: another client's echo takes what it takes alone."""
    silent = socket.create_connection(("127.0.0.1", server.tls_port))
    half = socket.create_connection(("127.0.0.1", server.tls_port))
    half.sendall(b"\x16\x03\x01\x02\x00")          # a TLS record header, then nothing
    try:
        start = time.monotonic()
        done = over_tls(server, pki, "echoscu")
        took = time.monotonic() - start
        assert done.returncode == 0, done.stderr
        assert took < ACSE_TIMEOUT / 4, f"echo took {took:.2f} s beside silent clients"
    finally:
        silent.close()
        half.close()


def test_tls_connections_are_handed_to_the_receiving_process_too(server, pki, tmp_path):
    """The daemon accepts, the receiving process (dicom/receivers.py) does the handshake
    on a connection handed to it, and stores."""
    import ssl

    from tests.processes import held_association, receiver_pid, served_where

    receiver = receiver_pid(server)
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "modality" / "ca.pem"))
    context.load_cert_chain(str(pki / "modality" / "modality.pem"), str(pki / "modality" / "modality.key"))
    held = [held_association(server.tls_port, tls_args=(context, "127.0.0.1"), ae_title="TLSWS")
            for _ in range(2)]
    try:
        # Two at once: one of them lands in the receiving process (the most room).
        where = [served_where(server, receiver, port, server.tls_port) for _, port in held]
        assert "receiver" in where, where
        for n, (assoc, _) in enumerate(held):
            sent = new_file(tmp_path, f"handed{n}")
            assert assoc.send_c_store(sent).Status == 0x0000
            assert stored(server, sent)
    finally:
        for assoc, _ in held:
            assoc.release()


@pytest.fixture
def tls_workstation(pki, tmp_path):
    """dcmtk storescp +tls with the certificate our CA issued for it; it requires our
    client certificate (storescp's default -rc), which proves we send one."""
    ws = pki / "ws"
    identity = ("+tls", str(ws / "ws.key"), str(ws / "ws.pem"), "+cf", str(ws / "ca.pem"))
    scp = StoreSCP(tmp_path / "ws", "WSTLS", *identity, probe=identity).start()
    yield scp
    scp.stop()


def test_send_and_move_to_a_tls_workstation(server, pki, tmp_path, tls_workstation):
    first, second = new_file(tmp_path, "s1", study_uid=STUDY), new_file(tmp_path, "s2", study_uid=MOVED_STUDY)
    assert server.storescu(first, second).returncode == 0
    register(server, "wstls", "WSTLS", tls_workstation.port, tls=True)
    done = run_cli(server.data_dir, server.sets, "send", "wstls", "--study", STUDY)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [f.read_uid(p) for p in tls_workstation.files()] == [f.read_uid(first)]
    # C-MOVE (movescu has no TLS; the requester may be plain): the sub-association to
    # the destination marked TLS is TLS.
    register(server, "mover", "MOVER", 104)
    moved = dcmtk("movescu", "-aet", "MOVER", "-aec", server.ae_title, "-S", "-aem", "WSTLS",
                  "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={MOVED_STUDY}",
                  "127.0.0.1", server.port, timeout=60)
    assert moved.returncode == 0, moved.stderr
    assert sorted(f.read_uid(p) for p in tls_workstation.files()) == sorted(
        [f.read_uid(first), f.read_uid(second)])
    assert f.dataset_bytes(next(p for p in tls_workstation.files()
                                if f.read_uid(p) == f.read_uid(second))) == f.dataset_bytes(second)


def test_a_plaintext_peer_marked_tls_fails_clearly(server, tmp_path):
    plain = StoreSCP(tmp_path / "plainws", "PLAINWS").start()
    try:
        register(server, "plainws", "PLAINWS", plain.port, tls=True)
        echo = run_cli(server.data_dir, server.sets, "ae", "echo", "plainws")
        expected = f"TLS handshake with 127.0.0.1:{plain.port} failed"
        assert echo.returncode != 0 and expected in echo.stderr, echo.stdout + echo.stderr
        # Spelling the registered entry out as AE@HOST:PORT does not get around its flag.
        spelled = run_cli(server.data_dir, server.sets, "echo", f"PLAINWS@127.0.0.1:{plain.port}")
        assert spelled.returncode != 0 and expected in spelled.stderr, spelled.stdout + spelled.stderr
        sent = new_file(tmp_path, "never")
        done = run_cli(server.data_dir, server.sets, "send", "plainws", str(sent))
        assert done.returncode != 0 and expected in done.stderr, done.stdout + done.stderr
        assert plain.files() == []
    finally:
        plain.stop()


def test_tls_only_and_a_missing_certificate(tmp_path, pki):
    sets = {"database_url": f"sqlite:///{tmp_path / 'bare' / 'index.sqlite3'}", "dicom_tls_port": free_port(),
            "dicom_host": "127.0.0.1"}
    done = run_cli(tmp_path / "bare", sets, "serve", "--only", "dicom", timeout=60)
    assert done.returncode != 0 and "run `dsmpacs tls init" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    # TLS only: the run file names the TLS port, and nothing listens in plaintext.
    data = tmp_path / "tlsonly"
    run_cli(data, {}, "tls", "init", "--host", "127.0.0.1")
    tls_port = free_port()
    only = ServerProcess(data, {"database_url": f"sqlite:///{data / 'index.sqlite3'}", "dicom_plain": "false",
                                "dicom_tls_port": tls_port}, only="dicom").start()
    try:
        assert only.port == tls_port
        ca = str(data / "tls" / "ca.pem")
        assert dcmtk("echoscu", "+tla", "+cf", ca, "-aec", only.ae_title, "127.0.0.1", tls_port).returncode == 0
        assert "DICOM listening" not in only.log()
        # `dsmpacs echo` without a target reaches this archive on its TLS port.
        own = run_cli(data, only.sets, "echo")
        assert own.returncode == 0, own.stdout + own.stderr
    finally:
        only.stop()


def test_a_client_certificate_needs_tls():
    with pytest.raises(PeerError, match="marked TLS"):
        Peer("x", "X", "127.0.0.1", 104, tls_client_cert=True).validate()


def test_associations_are_opened_in_one_place():
    """Every association this archive requests goes through dicom/connect.py, which
    applies the peer's TLS flag; nothing else may call ``.associate(``."""
    callers = []
    for path in (ROOT / "package" / "dsmpacs").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "associate"):
                callers.append(str(path.relative_to(ROOT)))
    assert callers == ["package/dsmpacs/dicom/connect.py"], callers


def test_upgrade_from_version_4_adds_the_client_certificate_flag(archive):
    """Migration 5 on an index whose remote_ae table predates tls_client_cert: existing
    entries keep their TLS flag and require no certificate."""
    from dsmpacs.archive import database
    from dsmpacs.archive.models import SchemaVersion
    from dsmpacs.archive.peers import PeerRegistry

    registry = PeerRegistry(archive.index)
    registry.add(Peer("old", "OLD", "10.0.0.9", 104, tls=True))
    with archive.index.write():
        archive.db.execute_sql("ALTER TABLE remote_ae DROP COLUMN tls_client_cert")
        SchemaVersion.delete().execute()
        SchemaVersion.create(version=4)
    assert database.upgrade(archive.db) == (4, database.LATEST_VERSION)
    old = registry.get("old")
    assert old is not None and old.tls and not old.tls_client_cert
    registry.update("old", tls_client_cert=True)
    assert registry.get("old").tls_client_cert


def test_web_admin_marks_a_peer_tls_and_echo_says_why_it_fails(client, archive, settings, tmp_path):
    """The Remote AEs page stores both TLS flags, and its echo of a plaintext peer marked
    TLS shows the failed handshake."""
    from dsmpacs.tls import TlsFiles, authority
    from tests.test_web_admin import HTML, post, text
    from tests.webclient import client_as

    authority.init(TlsFiles.of(settings), ["127.0.0.1"], bits=2048)
    client_as(client, archive, "admin", "root")
    plain = StoreSCP(tmp_path / "plainweb", "PLAINWEB").start()
    try:
        response = post(client, "/admin/peers", {"name": "pw", "ae_title": "PLAINWEB", "host": "127.0.0.1",
                                                 "port": str(plain.port), "tls": "on", "tls_client_cert": "on"},
                        page="/admin/peers")
        assert response.status_code == 302
        peer = PeerRegistry(archive.index).get("pw")
        assert peer.tls and peer.tls_client_cert
        post(client, "/admin/peers/echo/pw", {}, page="/admin/peers")
        body = text(client.get("/admin/peers", headers=HTML))
        assert f"TLS handshake with 127.0.0.1:{plain.port} failed" in body, body
        refused = post(client, "/admin/peers", {"name": "nt", "ae_title": "NT", "host": "127.0.0.1",
                                                "port": "104", "tls_client_cert": "on"}, page="/admin/peers")
        assert refused.status_code == 400 and "marked TLS" in text(refused)
    finally:
        plain.stop()


def test_query_and_c_get_retrieve_from_a_tls_peer(server, pki, tmp_path):
    """Another archive (its own data directory) queries and C-GETs from this one over
    TLS: the requester's side of find_scu and retrieve_scu, and C-GET on the TLS port."""
    study = "1.2.826.0.1.3680043.8.498.7004"
    sent = new_file(tmp_path, "get", pid="PID-TLS-GET", study_uid=study)
    assert server.storescu(sent).returncode == 0
    register(server, "puller", "PULLER", 104, tls=True, tls_client_cert=True)
    puller = tmp_path / "puller"
    sets = {"ae_title": "PULLER", "database_url": f"sqlite:///{puller / 'index.sqlite3'}", "dicom_port": 0}
    for args in (("tls", "trust", str(pki / "server" / "tls" / "ca.pem")),
                 ("tls", "import", "--cert", str(pki / "modality" / "modality.pem"),
                  "--key", str(pki / "modality" / "modality.key")),
                 ("ae", "add", "main", server.ae_title, "127.0.0.1", str(server.tls_port), "--tls")):
        done = run_cli(puller, sets, *args)
        assert done.returncode == 0, done.stdout + done.stderr
    found = run_cli(puller, sets, "query", "main", "-k", "PatientID=PID-TLS-GET")
    assert found.returncode == 0 and study in found.stdout, found.stdout + found.stderr
    got = run_cli(puller, sets, "retrieve", "main", "--study", study, "--method", "get")
    assert got.returncode == 0, got.stdout + got.stderr
    arc = open_archive_at(puller, sets)
    try:
        assert arc.index.find_instance(f.read_uid(sent)) is not None
    finally:
        arc.close()


def test_storage_commitment_report_goes_over_tls(server, pki, tmp_path):
    """A modality marked TLS releases right after its N-ACTION: the report comes on a new
    association, which is TLS, with the archive's client certificate."""
    import ssl

    from pynetdicom import AE, evt
    from pynetdicom.sop_class import StorageCommitmentPushModel

    from tests.test_commitment import Modality

    sent = new_file(tmp_path, "commit")
    assert server.storescu(sent).returncode == 0
    identity = pki / "modality"
    listener = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    listener.load_cert_chain(identity / "modality.pem", identity / "modality.key")
    listener.verify_mode = ssl.CERT_REQUIRED                    # the archive must show its certificate
    listener.load_verify_locations(identity / "ca.pem")
    modality = Modality("ANGIOTLS")
    scp = AE(ae_title="ANGIOTLS")
    scp.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    modality.server = scp.start_server(("127.0.0.1", modality.port), block=False, ssl_context=listener,
                                       evt_handlers=[(evt.EVT_N_EVENT_REPORT, modality._on_report,
                                                      ["new association"])])
    try:
        register(server, "angiotls", "ANGIOTLS", modality.port, tls=True)
        # The request itself arrives over TLS too (a peer marked TLS is refused in plaintext).
        requester = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        requester.load_verify_locations(identity / "ca.pem")
        status, transaction = modality.request(server, [(f.SC, f.read_uid(sent))], release_at_once=True,
                                               port=server.tls_port, tls_args=(requester, "127.0.0.1"))
        assert status == 0x0000
        event_type, info, how = modality.wait()
        assert how == "new association" and event_type == 1 and info.TransactionUID == transaction
    finally:
        modality.stop()
