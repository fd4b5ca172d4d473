"""The Python behind the lifecycle scripts (dsmpacs.dsm.*), one step at a time."""
from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from dsmpacs.archive.users import UserError, Users, verify_password
from dsmpacs.cli import main
from dsmpacs.dsm import admin, configfile, integration, lifecycle
from dsmpacs.settings import Settings
from tests.dsm.test_wizard_rules import good_env
from tests.peers import free_port


# --- config.toml ----------------------------------------------------------------------------
def test_config_round_trips_through_toml(tmp_path):
    values = {"ae_title": 'A "Q" B', "dicom_port": 4242, "storage_root": "/v/shares/PACS \\ 影像",
              "database_url": "mysql://u:p%40ss@127.0.0.1:3307/db", "log_level": "INFO"}
    assert configfile.write_new(tmp_path, values)
    path = tmp_path / "config.toml"
    assert tomllib.loads(path.read_text()) == values
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    settings = Settings.load(data_dir=tmp_path, env={})
    assert settings.dicom_port == 4242 and str(settings.storage_root) == "/v/shares/PACS \\ 影像"
    assert tomllib.loads(configfile.render({"x": "tab\there\x01"}))["x"] == "tab\there\x01"


def test_an_existing_config_is_never_replaced(tmp_path):
    (tmp_path / "config.toml").write_text("dicom_port = 1234\n")
    assert not configfile.write_new(tmp_path, {"dicom_port": 4242})
    assert (tmp_path / "config.toml").read_text() == "dicom_port = 1234\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


# --- postinst ---------------------------------------------------------------------------
def layout(tmp_path: Path) -> tuple[Path, Path, Path]:
    package_dir = tmp_path / "var" / "packages" / "dsmpacs"
    target, var = package_dir / "target", package_dir / "var"
    for path in (target, var):
        path.mkdir(parents=True)
    return package_dir, target, var


def test_postinst_writes_config_admin_and_port_files(tmp_path):
    package_dir, target, var = layout(tmp_path)
    env = good_env(**{"wizard_dicom_port": "4242", "wizard_web_port": "8042",
                      "wizard_share_name": "PACS 影像", "SYNOPKG_PKG_STATUS": "INSTALL"})
    assert lifecycle.postinst(var, target, package_dir, env) == []
    settings = Settings.load(data_dir=var, env={})
    assert (settings.dicom_port, settings.web_port, settings.ae_title) == (4242, 8042, "ANGIO_PACS")
    assert settings.effective_storage_root == package_dir / "shares" / "PACS 影像"
    assert 'dst.ports="4242/tcp"' in (target / integration.SERVICE_FILE).read_text()
    ui = json.loads((target / integration.UI_CONFIG).read_text())
    assert ui[".url"][integration.APP_ID]["port"] == "8042"
    record = (package_dir / "etc" / lifecycle.INSTALLER_RECORD).read_text()
    assert "share_name=PACS 影像\n" in record and "database=sqlite\n" in record
    first = json.loads((var / admin.FILE_NAME).read_text())
    assert stat.S_IMODE((var / admin.FILE_NAME).stat().st_mode) == 0o600
    assert first["username"] == "admin"
    assert first["password_hash"].startswith("scrypt$")
    assert verify_password("Angio-suite-2026", first["password_hash"])
    assert not verify_password("angio-suite-2026", first["password_hash"])
    assert "Angio-suite-2026" not in (var / admin.FILE_NAME).read_text()


def test_first_start_creates_the_wizards_admin_once(tmp_path, archive):
    admin.write_initial_admin(tmp_path, "Angio-suite-2026")
    users = Users(archive.index)
    assert admin.create_initial_admin(tmp_path, users)
    assert users.authenticate("admin", "Angio-suite-2026") is not None
    assert not (tmp_path / admin.FILE_NAME).exists()
    # a later install that finds accounts leaves them alone and still removes the file
    admin.write_initial_admin(tmp_path, "Another-password-1")
    assert not admin.create_initial_admin(tmp_path, users)
    assert users.authenticate("admin", "Angio-suite-2026") is not None
    assert not (tmp_path / admin.FILE_NAME).exists()


def test_a_weak_wizard_password_stops_postinst_with_the_reason(tmp_path):
    """The wizard's rule and the account rule agree (10 characters at least)."""
    package_dir, target, var = layout(tmp_path)
    with pytest.raises(lifecycle.LifecycleError, match="at least 10 characters"):
        lifecycle.postinst(var, target, package_dir, good_env(
            wizard_admin_password="nine-char", wizard_admin_password_confirm="nine-char",
            SYNOPKG_PKG_STATUS="INSTALL"))
    with pytest.raises(UserError, match="at least 10 characters"):
        admin.write_initial_admin(tmp_path, "nine-char")


def test_postinst_keeps_an_existing_config_and_says_so_on_install(tmp_path):
    package_dir, target, var = layout(tmp_path)
    (var / "config.toml").write_text(
        "web_port = 9090\nweb_host = \"0.0.0.0\"\nunknown_ae_may_store = false\n")
    config = (var / "config.toml").read_text()
    notices = lifecycle.postinst(var, target, package_dir, good_env(SYNOPKG_PKG_STATUS="INSTALL"))
    assert len(notices) == 1 and "kept them" in notices[0]
    assert (var / "config.toml").read_text() == config
    assert '"9090"' in (target / integration.UI_CONFIG).read_text()
    assert lifecycle.postinst(var, target, package_dir, {"SYNOPKG_PKG_STATUS": "UPGRADE"}) == []
    assert (var / "config.toml").read_text() == config
    assert not (var / admin.FILE_NAME).exists()


@pytest.mark.parametrize("lang", ["enu", "chs"])
def test_an_upgrade_keeps_the_defaults_an_earlier_config_ran_with(tmp_path, lang):
    """A config.toml from before the strict defaults: the viewer stays on the network (the
    desktop icon) and unregistered modalities keep storing, and the administrator is told."""
    package_dir, target, var = layout(tmp_path)
    (var / "config.toml").write_text("# written by version 1\nweb_port = 9090\n")
    (var / "config.toml").chmod(0o600)
    notices = lifecycle.postinst(var, target, package_dir,
                                 {"SYNOPKG_PKG_STATUS": "UPGRADE", "SYNOPKG_DSM_LANGUAGE": lang})
    settings = Settings.load(data_dir=var, env={})
    assert (settings.web_host, settings.unknown_ae_may_store, settings.web_port) == ("0.0.0.0", True, 9090)
    assert (var / "config.toml").read_text().startswith("# written by version 1\nweb_port = 9090\n")
    assert stat.S_IMODE((var / "config.toml").stat().st_mode) == 0o600
    [notice] = notices
    assert "unknown_ae_may_store = true" in notice
    assert ("远程 AE" in notice) is (lang == "chs")
    # once pinned, the next upgrade has nothing to say
    assert lifecycle.postinst(var, target, package_dir, {"SYNOPKG_PKG_STATUS": "UPGRADE"}) == []


def test_the_wizards_modalities_may_store_from_the_first_start(tmp_path):
    """postinst keeps the list; the first start (prestart) registers each AE as a peer that may
    store, and the access policy, with its strict default, lets exactly those store."""
    from dsmpacs.archive import Archive
    from dsmpacs.archive.access import AccessPolicy, Action
    from dsmpacs.archive.audit import AuditTrail
    from dsmpacs.archive.peers import PeerRegistry
    from dsmpacs.dsm import first_peers

    package_dir, target, var = layout(tmp_path)
    env = good_env(**{"wizard_store_aes": "DSA_ROOM1, WS3D@192.168.1.20:104",
                      "wizard_dicom_port": str(free_port()), "wizard_web_port": str(free_port()),
                      "SYNOPKG_PKG_STATUS": "INSTALL"})
    assert lifecycle.postinst(var, target, package_dir, env) == []
    assert stat.S_IMODE((var / first_peers.FILE_NAME).stat().st_mode) == 0o600
    (var / "config.toml").write_text((var / "config.toml").read_text() + "min_free_mb = 0\n")
    result = CliRunner().invoke(main, ["--data-dir", str(var), "dsm", "prestart", "--target", str(target)])
    assert result.exit_code == 0, result.output
    assert not (var / first_peers.FILE_NAME).exists()

    settings = Settings.load(data_dir=var, env={})
    assert settings.unknown_ae_may_store is False and settings.web_host == "0.0.0.0"
    archive = Archive(settings)
    archive.open()
    try:
        registry = PeerRegistry(archive.index)
        peers = {p.ae_title: p for p in registry.list()}
        assert set(peers) == {"DSA_ROOM1", "WS3D"}
        assert not peers["DSA_ROOM1"].is_move_destination and not peers["DSA_ROOM1"].may_find
        assert (peers["WS3D"].host, peers["WS3D"].port, peers["WS3D"].is_move_destination) == \
            ("192.168.1.20", 104, True)
        policy = AccessPolicy(settings, registry)
        assert policy.allows(Action.STORE, "DSA_ROOM1", "10.1.2.3")[0]
        assert not policy.allows(Action.FIND, "DSA_ROOM1", "10.1.2.3")[0]
        assert not policy.allows(Action.STORE, "STRANGER", "10.1.2.3")[0]
        added = AuditTrail.of(archive).recent(action="peer-add")
        assert {e.actor for e in added} == {first_peers.ACTOR} and len(added) == 2
    finally:
        archive.close()


def test_postinst_refuses_an_upgrade_without_config(tmp_path):
    package_dir, target, var = layout(tmp_path)
    with pytest.raises(lifecycle.LifecycleError, match="config.toml is missing"):
        lifecycle.postinst(var, target, package_dir, {"SYNOPKG_PKG_STATUS": "UPGRADE"})


def test_postinst_command_reports_every_bad_answer(tmp_path, monkeypatch):
    package_dir, target, var = layout(tmp_path)
    for key, value in good_env(wizard_ae_title="A\\B", wizard_web_port="80").items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(main, ["--data-dir", str(var), "dsm", "postinst", "--target",
                                       str(target), "--package-dir", str(package_dir)])
    assert result.exit_code == 1
    assert "AE title" in result.output and "1024 to 65535" in result.output
    assert not (var / "config.toml").exists()


# --- services and readiness --------------------------------------------------------------
def test_dsm_starts_serve_under_its_watchdog():
    """One process for DSM to watch: serve, which restarts its DICOM and web children."""
    assert lifecycle.services() == [("serve", ["serve"])]


def test_prestart_refreshes_port_files_checks_upgrades_and_lists_services(tmp_path):
    package_dir, target, var = layout(tmp_path)
    dicom, web = free_port(), free_port()
    (var / "config.toml").write_text(f"dicom_host = \"127.0.0.1\"\ndicom_port = {dicom}\n"
                                     f"web_port = {web}\nmin_free_mb = 0\n")
    args = ["--data-dir", str(var), "dsm", "prestart", "--target", str(target)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["serve serve"]
    assert f'dst.ports="{web}/tcp"' in (target / integration.SERVICE_FILE).read_text()
    assert "index ok" in CliRunner().invoke(main, ["--data-dir", str(var), "db", "check"]).output
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", dicom))
        taken.listen()
        refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 1
    assert f"DICOM port {dicom} is already in use" in refused.stderr and refused.stdout == ""


LISTENER = "import socket, sys, time\ns = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1])))\n" \
           "s.listen(); print('up', flush=True); time.sleep(60)\n"


def test_wait_ready_until_listening_then_reports_a_dead_or_silent_service(tmp_path):
    run_dir, log_dir = tmp_path / "run", tmp_path / "logs"
    run_dir.mkdir()
    log_dir.mkdir()
    port = free_port()
    settings = Settings(data_dir=tmp_path, dicom_host="127.0.0.1", dicom_port=port)
    proc = subprocess.Popen([sys.executable, "-c", LISTENER, str(port)], stdout=subprocess.PIPE)
    try:
        (run_dir / "dicom.pid").write_text(f"{proc.pid}\n")
        # Its port takes connections, but the run file is a power loss's leftover (written
        # before the PID file): not up yet. The DICOM daemon binds before it serves.
        stale = {"role": "dicom", "pid": proc.pid, "started": time.time() - 3600}
        (run_dir / "dicom.json").write_text(json.dumps(stale))
        problems = lifecycle.wait_ready(settings, run_dir, log_dir, timeout=1)
        assert "did not listen within" in problems[0]
        (run_dir / "dicom.json").write_text(json.dumps({**stale, "started": time.time()}))
        assert lifecycle.wait_ready(settings, run_dir, log_dir, timeout=30) == []
    finally:
        proc.kill()
        proc.wait()

    # A service that exited: its console log explains why.
    (log_dir / "dicom.console.log").write_text("Error: cannot listen on 127.0.0.1: in use\n")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run_dir / "dicom.pid").write_text(f"{dead.pid}\n")
    problems = lifecycle.wait_ready(settings, run_dir, log_dir, timeout=5)
    assert "stopped while starting" in problems[0] and "cannot listen" in problems[0]

    # A service that runs but never listens.
    quiet = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (run_dir / "dicom.pid").write_text(f"{quiet.pid}\n")
        problems = lifecycle.wait_ready(settings, run_dir, log_dir, timeout=0.5)
        assert "did not listen within" in problems[0]
    finally:
        quiet.kill()
        quiet.wait()


def test_a_zombie_is_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    while True:  # exited but not reaped: still in the process table
        state = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            break
        time.sleep(0.01)
    assert os.path.exists(f"/proc/{child.pid}") and not lifecycle._alive(child.pid)
    child.wait()


def test_drop_index_leaves_an_sqlite_index_to_postuninst(tmp_path):
    settings = Settings(data_dir=tmp_path)
    assert "removed with the data directory" in lifecycle.drop_index(settings)


def test_postinst_creates_a_dicom_tls_certificate_when_tls_is_chosen(tmp_path):
    from dsmpacs.tls import TlsFiles

    package_dir, target, var = layout(tmp_path)
    env = good_env(**{"wizard_dicom_tls_port": "2762", "wizard_dicom_tls_only": "true",
                      "SYNOPKG_PKG_STATUS": "INSTALL"})
    notices = lifecycle.postinst(var, target, package_dir, env)
    settings = Settings.load(data_dir=var, env={})
    assert (settings.dicom_tls_port, settings.dicom_plain) == (2762, False)
    files = TlsFiles.of(settings)
    assert files.has_server_identity() and any(str(files.ca_cert) in n for n in notices)
    sc = (target / integration.SERVICE_FILE).read_text()
    assert 'dst.ports="2762/tcp"' in sc and f'dst.ports="{settings.dicom_port}/tcp"' not in sc
    # Installed again over the kept data: the certificate stays.
    before = files.server_cert.read_bytes()
    lifecycle.postinst(var, target, package_dir, env)
    assert files.server_cert.read_bytes() == before


def test_postinst_with_the_reverse_proxy_binds_to_the_nas_and_says_what_to_create_in_dsm(tmp_path):
    """DSM does not let a package create the reverse proxy rule: postinst tells the exact
    rule, and the desktop icon already opens its HTTPS port."""
    import json

    package_dir, target, var = layout(tmp_path)
    env = good_env(**{"wizard_web_network": "false", "wizard_web_proxy_only": "true",
                      "wizard_web_proxy_port": "11443", "SYNOPKG_PKG_STATUS": "INSTALL"})
    [steps] = lifecycle.postinst(var, target, package_dir, env)
    assert "source protocol HTTPS, hostname *, port 11443" in steps
    assert "destination protocol HTTP, hostname localhost, port 8080" in steps
    settings = Settings.load(data_dir=var, env={})
    assert (settings.web_host, settings.web_trusted_proxy, settings.web_proxy_port) == \
        ("127.0.0.1", "127.0.0.1", 11443)
    icon = json.loads((target / integration.UI_CONFIG).read_text())[".url"][integration.APP_ID]
    assert (icon["protocol"], icon["port"]) == ("https", "11443")
    # In Chinese for a Chinese DSM.
    chinese = lifecycle.reverse_proxy_steps(settings, "chs")
    assert "反向代理" in chinese and "11443" in chinese


# --- MariaDB 10: postinst creates the database and the user ------------------------------
@pytest.mark.mariadb
def test_postinst_creates_the_mariadb_database_and_user_through_the_socket(tmp_path):
    """Through DSM's /run/mysqld/mysqld10.sock (here a link to the test server's socket), as
    the wizard's administrator; the user then signs in over TCP with its own password. A
    wrong administrator password stops postinst with the reason and writes no config."""
    import secrets
    import uuid

    import pymysql

    from tests.peers import MARIADB, mariadb_connection, require

    try:
        conn = mariadb_connection()
    except Exception as exc:
        require(False, f"MariaDB unreachable: {exc}")
    with conn.cursor() as cur:
        cur.execute("SELECT @@socket")
        server_socket = cur.fetchone()[0]
    require(os.path.exists(server_socket), f"MariaDB's socket {server_socket}")
    tag = uuid.uuid4().hex[:10]
    admin_user, admin_pw = f"dsmt_root_{tag}", "Root-" + secrets.token_hex(6)
    db, user, pw = f"dsmpacs_t_{tag}", f"dsmt_{tag}", "Pw-" + secrets.token_hex(6)
    with conn.cursor() as cur:
        cur.execute(f"CREATE USER '{admin_user}'@'%%' IDENTIFIED BY %s", (admin_pw,))
        cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{admin_user}'@'%' WITH GRANT OPTION")
    dsm_root = tmp_path / "root"
    (dsm_root / "run" / "mysqld").mkdir(parents=True)
    (dsm_root / "run" / "mysqld" / "mysqld10.sock").symlink_to(server_socket)
    package_dir, target, var = layout(tmp_path)
    env = good_env(**{"PACS_DSM_ROOT": str(dsm_root), "SYNOPKG_PKG_STATUS": "INSTALL",
                      "wizard_db_sqlite": "false", "wizard_db_mariadb_create": "true",
                      "wizard_mariadb_port": str(MARIADB["port"]), "wizard_mariadb_database": db,
                      "wizard_mariadb_user": user, "wizard_mariadb_password": pw,
                      "wizard_mariadb_admin_user": admin_user,
                      "wizard_mariadb_root_password": admin_pw + "x"})
    try:
        with pytest.raises(lifecycle.LifecycleError, match=f"refused the administrator '{admin_user}'"):
            lifecycle.postinst(var, target, package_dir, env)
        assert not (var / "config.toml").exists()
        env["wizard_mariadb_root_password"] = admin_pw
        assert lifecycle.postinst(var, target, package_dir, env) == []
        assert Settings.load(data_dir=var, env={}).database_url.endswith(f"/{db}")
        as_user = pymysql.connect(host="127.0.0.1", port=MARIADB["port"], user=user, password=pw,
                                  database=db, connect_timeout=3)
        with as_user.cursor() as cur:
            cur.execute("CREATE TABLE t (x INT)")       # every right on its database
        as_user.close()
        config = (var / "config.toml").read_text()
        assert admin_user not in config and admin_pw not in config   # used, kept nowhere
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
            cur.execute(f"DROP USER IF EXISTS '{user}'@'127.0.0.1'")
            cur.execute(f"DROP USER IF EXISTS '{admin_user}'@'%'")
        conn.close()


def test_the_service_file_link_in_target_is_kept_and_its_file_written(tmp_path):
    """In the package, target/app/dsmpacs.sc links to var/dsmpacs.sc: writing the port files
    updates the linked file and leaves the link (DSM's worker reads through it)."""
    package_dir, target, var = layout(tmp_path)
    (target / "app").mkdir()
    (target / integration.SERVICE_FILE).symlink_to(var / integration.SERVICE_FILE_DATA)
    settings = Settings(data_dir=var, dicom_port=10104, web_port=10190, hl7_port=2575)
    integration.write(target, settings)
    assert (target / integration.SERVICE_FILE).is_symlink()
    written = (target / integration.SERVICE_FILE).read_text()
    assert 'dst.ports="10190/tcp"' in written
    # Ports the wizard does not ask for follow the wizard's (preinst wrote those alone).
    assert written.startswith(integration.wizard.service_file(10104, 10190))
    assert '[dsmpacs-hl7]\ntitle="HL7 orders"' in written and 'dst.ports="2575/tcp"' in written
    assert stat.S_IMODE((var / integration.SERVICE_FILE_DATA).stat().st_mode) == 0o644


def test_preupgrade_keeps_the_service_file_of_a_version_before_the_link(tmp_path):
    """An installed version from before the .sc link kept its file (the effective ports) in
    target only; the new package's link points into var, so preupgrade copies it there."""
    root = tmp_path / "root"
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    for name in ("common", "preupgrade"):
        text = (Path(__file__).resolve().parents[2] / "dsm" / "scripts" / name).read_text()
        (scripts / name).write_text(text.replace("@PYTHON_PACKAGE@", "python311")
                                    .replace("@PYTHON_VERSION@", "3.11"))
    python = root / "var" / "packages" / "python311" / "target" / "bin" / "python3.11"
    python.parent.mkdir(parents=True)
    python.symlink_to(sys.executable)
    package_dir = root / "var" / "packages" / "dsmpacs"
    old_sc = package_dir / "target" / integration.SERVICE_FILE
    old_sc.parent.mkdir(parents=True)
    old_sc.write_text('[dsmpacs-web]\ndst.ports="8042/tcp"\n')
    (package_dir / "var").mkdir()
    env = {"PATH": "/usr/bin:/bin", "PACS_DSM_ROOT": str(root), "SYNOPKG_PKGNAME": "dsmpacs",
           "SYNOPKG_PKG_STATUS": "UPGRADE", "SYNOPKG_TEMP_LOGFILE": str(tmp_path / "log")}
    done = subprocess.run(["/bin/sh", str(scripts / "preupgrade")], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    kept = package_dir / "var" / integration.SERVICE_FILE_DATA
    assert kept.read_text() == old_sc.read_text()
    # Once there (the last start wrote it), it is the one that counts.
    old_sc.write_text("stale\n")
    assert subprocess.run(["/bin/sh", str(scripts / "preupgrade")], env=env).returncode == 0
    assert "8042" in kept.read_text()
