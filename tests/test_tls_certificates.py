"""`dsmpacs tls`: the local CA, issued and imported certificates, and the BCP 195
contexts built from them, checked with OpenSSL's own tools and real handshakes."""
from __future__ import annotations

import socket
import ssl
import subprocess
import threading

import pytest
from click.testing import CliRunner

from dsmpacs.archive.audit import AuditTrail
from dsmpacs.cli import main
from dsmpacs.tls import TlsFiles, TlsNotConfigured, client_context, server_context
from dsmpacs.tls.authority import AuthorityError, import_identity, trust
from tests.peers import tool


def run(settings, *args):
    return CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), "--set",
                                     f"database_url={settings.effective_database_url}", *args],
                              catch_exceptions=False)


@pytest.fixture
def initialised(settings):
    done = run(settings, "tls", "init", "--host", "127.0.0.1", "--host", "pacs.example")
    assert done.exit_code == 0, done.output
    return settings


def openssl(*args, input=None):
    return subprocess.run([tool("openssl"), *map(str, args)], capture_output=True, text=True,
                          input=input, timeout=60)


def test_init_creates_a_ca_and_a_server_certificate_openssl_accepts(initialised, archive):
    files = TlsFiles.of(initialised)
    verified = openssl("verify", "-CAfile", files.ca_cert, "-purpose", "sslserver",
                       "-verify_ip", "127.0.0.1", files.server_cert)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    wrong_host = openssl("verify", "-CAfile", files.ca_cert, "-verify_ip", "10.9.9.9",
                         files.server_cert)
    assert wrong_host.returncode != 0
    # Private keys are for the service user alone.
    for key in (files.ca_key, files.server_key):
        assert key.stat().st_mode & 0o077 == 0, key
    assert files.directory.stat().st_mode & 0o077 == 0
    assert "tls-change" in {r.action for r in AuditTrail.of(archive).recent(limit=20)}


def test_init_refuses_to_replace_existing_certificates(initialised):
    again = run(initialised, "tls", "init", "--host", "127.0.0.1")
    assert again.exit_code != 0 and "--force" in again.output


def test_issue_signs_a_client_certificate_with_the_local_ca(initialised, tmp_path):
    done = run(initialised, "tls", "issue", "modality", "--host", "10.1.2.3", "--out", tmp_path / "m")
    assert done.exit_code == 0, done.output
    verified = openssl("verify", "-CAfile", tmp_path / "m" / "ca.pem", "-purpose", "sslclient",
                       tmp_path / "m" / "modality.pem")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_import_refuses_a_key_that_is_not_the_certificates(initialised, tmp_path):
    files = TlsFiles.of(initialised)
    run(initialised, "tls", "issue", "other", "--out", tmp_path / "o")
    with pytest.raises(AuthorityError, match="is not the key"):
        import_identity(files, files.server_cert, tmp_path / "o" / "other.key")
    with pytest.raises(AuthorityError, match="not a CA"):
        trust(files, tmp_path / "o" / "other.pem")


def _serve_once(ctx: ssl.SSLContext):
    """A TLS server on an ephemeral port that completes one handshake and reports."""
    listener = socket.create_server(("127.0.0.1", 0))
    result = {}

    def accept():
        conn, _ = listener.accept()
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                result["version"] = tls.version()
                result["peer"] = tls.getpeercert()
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            result["error"] = exc
        finally:
            listener.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread, result


def test_contexts_handshake_and_refuse_tls_1_1(initialised):
    port, thread, result = _serve_once(server_context(initialised, verify_clients=True))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with client_context(initialised).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.recv(2) == b"ok"
    thread.join(10)
    assert result["version"] in ("TLSv1.2", "TLSv1.3")
    assert result["peer"], "the archive's own certificate goes along as its client certificate"

    port, thread, result = _serve_once(server_context(initialised))
    old = openssl("s_client", "-connect", f"127.0.0.1:{port}", "-tls1_1", input="")
    thread.join(10)
    assert "error" in result and old.returncode != 0


def test_client_context_checks_the_host_name(initialised):
    port, thread, result = _serve_once(server_context(initialised))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            client_context(initialised).wrap_socket(raw, server_hostname="elsewhere.example")
    thread.join(10)


def test_contexts_need_certificates(settings):
    with pytest.raises(TlsNotConfigured, match="dsmpacs tls init"):
        server_context(settings)
    with pytest.raises(TlsNotConfigured):
        client_context(settings)
