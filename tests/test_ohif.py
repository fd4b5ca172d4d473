"""OHIF at /ohif/ (web/ohif.py) on a stand-in build, and its fetch (cli/ohif.py):
signed-in users only; index.html, the webpack public path and the stylesheets'
root URLs moved under /ohif/; our app-config.js pointing at /dicom-web; no way
out of the build directory; off (404) without ohif_dir. The fetch refuses a
tarball whose sha512 is not the pinned one and unpacks only its dist/; .ci/ohif
pins the same version and hash. The real build in a real browser:
test_ohif_browser.py."""
from __future__ import annotations

import base64
import hashlib
import io
import re
import tarfile

import pytest
from click.testing import CliRunner

from dsmpacs.cli import main
from dsmpacs.cli import ohif as fetcher
from dsmpacs.web.app import create_app
from tests.peers import ROOT
from tests.webclient import client_as

INDEX = ('<!doctype html><html><head><script>window.PUBLIC_URL="/"</script>'
         '<link rel="manifest" href="/manifest.json"><script src="/app-config.js"></script>'
         '<script defer src="/app.bundle.1.js"></script><link href="/app.bundle.css" rel="stylesheet">'
         '<a href="//elsewhere.example/x">x</a></head><body><div id="root"></div></body></html>')
BUNDLE = b'var x = 1;\n__webpack_require__.p = "/";\nvar y = 2;\n'


@pytest.fixture
def database_url(tmp_path):
    """SQLite only: serving OHIF's files reads nothing from the index but the session."""
    return f"sqlite:///{tmp_path / 'index.sqlite3'}"


@pytest.fixture
def build(tmp_path):
    root = tmp_path / "ohif"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text(INDEX)
    (root / "app.bundle.1.js").write_bytes(BUNDLE)
    (root / "plain.js").write_bytes(b"console.log('/');\n")
    (root / "app.bundle.css").write_bytes(b"@font-face{src:url(/a.woff2)}.x{background:url(//cdn/x.png)}")
    (root / "sub" / "a.wasm").write_bytes(b"\0asm")
    (tmp_path / "secret.txt").write_text("not OHIF")
    return root


@pytest.fixture
def ohif_client(settings, archive, build):
    app = create_app(settings.with_overrides(ohif_dir=build), archive)
    app.testing = True
    return app.test_client()


def test_anonymous_gets_the_login_page_or_401(ohif_client):
    page = ohif_client.get("/ohif/", headers={"Accept": "text/html"})
    assert page.status_code == 401 and 'name="password"' in page.get_data(as_text=True)
    for path in ("/ohif/app-config.js", "/ohif/app.bundle.1.js", "/ohif/viewer?StudyInstanceUIDs=1.2"):
        assert ohif_client.get(path).status_code == 401, path


def test_signed_in_user_gets_the_build_under_ohif(ohif_client, archive):
    client_as(ohif_client, archive, "viewer")
    for path in ("/ohif/", "/ohif/viewer?StudyInstanceUIDs=1.2.3"):       # the app's own routes
        page = ohif_client.get(path)
        assert page.status_code == 200 and page.mimetype == "text/html", path
        body = page.get_data(as_text=True)
        assert "<script>" not in body                                     # CSP: no inline script
        assert re.findall(r'(?:href|src)="([^"]*)"', body) == [
            "/ohif/manifest.json", "/ohif/app-config.js", "/ohif/app.bundle.1.js", "/ohif/app.bundle.css",
            "//elsewhere.example/x"]
        assert "'unsafe-eval'" not in page.headers["Content-Security-Policy"]
        assert page.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    config = ohif_client.get("/ohif/app-config.js").get_data(as_text=True)
    assert 'window.PUBLIC_URL = "/ohif/";' in config and '"routerBasename": "/ohif"' in config
    assert 'origin + "/dicom-web"' in config and '"qidoSupportsIncludeField": true' in config
    bundle = ohif_client.get("/ohif/app.bundle.1.js")
    assert bundle.get_data() == BUNDLE.replace(b'p = "/"', b'p = "/ohif/"')
    assert bundle.mimetype == "text/javascript" and bundle.headers["Cache-Control"] == "private, no-cache"
    again = ohif_client.get("/ohif/app.bundle.1.js", headers={"If-None-Match": bundle.headers["ETag"]})
    assert again.status_code == 304
    assert ohif_client.get("/ohif/plain.js").get_data() == b"console.log('/');\n"       # untouched
    assert ohif_client.get("/ohif/app.bundle.css").get_data() == \
        b"@font-face{src:url(/ohif/a.woff2)}.x{background:url(//cdn/x.png)}"
    wasm = ohif_client.get("/ohif/sub/a.wasm")
    assert wasm.mimetype == "application/wasm" and wasm.get_data() == b"\0asm"
    for path in ("/ohif/missing.js", "/ohif/../secret.txt", "/ohif/%2e%2e/secret.txt", "/ohif/sub/../../secret.txt"):
        answer = ohif_client.get(path)
        assert answer.status_code == 404 and b"not OHIF" not in answer.get_data(), path


def test_without_ohif_dir_there_is_no_ohif(client, archive):
    client_as(client, archive, "viewer")
    assert client.get("/ohif/").status_code == 404
    assert client.get("/ohif/app-config.js").status_code == 404


def _tarball(path, files: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def test_fetch_checks_the_pinned_hash_and_unpacks_only_dist(tmp_path, monkeypatch):
    tgz = tmp_path / "app.tgz"
    integrity = _tarball(tgz, {"package/package.json": b"{}", "package/dist/index.html": b"<html>",
                               "package/dist/js/a.js": b"a"})
    target = tmp_path / "build"
    runner = CliRunner()
    refused = runner.invoke(main, ["ohif", "fetch", "--dir", str(target), "--tarball", str(tgz)])
    assert refused.exit_code == 1 and "not the pinned" in refused.output and not target.exists()

    monkeypatch.setattr(fetcher, "OHIF_INTEGRITY", integrity)
    done = runner.invoke(main, ["ohif", "fetch", "--dir", str(target), "--tarball", str(tgz)])
    assert done.exit_code == 0, done.output
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == [
        ".dsmpacs-ohif", "index.html", "js", "js/a.js"]
    assert fetcher.installed(target)
    assert runner.invoke(main, ["ohif", "fetch", "--dir", str(target)]).output.endswith("already there\n")
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    kept = runner.invoke(main, ["ohif", "fetch", "--dir", str(other), "--tarball", str(tgz)])
    assert kept.exit_code == 1 and "not empty" in kept.output and (other / "keep.txt").read_text() == "mine"


def test_ci_fetches_the_same_pinned_build():
    script = (ROOT / ".ci" / "ohif").read_text()
    assert f"OHIF_VERSION={fetcher.OHIF_VERSION}\n" in script
    assert f"OHIF_INTEGRITY={fetcher.OHIF_INTEGRITY}\n" in script
    assert "\n.ci/ohif\n" in (ROOT / ".ci" / "run").read_text()
