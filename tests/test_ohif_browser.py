"""OHIF Viewer 3 served same-origin at /ohif/ (web/ohif.py) by a real `dsmpacs serve`,
in headless Chromium: an XA run comes in by dcmtk storescu, its report is signed
(the SR and PDF stored through the archive's ingest, as the sign button does), and
after signing in on our login page OHIF's study list shows the study and, expanded,
its series with the report's SR, all read from our /dicom-web with the session
cookie. Anonymous requests to /ohif/ get the login page or 401, never OHIF.

The build is the pinned @ohif/app (cli/ohif.py), fetched by .ci/run into
.cache/ohif/<version> (or by `dsmpacs ohif fetch --dir .cache/ohif/<version>`).
Without it the test skips, which CI turns into a failure (tests/peers.require)."""
from __future__ import annotations

import requests

from dsmpacs.archive.derived.reporting import objects_for_signature
from dsmpacs.archive.reports import Content, Reports
from dsmpacs.cli.ohif import OHIF_VERSION, installed
from tests import factories as f
from tests.browser import sign_in
from tests.peers import ROOT, require
from tests.webclient import add_user, server_archive

OHIF_DIR = ROOT / ".cache" / "ohif" / OHIF_VERSION
STUDY = "1.2.826.0.1.3680043.8.498.9801"


def ohif_build():
    require(installed(OHIF_DIR), f"no OHIF {OHIF_VERSION} build in {OHIF_DIR}: "
                                 f".venv/bin/dsmpacs ohif fetch --dir {OHIF_DIR} (.ci/run does it)")
    return OHIF_DIR


def sign_report(server, xa) -> str:
    """A signed report on the study, its SR and PDF stored by the archive's ingest. The SR's UID."""
    with server_archive(server) as archive:
        reports = Reports(archive.index)
        reports.save_draft(STUDY, "rad1", Content.parse({
            "template": "cerebral-dsa", "language": "en", "findings": "Saccular aneurysm, 4 mm.",
            "impression": "Left PCoA aneurysm.", "measurements": [],
            "key_images": [{"series": str(xa.SeriesInstanceUID), "sop": str(xa.SOPInstanceUID), "frame": 1}]}))
        signed = reports.sign(STUDY, "rad1", objects_for_signature(archive.index, archive.ingest))
    return signed.current.sr_sop_instance_uid


def series_shown(page, count: int) -> list[tuple[str, str]]:
    """(modality, description) of each series OHIF's study browser shows, once it shows ``count``."""
    script = """n => {
        const shown = [...document.querySelectorAll('[data-cy^="study-browser-thumbnail"]')].map(t => [
            t.querySelector('[data-cy=series-modality-label]')?.textContent.trim(),
            t.querySelector('[data-cy=series-description-label]')?.textContent.trim()]);
        return shown.length === n && shown.every(([m, d]) => m && d) ? shown : null;
    }"""
    return sorted(tuple(pair) for pair in page.wait_for_function(script, arg=count).json_value())


def test_ohif_lists_the_study_and_its_report_sr(server_factory, page, tmp_path):
    server = server_factory(ohif_dir=str(ohif_build()))
    anonymous = requests.get(server.url("/ohif/"), headers={"Accept": "text/html"}, timeout=10)
    assert anonymous.status_code == 401 and "OHIF" not in anonymous.text
    assert "<form" in anonymous.text                                        # our login page
    assert requests.get(server.url("/ohif/app-config.js"), timeout=10).status_code == 401

    xa = f.xa_run(frames=2, size=64, patient=f.Patient("OHIF^ANNA", "OHIF-1"), study_uid=STUDY)
    xa.StudyDescription = "Cerebral angiography"
    assert server.storescu(f.write(xa, tmp_path / "in" / "xa.dcm")).returncode == 0
    password = add_user(server, "rad1", "radiologist")
    sr_uid = sign_report(server, xa)
    series = requests.get(server.url(f"/dicom-web/studies/{STUDY}/series"), auth=("rad1", password),
                          timeout=10).json()
    by_modality = {s["00080060"]["Value"][0]: s for s in series}
    assert set(by_modality) == {"XA", "SR", "DOC"}
    assert sr_uid
    expected = sorted((m, s["0008103E"]["Value"][0]) for m, s in by_modality.items())

    sign_in(page, server, "rad1", password)
    # OHIF's first load parses a 17 MB bundle: give it room on a busy CI machine.
    page.set_default_timeout(45000)
    try:
        page.goto(server.url("/ohif/"))
        # The study list, from QIDO-RS: the study's row, its modalities the report's too.
        row = page.locator("tr", has=page.get_by_text("OHIF, ANNA", exact=True))
        row.wait_for()
        assert "Cerebral angiography" in row.inner_text() and "DOC\\SR\\XA" in row.inner_text()
        row.click()
        # The selected study's series (a QIDO-RS series search; thumbnails from /dicom-web).
        assert series_shown(page, 3) == expected
        assert page.get_by_text("OHIF-1", exact=True).is_visible()
        # The XA series' thumbnail is a picture (fetched from /dicom-web/.../thumbnail).
        page.wait_for_function("() => { const i = document.querySelector('[data-cy=study-browser-thumbnail] img');"
                               " return i && i.complete && i.naturalWidth > 0; }")
        page.shot("ohif-study-list")
        # The viewer itself, from WADO-RS metadata: the same three series, the SR among them.
        page.get_by_role("button", name="Basic Viewer").click()
        page.wait_for_url(f"**/ohif/viewer?StudyInstanceUIDs={STUDY}")
        page.locator("[data-cy=studyBrowser-panel]").wait_for()
        assert series_shown(page, 3) == expected
        # ...and the XA frame drawn in the viewport (WADO-RS frames, decoded by OHIF).
        page.wait_for_function("""() => {
            const canvas = document.querySelector('[data-cy=viewport-pane] canvas');
            const context = canvas && canvas.width && canvas.getContext('2d');
            if (!context) return false;
            const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
            for (let i = 0; i < pixels.length; i += 4) if (pixels[i] || pixels[i + 1] || pixels[i + 2]) return true;
            return false;
        }""")
        page.shot("ohif-viewer")
    except Exception:
        page.shot("ohif-failure")
        raise
    assert page.errors == []
