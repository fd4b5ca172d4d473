"""CORS for DICOMweb (web_cors_origins) against a real `dsmpacs serve --only web`:
raw HTTP for the headers, and headless Chromium on a page of another origin (a
second loopback HTTP server: another port is another origin) for what a
browser actually lets a script do."""
from __future__ import annotations

import functools
import http.server
import json
import threading
from urllib.parse import quote

import pytest
import requests

from dsmpacs.archive.ingest import Origin
from dsmpacs.settings import Settings, SettingsError
from tests import factories as f
from tests.peers import ServerProcess
from tests.test_dicomweb_http import stow_body
from tests.webclient import add_user, server_archive

PASSWORD = "correct horse battery"
QIDO_ACCEPT = "application/dicom+json"

# The other origin's page: fetch QIDO-RS with a Basic Authorization header, as
# dicomweb-client does for OHIF, and write what came of it into the page.
PORTAL_PAGE = """<!doctype html>
<html><body><p id="result">pending</p><script>
const cfg = JSON.parse(decodeURIComponent(location.hash.slice(1)));
const out = document.getElementById("result");
fetch(cfg.archive + "/dicom-web/studies?PatientID=" + cfg.patient, {
  headers: {"Authorization": "Basic " + btoa(cfg.user + ":" + cfg.password),
            "Accept": "application/dicom+json"}})
  .then(r => r.ok ? r.json().then(studies => { out.textContent = "studies:" + studies.length; })
                  : (out.textContent = "status:" + r.status))
  .catch(e => { out.textContent = "failed:" + e.name; });
</script></body></html>
"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def portals(tmp_path_factory):
    """Two static sites on loopback: the allowed origin and a stranger."""
    root = tmp_path_factory.mktemp("portal")
    (root / "portal.html").write_text(PORTAL_PAGE)
    handler = functools.partial(_Quiet, directory=str(root))
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) for _ in range(2)]
    for srv in servers:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield [f"http://127.0.0.1:{srv.server_address[1]}" for srv in servers]
    finally:
        for srv in servers:
            srv.shutdown()
            srv.server_close()


@pytest.fixture(scope="module")
def env(tmp_path_factory, portals):
    allowed, _stranger = portals
    root = tmp_path_factory.mktemp("cors")
    server = ServerProcess(root / "server", {"web_cors_origins": f"https://ohif.example.org, {allowed}"},
                           only="web").start()
    try:
        add_user(server, "viewer1", "viewer", PASSWORD)
        add_user(server, "rad1", "radiologist", PASSWORD)
        with server_archive(server) as archive:
            path = f.write(f.secondary_capture(size=8, patient=f.Patient(patient_id="CORS1")), root / "sc.dcm")
            assert archive.ingest.import_file(path, Origin("import")).archived
        yield server
    finally:
        server.stop()


def preflight(server, path, origin, method="GET"):
    return requests.options(server.url(path), timeout=20, headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization,accept"})


def cors_headers(response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


def vary(response) -> set[str]:
    return {v.strip().lower() for v in response.headers.get("Vary", "").split(",") if v.strip()}


def test_preflight_from_allowed_origin_is_answered_without_credentials(env, portals):
    allowed = portals[0]
    for path in ("/dicom-web/studies", "/dicom-web/studies/1.2.3/series", "/wado"):
        r = preflight(env, path, allowed)
        assert r.status_code == 204, (path, r.status_code, r.text)
        assert r.headers["Access-Control-Allow-Origin"] == allowed
        assert "origin" in vary(r)
        methods = {m.strip() for m in r.headers["Access-Control-Allow-Methods"].split(",")}
        assert {"GET", "POST", "OPTIONS"} <= methods
        allowed_headers = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "accept", "content-type"} <= allowed_headers
        assert int(r.headers["Access-Control-Max-Age"]) > 0
        assert "Access-Control-Allow-Credentials" not in r.headers
    # The second listed origin, written with a default port, is allowed as browsers send it.
    assert preflight(env, "/dicom-web/studies", "https://ohif.example.org").status_code == 204


def test_preflight_from_other_origin_gets_no_allow_headers(env, portals):
    stranger = portals[1]
    for origin in (stranger, "https://ohif.example.org.evil.test", "null"):
        r = preflight(env, "/dicom-web/studies", origin)
        assert r.status_code == 401, (origin, r.status_code)
        assert cors_headers(r) == {}, origin


def test_responses_to_allowed_origin_carry_the_origin(env, portals):
    allowed, stranger = portals
    auth = ("viewer1", PASSWORD)
    r = requests.get(env.url("/dicom-web/studies?PatientID=CORS1"), auth=auth, timeout=20,
                     headers={"Origin": allowed, "Accept": QIDO_ACCEPT})
    assert r.status_code == 200 and len(r.json()) == 1
    assert r.headers["Access-Control-Allow-Origin"] == allowed
    assert "origin" in vary(r)
    assert "warning" in r.headers["Access-Control-Expose-Headers"].lower()
    assert "Access-Control-Allow-Credentials" not in r.headers
    # A refusal is readable by the allowed page too (it can tell the user why).
    r = requests.get(env.url("/dicom-web/studies"), timeout=20, headers={"Origin": allowed})
    assert r.status_code == 401 and r.headers["Access-Control-Allow-Origin"] == allowed
    # Another origin, or none (same origin, curl): the same answer without CORS headers.
    for headers in ({"Origin": stranger}, {}):
        r = requests.get(env.url("/dicom-web/studies?PatientID=CORS1"), auth=auth, timeout=20,
                         headers={"Accept": QIDO_ACCEPT, **headers})
        assert r.status_code == 200 and len(r.json()) == 1
        assert cors_headers(r) == {}, headers


def test_stow_from_allowed_site_is_accepted_and_from_another_refused(env, portals, tmp_path):
    allowed, stranger = portals
    for origin, expected in ((stranger, 403), (allowed, 200)):
        path = f.write(f.secondary_capture(size=8, patient=f.Patient(patient_id="CORS2")), tmp_path / "s.dcm")
        body, ctype = stow_body([path])
        # What Chromium sends with a script's cross-site POST.
        r = requests.post(env.url("/dicom-web/studies"), data=body, auth=("rad1", PASSWORD), timeout=20,
                          headers={"Content-Type": ctype, "Origin": origin, "Sec-Fetch-Site": "cross-site",
                                   "Accept": QIDO_ACCEPT})
        assert r.status_code == expected, (origin, r.status_code, r.text)
        assert (r.headers.get("Access-Control-Allow-Origin") == origin) == (origin == allowed)


def test_ui_pages_never_get_cors_headers(env, portals):
    allowed = portals[0]
    r = requests.get(env.url("/login"), timeout=20, headers={"Origin": allowed, "Accept": "text/html"})
    assert r.status_code == 200 and cors_headers(r) == {}
    r = preflight(env, "/", allowed)
    assert r.status_code != 204 and cors_headers(r) == {}
    r = preflight(env, "/dicom-webx", allowed)
    assert cors_headers(r) == {}


def test_nothing_allowed_when_the_setting_is_empty(server_factory, portals):
    server = server_factory(only="web")
    add_user(server, "viewer1", "viewer", PASSWORD)
    r = preflight(server, "/dicom-web/studies", portals[0])
    assert r.status_code == 401 and cors_headers(r) == {}
    r = requests.get(server.url("/dicom-web/studies"), auth=("viewer1", PASSWORD), timeout=20,
                     headers={"Origin": portals[0], "Accept": QIDO_ACCEPT})
    assert r.status_code == 204 and cors_headers(r) == {}     # served (an empty archive), no CORS


@pytest.mark.parametrize("value", ["*", "https://host/path", "ftp://host", "null", "https://"])
def test_setting_refuses_what_is_not_an_origin(value):
    with pytest.raises(SettingsError, match="web_cors_origins"):
        Settings(web_cors_origins=value)


def portal_result(page, portal: str, archive: str) -> str:
    cfg = {"archive": archive, "user": "viewer1", "password": PASSWORD, "patient": "CORS1"}
    page.goto(f"{portal}/portal.html#{quote(json.dumps(cfg))}")
    page.wait_for_function("document.getElementById('result').textContent !== 'pending'")
    return page.text_content("#result")


def test_browser_on_allowed_origin_reads_studies(env, portals, page):
    assert portal_result(page, portals[0], env.web_url) == "studies:1"


def test_browser_on_other_origin_is_blocked(env, portals, page):
    assert portal_result(page, portals[1], env.web_url) == "failed:TypeError"
