"""Behind a real nginx configured as DSM 7's reverse proxy writes it (Control Panel >
Login Portal > Advanced > Reverse Proxy: HTTPS source, http://localhost:PORT
destination, the WebSocket custom headers), terminating TLS with a certificate from
`dsmpacs tls init`, in front of `dsmpacs serve --only web` with
web_trusted_proxy=127.0.0.1. The app sees the client's address (audit trail), and
sets Secure cookies and HSTS; a client that bypasses the proxy cannot claim an
address or HTTPS with forwarding headers of its own."""
from __future__ import annotations

import http.client
import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest

from dsmpacs.archive.audit import AuditTrail
from tests.peers import ServerProcess, free_port, require
from tests.test_web_https import tls_init
from tests.webclient import CSRF_RE, add_user, server_archive

CLIENT = "127.0.0.5"        # the browser's address, as nginx sees it (all of 127/8 is loopback)
BYPASS = "127.0.0.7"        # a client talking to the web server directly

# The server block DSM 7 renders into /etc/nginx/sites-enabled/server.ReverseProxy.conf for
# one rule (source https://*:PORT, destination http://localhost:BACKEND, custom headers
# "WebSocket"), with paths and ports of this test. $connection_upgrade is DSM's map.
NGINX_CONF = """
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}

    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;

        location / {{
            proxy_connect_timeout 60;
            proxy_read_timeout 60;
            proxy_send_timeout 60;
            proxy_intercept_errors off;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_pass http://localhost:{backend};
        }}
    }}
}}
"""


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file() else None)
    require(nginx is not None, "nginx not installed (apt-get install nginx-light)")
    root = tmp_path_factory.mktemp("nginx")
    ca = tls_init(root / "server")
    server = ServerProcess(root / "server", {"web_trusted_proxy": "127.0.0.1"}, only="web").start()
    conf_dir = root / "nginx"
    conf_dir.mkdir()
    port = free_port()
    conf = conf_dir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=conf_dir, port=port, backend=server.web_port,
                                      cert=root / "server" / "tls" / "server.pem",
                                      key=root / "server" / "tls" / "server.key"))
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(conf_dir), "-e", str(conf_dir / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"nginx exited: {proc.stderr.read().decode()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not listen"
                time.sleep(0.05)
        yield server, port, ca
    finally:
        proc.terminate()
        proc.wait(10)
        server.stop()


class Client:
    """A browser from one address: cookies and the CSRF token carried along, over
    http.client (requests cannot choose its source address)."""

    def __init__(self, connect):
        self.connect = connect
        self.cookies: dict[str, str] = {}
        self.token = ""

    def request(self, method: str, path: str, form: dict | None = None, headers: dict | None = None):
        conn = self.connect()
        try:
            hdrs = {"Accept": "text/html", **(headers or {})}
            if self.cookies:
                hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            body = None
            if form is not None:
                body = urlencode({**form, "csrf_token": self.token})
                hdrs["Content-Type"] = "application/x-www-form-urlencoded"
            conn.request(method, path, body=body, headers=hdrs)
            response = conn.getresponse()
            text = response.read().decode("utf-8", "replace")
        finally:
            conn.close()
        for value in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        if found := CSRF_RE.search(text):
            self.token = found.group(1)
        return response, text

    def login(self, username: str, password: str, headers: dict | None = None):
        self.request("GET", "/login", headers=headers)
        return self.request("POST", "/login", {"username": username, "password": password, "next": "/"},
                            headers=headers)


def via_nginx(proxied) -> Client:
    _, port, ca = proxied
    ctx = ssl.create_default_context(cafile=str(ca))
    return Client(lambda: http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30,
                                                      source_address=(CLIENT, 0)))


def direct(proxied) -> Client:
    server = proxied[0]
    return Client(lambda: http.client.HTTPConnection("127.0.0.1", server.web_port, timeout=30,
                                                     source_address=(BYPASS, 0)))


def records(server, actor: str, action: str):
    with server_archive(server) as archive:
        return AuditTrail(archive.index).recent(actor=actor, action=action, limit=20)


def secure_cookie(response) -> bool:
    cookie = next(v for v in response.headers.get_all("Set-Cookie") if v.startswith("dsmpacs_session="))
    return bool(re.search(r";\s*Secure(;|$)", cookie))


def test_behind_nginx_the_app_sees_the_client_and_https(proxied):
    server = proxied[0]
    password = add_user(server, "rad1", "radiologist")
    browser = via_nginx(proxied)
    page, _ = browser.request("GET", "/login")
    assert page.status == 200
    assert page.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert secure_cookie(page)

    # A wrong password: the failure is audited with the client's address, not nginx's,
    # even when the client sends an X-Forwarded-For of its own (nginx appends the real one).
    failed, _ = browser.login("rad1", "wrong", headers={"X-Forwarded-For": "10.9.9.9"})
    assert failed.status == 401
    assert [r.address for r in records(server, "rad1", "login-failed")] == [CLIENT]

    signed_in, _ = browser.login("rad1", password)
    assert signed_in.status == 302, signed_in.status
    assert secure_cookie(signed_in)
    assert signed_in.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert [r.address for r in records(server, "rad1", "login")] == [CLIENT]
    home, text = browser.request("GET", "/")
    assert home.status == 200 and "data-action" in text and "logout" in text


def test_a_client_bypassing_the_proxy_cannot_claim_an_address_or_https(proxied):
    server = proxied[0]
    add_user(server, "rad2", "radiologist")
    spoofer = direct(proxied)
    claims = {"X-Forwarded-For": "10.1.1.1", "X-Forwarded-Proto": "https", "X-Real-IP": "10.1.1.1"}
    page, _ = spoofer.request("GET", "/login", headers=claims)
    assert page.status == 200
    assert "Strict-Transport-Security" not in page.headers
    assert not secure_cookie(page)
    failed, _ = spoofer.login("rad2", "wrong", headers=claims)
    assert failed.status == 401
    assert [r.address for r in records(server, "rad2", "login-failed")] == [BYPASS]
