"""HTTPS served by the web server itself (web_tls), against a real `dsmpacs serve
--only web` whose certificate comes from `dsmpacs tls init`: real clients (curl,
openssl s_client, Python's ssl, headless Chromium) that verify it against the local
CA; HSTS and Secure cookies on HTTPS; plain HTTP and TLS 1.1 refused; slow or
silent clients cannot stop the server."""
from __future__ import annotations

import base64
import hashlib
import shutil
import socket
import ssl
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import requests

from tests.browser import ARGS, chromium_path
from tests.peers import ROOT, ServerProcess, require
from tests.webclient import WebSession, add_user


def tls_init(data_dir: Path) -> Path:
    """`dsmpacs tls init` as an administrator runs it; returns the CA certificate."""
    data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "dsmpacs", "--data-dir", str(data_dir), "tls", "init",
                    "--host", "127.0.0.1", "--host", "localhost"], check=True, cwd=ROOT,
                   capture_output=True, timeout=60)
    return data_dir / "tls" / "ca.pem"


@pytest.fixture(scope="module")
def https(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("https") / "server"
    ca = tls_init(data_dir)
    server = ServerProcess(data_dir, {"web_tls": True, "web_timeout": 2}, only="web").start()
    try:
        yield server, ca
    finally:
        server.stop()


def curl(*args: str) -> subprocess.CompletedProcess:
    require(shutil.which("curl") is not None, "curl not installed (apt-get install curl)")
    return subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=60)


def test_curl_with_the_ca_gets_the_login_page_with_hsts(https):
    server, ca = https
    assert server.web_url.startswith("https://")
    ok = curl("--cacert", str(ca), "-D", "-", "-o", "/dev/null", server.url("/login"))
    assert ok.returncode == 0, ok.stderr
    head = ok.stdout.lower()
    assert head.startswith("http/1.1 200")
    assert "strict-transport-security: max-age=31536000\n" in head       # no includeSubDomains
    assert "set-cookie: dsmpacs_session=" in head and "; secure" in head
    # Without the CA the certificate is not trusted: curl refuses (60: peer certificate).
    untrusted = curl(server.url("/login"))
    assert untrusted.returncode == 60, (untrusted.returncode, untrusted.stderr)


def test_login_over_https_sets_a_secure_session_cookie(https):
    server, ca = https
    password = add_user(server, "rad1", "radiologist")
    web = WebSession(server)
    web.verify = str(ca)
    web.trust_env = False           # REQUESTS_CA_BUNDLE would win over the session's CA
    signed_in = web.login("rad1", password)
    assert signed_in.status_code == 302, signed_in.text[:300]
    cookie = next(c for c in web.cookies if c.name == "dsmpacs_session")
    assert cookie.secure
    assert "Secure" in signed_in.headers["Set-Cookie"]
    assert signed_in.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert web.get("/").status_code == 200


def test_plain_http_and_tls_1_1_are_refused(https):
    server, ca = https
    # Plain HTTP on the HTTPS port: a plain-text 400 that says why, then the connection closes.
    with socket.create_connection(("127.0.0.1", server.web_port), timeout=10) as sock:
        sock.sendall(b"GET /login HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ") and b"HTTPS" in answer

    require(shutil.which("openssl") is not None, "openssl not installed")
    old = subprocess.run(["openssl", "s_client", "-tls1_1", "-connect", f"127.0.0.1:{server.web_port}"],
                         input="", capture_output=True, text=True, timeout=30)
    assert old.returncode != 0 and "protocol version" in (old.stdout + old.stderr)
    new = subprocess.run(["openssl", "s_client", "-tls1_2", "-CAfile", str(ca), "-verify_return_error",
                          "-connect", f"127.0.0.1:{server.web_port}"],
                         input="", capture_output=True, text=True, timeout=30)
    assert new.returncode == 0 and "Verify return code: 0 (ok)" in new.stdout, new.stdout[-2000:]

    # Python's ssl, capped at TLS 1.1, is refused as well.
    ctx = ssl.create_default_context(cafile=str(ca))
    with warnings.catch_warnings():             # Python warns that TLS 1.1 is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):
        with socket.create_connection(("127.0.0.1", server.web_port), timeout=10) as raw:
            ctx.wrap_socket(raw, server_hostname="127.0.0.1").close()
    assert requests.get(server.url("/-/health"), verify=str(ca), timeout=10).status_code in (200, 503)


def test_silent_and_slow_clients_do_not_stop_the_server(https):
    server, ca = https
    # 200 connections that never say anything cost no worker thread (web_threads is 8).
    silent = [socket.create_connection(("127.0.0.1", server.web_port), timeout=10) for _ in range(200)]
    try:
        started = time.monotonic()
        assert requests.get(server.url("/login"), verify=str(ca), timeout=10).status_code == 200
        assert time.monotonic() - started < 2
    finally:
        for sock in silent:
            sock.close()
    # A client that trickles its handshake byte by byte is cut off once web_timeout (2 s)
    # has passed since it started, although it never stays quiet for long.
    hello = bytes.fromhex("16030100")        # the start of a TLS record, never finished
    with socket.create_connection(("127.0.0.1", server.web_port), timeout=10) as sock:
        started = time.monotonic()
        cut = None
        for byte in hello * 40:
            try:
                sock.send(bytes([byte]))
                readable = socket.socket.recv(sock, 1, socket.MSG_DONTWAIT)
            except BlockingIOError:
                readable = None
            except (ConnectionResetError, BrokenPipeError):
                readable = b""
            if readable is not None:
                cut = time.monotonic() - started
                break
            time.sleep(0.25)
    assert cut is not None, "the server kept a trickling client for 40 s"
    assert 1.5 < cut < 5, cut


def _spki_hash(cert_pem: Path) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def test_chromium_loads_the_login_page_over_https(https, playwright, tmp_path):
    """Chromium takes no CA file on its command line. It is told to trust the one key
    of our local CA (--ignore-certificate-errors-spki-list with the CA's SPKI hash), which
    it checks against the chain the server presents: the same CA-signed certificate a
    browser with the CA imported would accept, and without that pin it refuses."""
    server, ca = https
    path = chromium_path()
    from playwright.sync_api import Error

    password = add_user(server, "rad2", "radiologist")
    pinned = playwright.chromium.launch(executable_path=path, headless=True,
                                        args=ARGS + [f"--ignore-certificate-errors-spki-list={_spki_hash(ca)}"])
    plain = playwright.chromium.launch(executable_path=path, headless=True, args=ARGS)
    try:
        page = pinned.new_context().new_page()
        response = page.goto(server.url("/login"))
        assert response.status == 200
        assert response.headers["strict-transport-security"] == "max-age=31536000"
        page.fill("input[name=username]", "rad2")
        page.fill("input[name=password]", password)
        page.click("[data-login-form] button[type=submit]")
        page.wait_for_selector("[data-action=logout]")
        cookie = next(c for c in page.context.cookies() if c["name"] == "dsmpacs_session")
        assert cookie["secure"] is True
        with pytest.raises(Error, match="ERR_CERT_AUTHORITY_INVALID"):
            plain.new_context().new_page().goto(server.url("/login"))
    finally:
        pinned.close()
        plain.close()


def test_web_tls_without_a_certificate_says_what_to_run(tmp_path):
    from dsmpacs import checks
    from dsmpacs.settings import Settings

    settings = Settings(data_dir=tmp_path, web_tls=True, web_host="127.0.0.1", web_port=0, dicom_port=0)
    assert any("web_tls is on but there is no certificate" in p and "dsmpacs tls init" in p
               for p in checks.port_problems(settings))
    refused = subprocess.run([sys.executable, "-m", "dsmpacs", "--data-dir", str(tmp_path), "--set", "web_tls=true",
                              "--set", "web_port=0", "serve", "--only", "web"],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "dsmpacs tls init" in refused.stderr, refused.stderr
    tls_init(tmp_path)
    assert not any("web_tls" in p for p in checks.port_problems(settings))


def test_an_anonymous_upload_over_https_is_refused_unread(https):
    from tests import rawhttp

    server, ca = https
    total = 200 * 2**20
    response = rawhttp.request("127.0.0.1", server.web_port, "POST", "/dicom-web/studies",
                               {"Content-Type": 'multipart/related; type="application/dicom"; boundary=B',
                                "Content-Length": str(total)}, rawhttp.zeros(total),
                               tls=ssl.create_default_context(cafile=str(ca)))
    assert response.status == 401 and response.closed
    assert response.headers["connection"] == "close"
    assert response.headers["strict-transport-security"] == "max-age=31536000"
    assert response.sent < total // 10


def test_server_module_is_pinned_to_the_installed_and_constrained_cheroot():
    """web/server.py overrides cheroot internals: it runs only on the version it was
    written against, which is the one installed and pinned."""
    import re
    from importlib.metadata import version

    from dsmpacs.web import server

    assert version("cheroot") == server.WRITTEN_FOR
    root = Path(__file__).resolve().parents[1]
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (root / "constraints.txt").read_text(), re.M))
    assert pins["cheroot"] == server.WRITTEN_FOR
    with pytest.raises(server.ServerVersionError, match=r"written against cheroot 11\.1\.2.*12\.0\.0"):
        server.check_version("12.0.0")
