"""The built .spk through Package Center's whole lifecycle on a fake NAS (tests/dsm/harness.py).

Install from the wizard with no network, start, store with dcmtk's storescu on the
wizard's port, find the instance, stop, upgrade from the previous build with data
in it, find it again, uninstall keeping the data, reinstall, find it again, and
uninstall deleting the data. Everything runs as the package user; nothing may run
as root or write outside the package's folders and its shared folder.

Each time, the instance is found three ways: in the index (a lookup by SOP Instance
UID, with the stored bytes compared to what was sent), over DIMSE C-FIND on the
wizard's port, and over QIDO-RS as the wizard's administrator on the web port.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import tarfile
import time
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace

import pyotp
import pytest

from dsmpacs.dsm import wizard as w
from tests import factories as f
from tests.dsm.harness import DSMError, FakeDSM, read_info
from tests.peers import MARIADB, dcmtk, free_port, mariadb_connection, require, wait_until
from tests.processes import parent_of
from tests.webclient import WebSession

ADMIN_PASSWORD = "Angio-suite-2026"


def normalised(requirement: str) -> str:
    """name==version with the name normalised as PEP 503 does (pip freeze and the
    requirements file spell some names with '_' and others with '-')."""
    name, _, version = requirement.partition("==")
    return re.sub(r"[-_.]+", "-", name).lower() + "==" + version


# --- finding the stored instance ---------------------------------------------------------
LOOKUP = """
import json, sys
from dsmpacs.archive import Archive
from dsmpacs.settings import Settings
settings = Settings.load(data_dir=sys.argv[1], env={})
archive = Archive(settings)
archive.open()
row = archive.index.find_instance(sys.argv[2])
print(json.dumps(None if row is None else {
    "path": str(archive.storage.path(row.path)), "sha256": row.sha256, "size": row.size,
    "dataset_offset": row.dataset_offset, "calling_ae": row.calling_ae}))
archive.close()
"""


def find_in_index(dsm: FakeDSM, sent: Path) -> dict:
    """The index row of the sent instance, read as the package user with the package's
    own environment; its file must hold exactly the sent dataset."""
    checked = dsm.dsmpacs("db", "check")
    assert checked.returncode == 0, checked.stderr
    assert "1 instances" in checked.stdout, checked.stdout
    python = dsm.package_dir() / "target" / "env" / "bin" / "python"
    done = dsm.as_package_user(str(python), "-c", LOOKUP, str(dsm.package_dir() / "var"),
                               f.read_uid(sent))
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    assert row is not None, f"{f.read_uid(sent)} is not in the index"
    stored = Path(row["path"]).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == row["sha256"] and len(stored) == row["size"]
    assert stored[row["dataset_offset"]:] == f.dataset_bytes(sent)
    verified = dsm.dsmpacs("verify")
    assert verified.returncode == 0 and "mismatched 0" in verified.stdout, verified.stdout
    return row


def service_logs(dsm: FakeDSM) -> str:
    """The ends of the package's logs, to explain a failure."""
    logs = dsm.package_dir() / "var" / "logs"
    out = []
    for name in ("serve.console.log", "dsmpacs-serve.log", "dsmpacs.log", "notices.log"):
        try:
            out.append(f"--- {name}:\n" + "\n".join((logs / name).read_text(errors="replace").splitlines()[-25:]))
        except OSError:
            pass
    out.append(f"--- pids: {dsm.pids()}\n--- processes: {dsm.processes_of_root_path()}")
    text = "\n".join(out)
    print(text)          # pytest shows it whole with the failure (an assertion message is cut)
    return text


def find_over_cfind(dsm: FakeDSM, answers: dict, sent: Path, workdir: Path) -> None:
    """C-FIND at IMAGE level from a registered AE, as the 3D workstation would."""
    from pydicom import dcmread

    register = ("import sys\nfrom dsmpacs.archive import Archive\n"
                "from dsmpacs.archive.peers import Peer, PeerError, PeerRegistry\n"
                "from dsmpacs.settings import Settings\n"
                "a = Archive(Settings.load(data_dir=sys.argv[1], env={})); a.open()\n"
                "try:\n    PeerRegistry(a.index).add(Peer('WORKSTATION', 'FINDSCU', '127.0.0.1', 11113))\n"
                "except PeerError:\n    pass\n")
    python = dsm.package_dir() / "target" / "env" / "bin" / "python"
    done = dsm.as_package_user(str(python), "-c", register, str(dsm.package_dir() / "var"))
    assert done.returncode == 0, done.stderr
    ds = dcmread(sent)
    out = workdir / f"cfind-{uuid.uuid4().hex[:8]}"
    out.mkdir()
    done = dcmtk("findscu", "-S", "-aet", "FINDSCU", "-aec", answers[w.AE_TITLE], "-X", "-od", out,
                 "-k", "QueryRetrieveLevel=IMAGE", "-k", f"StudyInstanceUID={ds.StudyInstanceUID}",
                 "-k", f"SeriesInstanceUID={ds.SeriesInstanceUID}", "-k", "SOPInstanceUID",
                 "127.0.0.1", answers[w.DICOM_PORT])
    assert done.returncode == 0, (done.stderr, service_logs(dsm))
    found = [dcmread(p).SOPInstanceUID for p in out.iterdir()]
    assert found == [ds.SOPInstanceUID], (found, done.stderr)


_RECOVERY_CODES: list[str] = []     # the wizard admin's, from its enrolment


def sign_in_admin(web: WebSession) -> None:
    """Password, then the second factor administrators must use (require_totp_roles):
    enrolment the first time, a recovery code (one per sign-in) after an upgrade."""
    location = web.login("admin", ADMIN_PASSWORD).headers["Location"]
    if location.startswith("/account/totp"):
        page = web.get(location)
        secret = re.search(r"data-totp-secret>([A-Z2-7]+)<", page.text).group(1)
        done = web.post_form("/account/totp", {"code": pyotp.TOTP(secret).now()})
        assert done.status_code == 200
        _RECOVERY_CODES[:] = re.findall(r"<li><code>([A-Z0-9-]{19})</code></li>", done.text)
        return
    assert location.startswith("/login/totp"), location
    web.get(location)
    assert web.post_form("/login/totp", {"code": _RECOVERY_CODES.pop()}).status_code == 302


def dicom_echo(answers: dict) -> bool:
    return dcmtk("echoscu", "-aec", answers[w.AE_TITLE], "127.0.0.1", answers[w.DICOM_PORT],
                 timeout=10).returncode == 0


def admin_page(answers: dict, path: str) -> str:
    """An administration page as the wizard's administrator sees it."""
    web = WebSession(SimpleNamespace(web_url=f"http://127.0.0.1:{answers[w.WEB_PORT]}"))
    sign_in_admin(web)
    page = web.get(path)
    assert page.status_code == 200, page.status_code
    return page.text


def find_over_web(answers: dict, sent: Path) -> None:
    """The web service answers on the wizard's port, the administrator created from the
    wizard's password can sign in, and QIDO-RS finds the instance."""
    base = f"http://127.0.0.1:{answers[w.WEB_PORT]}"
    with urllib.request.urlopen(f"{base}/-/health", timeout=10) as response:
        assert response.status == 200
    web = WebSession(SimpleNamespace(web_url=base))
    sign_in_admin(web)                          # the wizard's admin signs in to the UI
    assert web.get("/-/settings", allow_redirects=False).status_code == 200   # an admin-only page
    token = base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        f"{base}/dicom-web/instances?SOPInstanceUID={f.read_uid(sent)}",
        headers={"Authorization": f"Basic {token}", "Accept": "application/dicom+json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        found = json.load(response)
    assert [item["00080018"]["Value"][0] for item in found] == [f.read_uid(sent)]


def find(dsm: FakeDSM, answers: dict, sent: Path, workdir: Path) -> dict:
    row = find_in_index(dsm, sent)
    find_over_cfind(dsm, answers, sent, workdir)
    find_over_web(answers, sent)
    return row


# --- what must hold whenever the package runs ---------------------------------------------
def assert_running_unprivileged(dsm: FakeDSM) -> None:
    assert dsm.status() == 0
    pids = dsm.pids()
    # The watchdog, its two children, and the DICOM daemon's receiving process
    # (dicom_processes = 2), the daemon's child.
    assert set(pids) == {"serve", "dicom", "web", "dicom-2"}
    assert parent_of(pids["dicom-2"]) == pids["dicom"]
    processes = dsm.processes_of_root_path()
    assert {pid for pid, _, _ in processes} == set(pids.values()), processes
    assert all(uid == dsm.uid != 0 for _, uid, _ in processes), processes


def assert_stopped(dsm: FakeDSM) -> None:
    assert dsm.status() == 3
    assert dsm.processes_of_root_path() == []


# --- MariaDB, as DSM's MariaDB 10 package would provide it ------------------------------
@pytest.fixture
def mariadb_package(request):
    """A MariaDB "root" for postinst to create the database with: a dedicated administrator
    account with a password (DSM's MariaDB 10 always has one), the server's socket (the fake
    NAS's /run/mysqld/mysqld10.sock leads there), plus the names the wizard will ask for.
    Both accounts and the database are dropped afterwards."""
    try:
        conn = mariadb_connection()
    except Exception as exc:
        require(False, f"MariaDB at {MARIADB['host']}:{MARIADB['port']} unreachable: {exc}")
    tag = uuid.uuid4().hex[:10]
    with conn.cursor() as cur:
        cur.execute("SELECT @@socket")
        socket_path = cur.fetchone()[0]
    require(bool(socket_path) and os.path.exists(socket_path), f"MariaDB's socket {socket_path}")
    admin = {"host": MARIADB["host"], "port": MARIADB["port"], "user": f"dsmh_root_{tag}",
             "password": "Root-" + secrets.token_hex(8), "socket": socket_path}
    names = {"database": f"dsmpacs_h_{tag}", "user": f"dsmh_{tag}",
             "password": "Pw-" + secrets.token_hex(8)}
    with conn.cursor() as cur:
        cur.execute(f"CREATE USER '{admin['user']}'@'%%' IDENTIFIED BY %s", (admin["password"],))
        cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{admin['user']}'@'%' WITH GRANT OPTION")
    yield admin, names
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{names['database']}`")
        cur.execute(f"DROP USER IF EXISTS '{names['user']}'@'127.0.0.1'")
        cur.execute(f"DROP USER IF EXISTS '{admin['user']}'@'%'")
    conn.close()


def mariadb_tables(database: str) -> list[str]:
    conn = mariadb_connection()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                        (database,))
            return sorted(row[0] for row in cur.fetchall())
    finally:
        conn.close()


# --- the lifecycle ------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def test_install_store_upgrade_uninstall(database, spk_builds, fake_dsm_factory, tmp_path, request):
    answers = {w.DICOM_HOST: "127.0.0.1", w.AE_TITLE: "ANGIO_PACS", w.DICOM_PORT: str(free_port()),
               w.WEB_PORT: str(free_port()), w.DICOM_TLS_PORT: str(free_port()),
               w.ADMIN_PASSWORD: ADMIN_PASSWORD,
               w.ADMIN_PASSWORD_CONFIRM: ADMIN_PASSWORD,
               # storescu's AE title: unregistered AEs may not store (unknown_ae_may_store)
               w.STORE_AES: "STORESCU"}
    mariadb_admin = None
    if database == "sqlite":
        answers[w.SHARE_NAME] = "PACS 影像"   # spaces and CJK must survive every layer
    else:
        mariadb_admin, names = request.getfixturevalue("mariadb_package")
        answers.update({w.SHARE_NAME: "pacs", w.DB_SQLITE: False, w.DB_MARIADB_CREATE: True,
                        w.MARIADB_HOST: "127.0.0.1", w.MARIADB_PORT: str(MARIADB["port"]),
                        w.MARIADB_DATABASE: names["database"], w.MARIADB_USER: names["user"],
                        w.MARIADB_PASSWORD: names["password"],
                        w.MARIADB_ADMIN_USER: mariadb_admin["user"],
                        w.MARIADB_ROOT_PASSWORD: mariadb_admin["password"]})
    # The MariaDB run goes through the Simplified Chinese wizards, on a NAS with MariaDB 10
    # (postinst creates the database through its socket); the SQLite run on a NAS without.
    dsm = fake_dsm_factory(mariadb_admin=mariadb_admin, lang="enu" if database == "sqlite" else "chs",
                           mariadb_socket=mariadb_admin and mariadb_admin["socket"])
    var, share = dsm.volume / "@appdata" / "dsmpacs", dsm.share(answers[w.SHARE_NAME])

    # Install from the wizard, offline, and start (Package Center's "run after install").
    runs = dsm.install(spk_builds["previous"], answers)
    assert [r.name for r in runs] == ["preinst", "postinst", "start-stop-status start"]
    # The only message: the wizard's TLS port got a certificate from a new local CA.
    messages = {r.name: r.message for r in runs if r.message}
    assert list(messages) == ["postinst"], [str(r) for r in runs]
    assert f"DICOM TLS listens on port {answers[w.DICOM_TLS_PORT]}" in messages["postinst"]
    # ... and DSM's package log keeps it (the scripts' stderr).
    assert f"DICOM TLS listens on port {answers[w.DICOM_TLS_PORT]}" in dsm.package_log().read_text()
    key = var / "tls" / "server.key"
    assert key.stat().st_uid == dsm.uid and key.stat().st_mode & 0o077 == 0
    assert_running_unprivileged(dsm)
    config = (var / "config.toml").read_bytes()
    assert oct((var / "config.toml").stat().st_mode & 0o777) == "0o600"
    assert f'dicom_port = {answers[w.DICOM_PORT]}'.encode() in config
    # The first start made the wizard's admin account from the hash and removed the file.
    assert not (var / "initial-admin.json").exists()
    # DSM's firewall and desktop icon learn the wizard's ports: registered so from the start.
    sc = (dsm.services_d / "dsmpacs.sc").read_text()
    assert f'dst.ports="{answers[w.DICOM_PORT]}/tcp"' in sc and f'dst.ports="{answers[w.WEB_PORT]}/tcp"' in sc
    assert dsm.registered[0] == sc
    ui = json.loads((dsm.package_dir() / "target" / "ui" / "config").read_text())
    assert ui[".url"]["com.dsmpacs.web"]["port"] == answers[w.WEB_PORT]
    # The environment holds exactly the bundled wheels.
    freeze = dsm.as_package_user(str(dsm.package_dir() / "target" / "env" / "bin" / "python"),
                                 "-m", "pip", "freeze", "--all", "--exclude", "pip",
                                 "--exclude", "setuptools")
    bundled = (dsm.package_dir() / "target" / "wheels" / "requirements.txt").read_text().split()
    assert sorted(map(normalised, freeze.stdout.split())) == sorted(map(normalised, bundled))
    # Package Center checks free space against INFO's extractsize: it must cover the
    # environment postinst built, not only the unpacked payload (which was 5.7 times less).
    with tarfile.open(spk_builds["previous"], "r:") as spk:
        extractsize = int(read_info(spk.extractfile("INFO").read().decode())["extractsize"])
    target = dsm.package_dir() / "target"
    installed = int(subprocess.run(["du", "-sk", f"{target}/"], capture_output=True, text=True,
                                   check=True).stdout.split()[0])
    assert installed <= extractsize <= installed * 1.3, (installed, extractsize)

    # A modality listed in the wizard stores an instance on the wizard's AE title and port;
    # one that is not listed is refused.
    stranger = dcmtk("storescu", "-v", "-aet", "STRANGER", "-aec", answers[w.AE_TITLE], "127.0.0.1",
                     answers[w.DICOM_PORT], f.write(f.secondary_capture(), tmp_path / "stranger.dcm"))
    assert "Received Store Response (Unknown Status: 0x124)" in stranger.stdout + stranger.stderr, \
        service_logs(dsm)
    sent = f.write(f.secondary_capture(), tmp_path / "sc.dcm")
    stored = dcmtk("storescu", "-aec", answers[w.AE_TITLE], "127.0.0.1", answers[w.DICOM_PORT], sent)
    assert stored.returncode == 0, stored.stderr
    row = find(dsm, answers, sent, tmp_path)
    assert Path(row["path"]).is_relative_to(share)

    # A crashed service comes back by itself (serve's watchdog) within seconds; DSM's
    # package log and the administration pages say so; what was stored is still there.
    killed, killed_at = dsm.pids()["dicom"], time.monotonic()
    os.kill(killed, signal.SIGKILL)
    wait_until(lambda: dsm.pids().get("dicom") not in (None, killed) and dicom_echo(answers),
               timeout=20, what="the DICOM service back")
    assert time.monotonic() - killed_at < 10
    assert_running_unprivileged(dsm)          # status 0: DSM never saw it down
    told = dsm.package_log().read_text()
    assert "The dicom service stopped unexpectedly (exit status SIGKILL) and was restarted" in told
    page = admin_page(answers, "/admin/storage")
    assert 'data-system-notice="service-crashed"' in page and "SIGKILL" in page
    assert find(dsm, answers, sent, tmp_path) == row

    dsm.stop()
    assert_stopped(dsm)

    # A service that ignores TERM (here: stopped with SIGSTOP) is killed after the timeout.
    if database == "sqlite":
        dsm.start()
        frozen = dsm.pids()["dicom"]
        os.kill(frozen, signal.SIGSTOP)
        dsm.stop(extra={"STOP_TIMEOUT": "1"})
        assert_stopped(dsm)
        assert not Path(f"/proc/{frozen}/cmdline").exists() or not Path(f"/proc/{frozen}/cmdline").read_bytes()

    # A port changed in config.toml reaches DSM's firewall list and the desktop icon at start.
    config_path = var / "config.toml"
    answers[w.WEB_PORT] = str(free_port())
    config_path.write_text(re.sub(r"(?m)^web_port = \d+$", f"web_port = {answers[w.WEB_PORT]}",
                                  config_path.read_text()))
    config = config_path.read_bytes()
    dsm.start()
    assert f'dst.ports="{answers[w.WEB_PORT]}/tcp"' in (dsm.services_d / "dsmpacs.sc").read_text()
    ui = json.loads((dsm.package_dir() / "target" / "ui" / "config").read_text())
    assert ui[".url"]["com.dsmpacs.web"]["port"] == answers[w.WEB_PORT]
    dsm.stop()

    # Start refuses, with the reason, when the DICOM port is taken or the share is gone.
    if database == "sqlite":
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", int(answers[w.DICOM_PORT])))
            squatter.listen()
            refused = dsm.try_start()
        assert refused.returncode != 0
        assert f"DICOM port {answers[w.DICOM_PORT]} is already in use" in refused.message
        assert_stopped(dsm)

    # Upgrade a running package to the next build: data, index and config stay.
    dsm.start()
    runs = dsm.upgrade(spk_builds["current"])
    assert [r.name for r in runs] == ["preupgrade", "preuninst", "postuninst", "preinst",
                                      "postinst", "postupgrade", "start-stop-status start"]
    assert dsm.installed.version.endswith("-0002")
    assert (var / "config.toml").read_bytes() == config
    assert_running_unprivileged(dsm)
    assert find(dsm, answers, sent, tmp_path) == row
    dsm.stop()
    assert_stopped(dsm)

    # Uninstall, keeping the data: config, index and images stay.
    allowed = dsm.allowed_dirs()
    dsm.uninstall({w.KEEP_DATA: True, w.DELETE_DATA: False})
    assert (var / "config.toml").read_bytes() == config
    assert Path(row["path"]).exists()
    if database == "sqlite":
        assert (var / "index.sqlite3").exists()
    else:
        assert "instance" in mariadb_tables(names["database"])
    assert not (dsm.services_d / "dsmpacs.sc").exists()

    # Installing again finds them: the wizard's new values do not replace the kept config.
    runs = dsm.install(spk_builds["current"], {**answers, w.AE_TITLE: "OTHER_AE"})
    assert "kept them" in runs[1].message
    assert (var / "config.toml").read_bytes() == config
    assert find(dsm, answers, sent, tmp_path) == row
    dsm.stop()

    # Uninstall, deleting the data: the package's own data goes, the images stay.
    dsm.uninstall({w.KEEP_DATA: False, w.DELETE_DATA: True})
    for kind in ("@appdata", "@appconf", "@apphome"):
        assert list((dsm.volume / kind / "dsmpacs").iterdir()) == [], kind
    if database == "mariadb":
        assert mariadb_tables(names["database"]) == []
    assert Path(row["path"]).read_bytes()[row["dataset_offset"]:] == f.dataset_bytes(sent)
    assert dsm.processes_of_root_path() == []

    assert dsm.files_owned_outside(allowed) == []


def test_preinst_refuses_bad_answers_with_the_reason(spk_builds, fake_dsm_factory):
    """What the wizard's page cannot check (two fields that must agree) preinst refuses, in
    the user's language, before anything is unpacked."""
    dsm = fake_dsm_factory(lang="chs")
    with pytest.raises(DSMError) as refused:
        dsm.install(spk_builds["current"], {w.ADMIN_PASSWORD: ADMIN_PASSWORD,
                                            w.ADMIN_PASSWORD_CONFIRM: ADMIN_PASSWORD + "x",
                                            w.DICOM_PORT: w.DEFAULTS[w.WEB_PORT]})
    assert "preinst exited 1" in str(refused.value)
    assert w.message("passwords_differ", "chs") in str(refused.value)
    assert w.message("ports_differ", "chs") in str(refused.value)
    assert list(dsm.app_dir("target", "dsmpacs").iterdir()) == []


def test_offline_install_really_has_no_network(harness_python):
    """The harness's "no network" is real: from inside it not even loopback services answer."""
    probe = ("import socket, sys\n"
             "try:\n    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)\n"
             "except OSError:\n    sys.exit(0)\nsys.exit(1)\n")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        online = subprocess.run([harness_python, "-c", probe, "127.0.0.1", str(port)])
        offline = subprocess.run(["unshare", "--net", "--", harness_python, "-c", probe,
                                  "127.0.0.1", str(port)])
    assert online.returncode == 1 and offline.returncode == 0
