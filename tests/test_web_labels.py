"""No English left in the Chinese UI: every administration and study page is rendered
in English and in Chinese over an archive holding the values that used to stay
English (a quarantined copy, a failed echo, a corrupt instance, audit rows of many
kinds, form errors); every English catalog text the English page shows must be
gone from the Chinese page, and so must the stored English domain values."""
from __future__ import annotations

import re
import socket
from html.parser import HTMLParser

import pytest

from dsmpacs.archive import maintenance
from dsmpacs.archive.ingest import CONFLICT_REASON, Origin
from dsmpacs.archive.visibility import DEFAULT_CODE
from dsmpacs.web import i18n, labels
from tests import factories as f
from tests.webclient import client_as, client_csrf

HTML = {"Accept": "text/html"}
SHOWN_ATTRIBUTES = ("title", "placeholder", "aria-label", "alt", "data-confirm")


class _Text(HTMLParser):
    """What a reader sees: text outside script and style, and the attributes a
    browser shows (tooltips, placeholders, confirm questions)."""

    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.hidden += 1
        self.parts += [v for k, v in attrs if k in SHOWN_ATTRIBUTES and v]

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.hidden -= 1

    def handle_data(self, data):
        if not self.hidden:
            self.parts.append(data)


def visible_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return re.sub(r"\s+", " ", " ".join(parser.parts))


def english_phrases() -> set[str]:
    """The fixed pieces of every English catalog text (split at placeholders) that
    read as English words, except texts Chinese shares (names like config.toml)."""
    english, chinese = i18n.catalog("en"), i18n.catalog("zh-Hans")
    phrases = set()
    for key, text in english.items():
        if text == chinese[key]:
            continue
        for form in (text.values() if isinstance(text, dict) else [text]):
            for piece in re.split(r"\{\w*\}", form):
                piece = piece.strip(" .,:;()")
                if len(re.findall(r"[A-Za-z]{2,}", piece)) >= 2 or re.fullmatch(r"[A-Za-z][a-z]{3,}", piece):
                    phrases.add(piece)
    # Identifiers shown as typed, like AE titles, that happen to be English words: the
    # default institution's code (its name is translated: labels.institution_name).
    return phrases - {DEFAULT_CODE}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def populated(client, archive, tmp_path):
    """An archive and a signed-in administrator with every kind of value to translate."""
    client_as(client, archive, "admin", "root")
    # DICOM text that is not a catalog word (the factory's "Study" would read as one)
    data = {"study_description": "Carotid angio", "series_description": "Left ICA"}
    first = f.secondary_capture(patient=f.Patient(name="Wang^Xiaoming", patient_id="P1"), **data)
    conflict = f.secondary_capture(sop_uid=first.SOPInstanceUID, study_uid=first.StudyInstanceUID, **data)
    other = f.secondary_capture(study_uid=first.StudyInstanceUID, series_uid=first.SeriesInstanceUID, **data)
    for name, ds in (("a", first), ("b", conflict), ("c", other)):
        archive.ingest.import_file(f.write(ds, tmp_path / f"{name}.dcm"), Origin("import"))
    # a corrupt instance: its stored file changed under it, found by a verification pass
    stored = archive.storage.path(archive.index.find_instance(other.SOPInstanceUID).path)
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0xFF
    stored.write_bytes(bytes(data))
    assert not maintenance.verify(archive).ok

    token = client_csrf(client, "/admin/peers")
    # a peer at a port nobody listens on (its echo fails for real), and a refused form
    for form in ({"name": "gone", "ae_title": "GONE", "host": "127.0.0.1", "port": str(closed_port()),
                  "is_move_destination": "on"},
                 {"name": "bad", "ae_title": "BAD", "host": "127.0.0.1", "port": "99999"}):
        client.post("/admin/peers", data={**form, "csrf_token": token}, headers=HTML)
    client.post("/admin/users", data={"username": "rad1", "role": "radiologist", "password": "",
                                      "csrf_token": token}, headers=HTML)
    client.get("/studies?patient_name=wang", headers=HTML)
    client.get(f"/studies/{first.StudyInstanceUID}", headers=HTML)
    return client, first.StudyInstanceUID


def render(client, lang: str, path: str, post: bool = False) -> str:
    client.set_cookie(i18n.COOKIE, lang)
    if post:
        token = client_csrf(client, "/admin/peers")
        response = client.post(path, data={"csrf_token": token}, headers=HTML, follow_redirects=True)
    else:
        response = client.get(path, headers=HTML)
    assert response.status_code in (200, 400), (path, response.status_code)
    return visible_text(response.get_data(as_text=True))


def chinese_patient_row(client, study: str) -> int:
    """The patient page's row id, as the study page links it."""
    client.set_cookie(i18n.COOKIE, "en")
    found = re.search(r'href="/patients/(\d+)"', client.get(f"/studies/{study}", headers=HTML).get_data(as_text=True))
    assert found
    return int(found.group(1))


def test_no_english_text_remains_on_chinese_pages(populated):
    client, study = populated
    patient = chinese_patient_row(client, study)
    phrases = english_phrases()
    assert {"Sign-in", "the file no longer matches its checksum", "cannot connect to"} <= phrases
    pages = {
        "storage": ("/admin/storage", False, ["the file no longer matches its checksum", "stored instance is corrupt"]),
        "activity": ("/admin/activity", False, []),
        "echo": ("/admin/peers/echo/gone", True, ["C-ECHO to gone failed", "cannot connect to 127.0.0.1:"]),
        "peers": ("/admin/peers", False, ["Remote AEs"]),
        "policy": ("/admin/policy", False, ["remote AE is registered"]),
        "users": ("/admin/users", False, ["Radiologist", "Default institution"]),
        "quarantine": ("/admin/quarantine", False, [CONFLICT_REASON, "import"]),
        "audit": ("/admin/audit", False, ["Remote AE added", "Echo test", "Network Entry", "Failed sign-in",
                                          "administrator", "cannot connect to", "study page",
                                          "study list, STUDY level: PatientName=wang"]),
        "studies": ("/studies", False, ["1 study, the latest study date first"]),
        "study": (f"/studies/{study}", False, ["2 frames", "damaged in storage", "Explicit VR Little Endian"]),
        "account": ("/account", False, ["Change password"]),
        "peer edit": ("/admin/peers/edit/gone", False, ["Edit remote AE"]),
        "delete": (f"/studies/{study}/delete", False, ["1 series, 2 instances"]),
        "patient": (f"/patients/{patient}", False, ["1 series, 2 instances"]),
        "viewer": (f"/viewer?study={study}", False, ["Window presets"]),
    }
    # A failed echo, on the Chinese page too (its flash is shown once), and a refused peer form.
    seen: dict[str, tuple[str, str]] = {}
    for name, (path, post, expected) in pages.items():
        english = render(client, "en", path, post)
        chinese = render(client, "zh-Hans", path, post)
        for value in expected:          # the fixtures really put these values on the page
            assert value in english, (name, value, english[:3000])
        shown = {p for p in phrases if re.search(r"(?<![A-Za-z_])" + re.escape(p) + r"(?![A-Za-z_])", english)}
        assert shown, name
        left = {p for p in shown if re.search(r"(?<![A-Za-z_])" + re.escape(p) + r"(?![A-Za-z_])", chinese)}
        assert not left, (name, sorted(left), chinese[:3000])
        seen[name] = english, chinese
    # stored English domain values never reach the Chinese pages
    for raw in (CONFLICT_REASON, "no longer matches its checksum", "User Authentication", "peer-echo",
                "association with", "audit trail page", "different content", "Default institution"):
        assert not any(raw in chinese for _e, chinese in seen.values()), raw
    assert "无法连接到 127.0.0.1:" in seen["echo"][1] and "安全警报" in seen["audit"][1]


def test_form_errors_are_translated(client, archive):
    client_as(client, archive, "admin", "root")
    token = client_csrf(client, "/admin/peers")
    client.set_cookie(i18n.COOKIE, "zh-Hans")
    response = client.post("/admin/peers", data={"name": "x", "ae_title": "X", "host": "h", "port": "99999",
                                                 "csrf_token": token}, headers=HTML)
    assert response.status_code == 400
    assert "端口 99999 不在 1 到 65535 之间。" in visible_text(response.get_data(as_text=True))
    response = client.post("/admin/users", data={"username": "has space", "role": "viewer", "password": "",
                                                 "csrf_token": token}, headers=HTML)
    assert response.status_code == 400 and "用户名由 1 到 64 个" in visible_text(response.get_data(as_text=True))


@pytest.mark.parametrize("stored, english", [
    ("gone: association with GONE@127.0.0.1:9 was rejected or failed: cannot connect to 127.0.0.1:9",
     "gone: cannot connect to 127.0.0.1:9"),
    ("zip: 1 instances, 2048 bytes", "ZIP: 1 instance, 2.0 KiB"),
    ("3 series, 12 instances, 1048576 bytes", "3 series, 12 instances, 1.0 MiB"),
    ("to pacs: sent 2 (0 converted), failed 1: association with P was aborted",
     "to pacs: 2 sent (0 converted), 1 failed: the association was aborted"),
    ("more than 10 failed logins within a minute", "more than 10 failed sign-ins within a minute"),
    ("alice: 2 sessions (by an administrator)", "alice: 2 sessions (by an administrator)"),
    ("WADO-RS metadata", "WADO-RS metadata"),          # a protocol name: shown as stored
])
def test_recorded_details_read_in_the_language(web_app, stored, english):
    with web_app.test_request_context(headers={"Cookie": f"{i18n.COOKIE}=en"}):
        assert labels.detail(stored) == english


@pytest.mark.parametrize("stored, english, chinese", [
    ("association with P@h:1 was rejected or failed: cannot connect to h:1", "cannot connect to h:1", "无法连接到 h:1"),
    ("association with P@h:1 was rejected or failed (no connection or no answer)", "no connection or no answer",
     "无法连接或无应答"),
    ("association with P@h:1 was rejected", "the remote AE rejected the association", "远程 AE 拒绝了关联"),
    ("TLS handshake with h:2762 failed: CERTIFICATE_VERIFY_FAILED",
     "TLS handshake with h:2762 failed (CERTIFICATE_VERIFY_FAILED)", "与 h:2762 的 TLS 握手失败（CERTIFICATE_VERIFY_FAILED）"),
    ("TLS handshake with h:2762 failed: Connection reset by peer", "TLS handshake with h:2762 failed",
     "与 h:2762 的 TLS 握手失败"),
])
def test_association_failures_keep_address_and_tls_reason_code(web_app, stored, english, chinese):
    for lang, expected in (("en", english), ("zh-Hans", chinese)):
        with web_app.test_request_context(headers={"Cookie": f"{i18n.COOKIE}={lang}"}):
            key, params = labels.association_failure_message(stored)
            assert i18n._(key, **params) == expected
