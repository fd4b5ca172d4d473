"""Strict defaults (issue 9 item 7), checked on the real processes a newcomer runs.

The web server answers this machine only; an unregistered AE may not store until it
is registered; everything the archive writes stays with the service user (umask
027, secrets 0600); anonymous /-/version names no platform; and `make run` and the
CLI use one data directory without a flag.
"""
from __future__ import annotations

import os
import queue
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from dsmpacs.archive.audit import AuditTrail
from dsmpacs.settings import Settings
from tests import factories as f
from tests.peers import dcmtk, require, wait_until
from tests.retrieval import run_cli
from tests.webclient import WebSession, client_as, server_archive

ROOT = Path(__file__).resolve().parent.parent


def test_the_product_defaults_are_the_strict_ones():
    defaults = Settings()
    assert defaults.web_host == "127.0.0.1"
    assert defaults.unknown_ae_may_store is False
    assert defaults.data_dir == Path("data")


# --- unregistered AEs -----------------------------------------------------------------
def store_status(done) -> str:
    found = re.search(r"Received Store Response \(([^)]*)\)", done.stdout + done.stderr)
    assert found, done.stdout + done.stderr
    return found.group(1)


def is_stored(server, sop_instance_uid: str) -> bool:
    with server_archive(server) as archive:
        return archive.index.find_instance(sop_instance_uid) is not None


def test_an_unregistered_ae_may_not_store_until_registered(server_factory, tmp_path):
    # None: the product's default, not the test suite's (tests/peers.py)
    server = server_factory(unknown_ae_may_store=None)
    path = f.write(f.secondary_capture(), tmp_path / "sc.dcm")
    store = ("storescu", "-v", "-aet", "DSA_ROOM1", "-aec", server.ae_title, "127.0.0.1",
             str(server.port), str(path))
    refused = dcmtk(*store)
    assert store_status(refused) == "Unknown Status: 0x124"        # 0x0124 Refused: Not authorized
    assert not is_stored(server, f.read_uid(path))
    assert dcmtk("echoscu", "-aet", "DSA_ROOM1", "-aec", server.ae_title, "127.0.0.1",
                 str(server.port)).returncode == 0                  # C-ECHO stays open to anyone

    def denied():
        with server_archive(server) as archive:
            return [e for e in AuditTrail(archive.index).recent(action="access-denied")
                    if e.calling_ae == "DSA_ROOM1" and e.detail.startswith("C-STORE")]

    [record] = wait_until(denied, 30, "the access-denied record")
    assert record.outcome == "refused" and record.address == "127.0.0.1"

    # Registered by its AE title alone, as the DSM wizard does: the next association stores.
    added = run_cli(server.data_dir, server.sets, "ae", "add", "dsa1", "DSA_ROOM1", "*", "0",
                    "--no-move-destination", "--no-find", "--no-retrieve")
    assert added.returncode == 0, added.stderr
    assert store_status(dcmtk(*store)) == "Success"
    assert is_stored(server, f.read_uid(path))
    # ... and such an entry is never a destination: it has no address to send to
    bad = run_cli(server.data_dir, server.sets, "ae", "add", "dsa2", "DSA_ROOM2", "*", "0")
    assert bad.returncode != 0 and "cannot be a move destination" in bad.stderr


# --- file modes ---------------------------------------------------------------------------
SECRETS = ("audit.key", "web-secret.key", "config.toml")


def test_files_are_private_to_the_service_user(server_factory, tmp_path):
    server = server_factory()
    first = f.secondary_capture()
    sent = f.write(first, tmp_path / "first.dcm")
    first.PatientName = "CONFLICT^COPY"          # same SOP Instance UID, other content
    conflict = f.write(first, tmp_path / "conflict.dcm")
    assert "Success" in store_status(server.storescu(sent))
    server.storescu(conflict)                     # kept in .quarantine (keep-first)
    backup = run_cli(server.data_dir, server.sets, "db", "backup")
    assert backup.returncode == 0, backup.stderr
    edited = run_cli(server.data_dir, server.sets, "ae", "add", "ws", "WS", "127.0.0.1", "104")
    assert edited.returncode == 0, edited.stderr

    # Looked at while the server runs, so the index's -wal and -shm files exist.
    data = server.data_dir
    found = {p.relative_to(data).as_posix(): stat.S_IMODE(p.lstat().st_mode) for p in data.rglob("*")}
    # Written by the test itself (the server's console output), not by the archive.
    found.pop("server.stderr")
    names = set(found)
    for expected in ("index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm", "audit.key", "web-secret.key", "logs/dsmpacs.log",
                     "logs/dsmpacs-web.log", "storage/.quarantine"):
        assert expected in names, sorted(names)
    assert any(n.startswith("backups/index-") for n in names), sorted(names)
    assert any(n.startswith("storage/") and n.endswith(".dcm") for n in names), sorted(names)
    assert any(n.startswith("storage/.quarantine/") and not found_is_dir(data, n) for n in names), \
        sorted(names)
    loose = {name: oct(mode) for name, mode in found.items() if mode & 0o027}
    assert loose == {}, "group-writable or readable by others"
    secrets = {name: oct(mode) for name, mode in found.items()
               if name in SECRETS or name.startswith("tls/") and not found_is_dir(data, name)}
    assert secrets and all(mode == "0o600" for mode in secrets.values()), secrets


def found_is_dir(root: Path, name: str) -> bool:
    return (root / name).is_dir()


# --- /-/version ---------------------------------------------------------------------------
def test_version_names_the_platform_to_admins_only(web_app, client, archive):
    import platform

    anonymous = client.get("/-/version")
    assert anonymous.status_code == 200
    assert set(anonymous.get_json()) == {"name", "version"}
    body = anonymous.get_data(as_text=True)
    for detail in (platform.python_version(), sys.executable, platform.release(), "pynetdicom"):
        assert detail not in body, detail

    client_as(client, archive, "radiologist", "rad1")
    assert set(client.get("/-/version").get_json()) == {"name", "version"}

    admin = web_app.test_client()
    client_as(admin, archive, "admin", "root")
    details = admin.get("/-/version").get_json()
    assert details["python"] == platform.python_version()
    assert details["libraries"]["pynetdicom"] and details["schema_version"] >= 1


def test_version_over_http_hides_the_platform_from_strangers(server):
    anonymous = requests.get(server.url("/-/version"), timeout=10)
    assert set(anonymous.json()) == {"name", "version"} and "python" not in anonymous.text.lower()
    cmd = [sys.executable, "-m", "dsmpacs", "--data-dir", str(server.data_dir)]
    for key, value in server.sets.items():
        cmd += ["--set", f"{key}={value}"]
    add = subprocess.run(cmd + ["user", "add", "boss", "--role", "admin", "--password-stdin"],
                         input="correct horse battery\n", capture_output=True, text=True, timeout=60)
    assert add.returncode == 0, add.stderr
    web = WebSession(server)
    web.login("boss", "correct horse battery")
    assert "python" in web.get("/-/version").json()


# --- make run and the CLI ------------------------------------------------------------------
def make_run_commands() -> list[list[str]]:
    """The commands `make run` runs, as make prints them (`make -n`)."""
    make = shutil.which("make")
    require(make is not None, "make not installed")
    venv = ROOT / ".venv"
    done = subprocess.run([make, "-n", "-s", "-C", str(ROOT), "run", f"VENV={venv}"],
                          capture_output=True, text=True, timeout=60, check=True)
    return [shlex.split(line) for line in done.stdout.splitlines()
            if line.startswith(str(venv / "bin" / "dsmpacs"))]


def test_make_run_prints_a_working_url_and_the_cli_finds_its_data(tmp_path):
    """A newcomer's `make run`, then `dsmpacs user list` from the same directory with no
    flag: one index. Run in a scratch directory standing for the checkout."""
    commands = make_run_commands()
    assert [c[1:] for c in commands] == [["user", "ensure-admin"], ["serve"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSMPACS_")}
    env.update(DSMPACS_WEB_PORT="0", DSMPACS_DICOM_PORT="0", DSMPACS_MIN_FREE_MB="0",
               PYTHONUNBUFFERED="1")
    first = subprocess.run(commands[0], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)
    assert first.returncode == 0, first.stderr
    password = re.search(r"Password \(shown only now\): (\S+)", first.stdout).group(1)

    serve = subprocess.Popen(commands[1], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        url = read_web_url(serve, 60)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url), url
        page = requests.get(url + "login", timeout=10)
        assert page.status_code == 200 and 'name="password"' in page.text

        listed = subprocess.run([commands[0][0], "user", "list"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
        assert re.search(r"^admin\s+admin\b", listed.stdout, re.M), listed.stdout
        assert (tmp_path / "data" / "index.sqlite3").is_file()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
        assert len(password) >= 10
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        try:
            serve.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
        serve.stdout.close()


def read_web_url(proc: subprocess.Popen, timeout: float) -> str:
    """The URL of the "Web listening on" line. A thread reads the lines: a selector on
    a buffered pipe misses a line that arrived in the same read as the one before it."""
    lines: queue.Queue = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    seen = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        found = re.search(r"Web listening on (\S+)", line)
        if found:
            return found.group(1)
    raise AssertionError(f"make run printed no web URL (exit {proc.poll()}):\n" + "".join(seen))
