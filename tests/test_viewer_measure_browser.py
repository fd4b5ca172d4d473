"""Measurements in the viewer, in headless Chromium against a real `dsmpacs serve`:
lengths over images calibrated by Pixel Spacing, by Imager Pixel Spacing and the
Estimated Radiographic Magnification Factor, and by a catheter of known French size;
an ellipse ROI whose mean is the server's; the annotations saved into the study as a
GSPS (and a KOS) that dcmtk movescu pulls back; and all of it shown again after a
reload. Drags go through page.mouse at points from vp.imageToClient."""
from __future__ import annotations

import pytest
from pydicom import dcmread

from dsmpacs.archive.derived.key_objects import KOS
from dsmpacs.archive.derived.presentation_state import GSPS
from dsmpacs.imaging import roi
from tests import factories as f
from tests.browser import sign_in
from tests.peers import dcmtk
from tests.retrieval import StoreSCP, register, stored_path
from tests.webclient import add_user

STUDY = "1.2.826.0.1.3680043.8.498.9401"
OWN = "[data-viewport] svg g.mark.own"


def images(tmp_path):
    """Three series of one study: CT with Pixel Spacing 0.5 mm; XA with Imager Pixel
    Spacing 0.3 mm and ERMF 1.2 (0.25 mm at the isocentre); XA with no spacing."""
    patient = f.Patient("MEASURE^TEST", "MEAS-1")
    ct = f.ct_slice(size=200, patient=patient, study_uid=STUDY, series_number=1)
    ct.PixelSpacing = [0.5, 0.5]
    ermf = f.xa_run(frames=2, size=256, patient=patient, study_uid=STUDY, series_number=2)
    ermf.ImagerPixelSpacing = [0.3, 0.3]
    ermf.EstimatedRadiographicMagnificationFactor = 1.2
    bare = f.xa_run(frames=2, size=256, patient=patient, study_uid=STUDY, series_number=3)
    return [(ds, f.write(ds, tmp_path / "in" / f"{i}.dcm")) for i, ds in enumerate((ct, ermf, bare))]


def to_client(page, x: float, y: float) -> dict:
    return page.evaluate("([x, y]) => window.DSMViewer.viewports[0].imageToClient(x, y)", [x, y])


def drag(page, a, b):
    start, end = to_client(page, *a), to_client(page, *b)
    page.mouse.move(start["x"], start["y"])
    page.mouse.down()
    page.mouse.move(end["x"], end["y"], steps=4)
    page.mouse.up()


def open_series(page, ds):
    page.click(f"[data-series-strip] [data-series='{ds.SeriesInstanceUID}']")
    page.wait_for_function(
        """uid => { const v = window.DSMViewer.viewports[0]; const img = v.img;
             return v.series && v.series.uid === uid && v.info() && img.complete && img.naturalWidth > 0
               && (img.getAttribute('data-src') || '').includes(uid); }""", arg=str(ds.SeriesInstanceUID))


def measured(page, kind: str, n: int) -> dict:
    """The n-th mark of a kind once stored on the server: its value and label."""
    selector = f"{OWN}[data-kind={kind}]"
    page.wait_for_function("([s, n]) => document.querySelectorAll(s).length >= n "
                           "&& document.querySelector('[data-viewport]').getAttribute('data-saving') === 'false'",
                           arg=[selector, n])
    g = page.locator(selector).nth(n - 1)
    value = g.get_attribute("data-value")
    return {"value": float(value) if value is not None else None, "label": g.get_attribute("data-label")}


@pytest.fixture
def live(server_factory):
    return server_factory()


def test_calibrated_lengths_roi_gsps_by_movescu_and_reload(live, page, tmp_path):
    loaded = images(tmp_path)
    (ct, ct_path), (ermf, _), (bare, _) = loaded
    assert live.storescu(*[p for _, p in loaded]).returncode == 0
    sign_in(page, live, "rad1", add_user(live, "rad1", "radiologist"))
    page.goto(live.url(f"/viewer?study={STUDY}"))

    # Pixel Spacing 0.5 mm: 160 px across reads 80 mm.
    open_series(page, ct)
    page.click("[data-tool=length]")
    drag(page, (20, 100), (180, 100))
    first = measured(page, "length", 1)
    assert first["value"] == pytest.approx(80.0, rel=0.01)
    assert "80.00 mm" in first["label"] and "(Pixel Spacing)" in first["label"]

    # Ellipse ROI: the mean shown is the server's mean of the modality values.
    page.click("[data-tool=ellipse]")
    drag(page, (40, 40), (100, 80))
    expected = roi.ellipse_stats(stored_path(live, str(ct.SOPInstanceUID)), 0, 70, 60, 30, 20)
    assert measured(page, "ellipse", 1)["value"] == pytest.approx(expected.mean, abs=1e-6)

    # Imager Pixel Spacing 0.3 / ERMF 1.2 = 0.25 mm: 200 px reads 50 mm.
    open_series(page, ermf)
    page.click("[data-tool=length]")
    drag(page, (28, 128), (228, 128))
    second = measured(page, "length", 1)
    assert second["value"] == pytest.approx(50.0, rel=0.01)
    assert "Imager Pixel Spacing ÷ ERMF 1.2" in second["label"]
    # Angle (two drags, vertex at the end of the first), stenosis (reference 40 px,
    # narrowest 10 px: 75 %, 2.50 of 10.00 mm), an arrow and a text.
    page.click("[data-tool=angle]")
    drag(page, (10, 10), (60, 60))
    drag(page, (60, 60), (110, 60))
    assert measured(page, "angle", 1)["value"] == pytest.approx(135.0, abs=0.01)
    page.click("[data-tool=stenosis]")
    drag(page, (150, 20), (150, 60))
    drag(page, (180, 30), (180, 40))
    stenosis = measured(page, "stenosis", 1)
    assert stenosis["value"] == pytest.approx(75.0, abs=0.01) and "2.50 / 10.00 mm" in stenosis["label"]
    page.click("[data-tool=arrow]")
    drag(page, (200, 200), (150, 150))
    page.click("[data-tool=text]")
    drag(page, (30, 220), (30, 220))
    page.fill("[data-measure-text]", "夹层 dissection")
    page.click("[data-measure-ok]")
    page.wait_for_function(f"() => [...document.querySelectorAll('{OWN}[data-kind=text]')]"
                           ".some(g => g.getAttribute('data-label') === '夹层 dissection')")
    measured(page, "arrow", 1)

    # No spacing: px until a 6F catheter (2 mm) is drawn 30 px wide; 150 px is then 10 mm.
    open_series(page, bare)
    page.click("[data-tool=length]")
    drag(page, (20, 200), (170, 200))
    assert "uncalibrated px" in measured(page, "length", 1)["label"]
    page.click("[data-tool=calibrate]")
    drag(page, (100, 50), (100, 80))
    page.select_option("[data-catheter]", "6")
    page.click("[data-measure-ok]")
    page.wait_for_function(f"() => document.querySelectorAll('{OWN}[data-kind=calibrate]').length === 1")
    third = measured(page, "length", 1)
    assert third["value"] == pytest.approx(10.0, rel=0.01)
    assert "calibrated: 6F catheter" in third["label"]

    # Save to the study (GSPS) and a key image (KOS).
    page.click("[data-action=save-study]")
    page.wait_for_function("() => document.querySelector('[data-viewport]').hasAttribute('data-saved-gsps')")
    page.click("[data-action=key-image]")
    page.wait_for_function("() => document.querySelector('[data-viewport]').hasAttribute('data-saved-kos')")
    gsps_uid = page.locator("[data-viewport]").get_attribute("data-saved-gsps")
    kos_uid = page.locator("[data-viewport]").get_attribute("data-saved-kos")

    # dcmtk movescu pulls the study; the GSPS references the images with their graphics.
    workstation = StoreSCP(tmp_path / "ws", "WORKSTATION").start()
    try:
        register(live, "mover", "MOVER", 104, may_retrieve=True, is_move_destination=False)
        register(live, "ws", "WORKSTATION", workstation.port)
        done = dcmtk("movescu", "-S", "-aet", "MOVER", "-aec", live.ae_title, "-aem", "WORKSTATION",
                     "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY}",
                     "127.0.0.1", live.port)
        assert done.returncode == 0, done.stdout + done.stderr
        received = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in workstation.files()}
    finally:
        workstation.stop()
    gsps = dcmread(received[gsps_uid])
    assert gsps.SOPClassUID == GSPS and gsps.Modality == "PR" and gsps.StudyInstanceUID == STUDY
    referenced = {str(i.ReferencedSOPInstanceUID) for s in gsps.ReferencedSeriesSequence
                  for i in s.ReferencedImageSequence}
    assert referenced == {str(ct.SOPInstanceUID), str(ermf.SOPInstanceUID), str(bare.SOPInstanceUID)}
    texts = [t.UnformattedTextValue for a in gsps.GraphicAnnotationSequence for t in a.get("TextObjectSequence", [])]
    assert any("80.00 mm" in x for x in texts) and any("10.00 mm" in x for x in texts)
    kinds = [g.GraphicType for a in gsps.GraphicAnnotationSequence for g in a.GraphicObjectSequence]
    # three lengths, an angle, two stenosis diameters, an arrow and its two head strokes;
    # no calibration line
    assert kinds.count("ELLIPSE") == 1 and kinds.count("POLYLINE") == 9
    assert "夹层 dissection" in texts
    kos = dcmread(received[kos_uid])
    assert kos.SOPClassUID == KOS
    assert kos.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == str(bare.SOPInstanceUID)

    # After a reload: the user's own annotations from the store, and the saved GSPS's.
    page.reload()
    open_series(page, ct)
    page.wait_for_function(f"() => document.querySelectorAll('{OWN}').length === 2")
    again = page.locator(f"{OWN}[data-kind=length]").get_attribute("data-label")
    assert "80.00 mm" in again and "(Pixel Spacing)" in again
    shown_twice = page.evaluate("() => [...document.querySelectorAll('[data-viewport] svg g.mark.shared')]"
                                ".map(g => g.getAttribute('data-kind'))")
    assert shown_twice == []       # the user's own GSPS repeats their marks: shown once
    # The PR and KO series now in the study are not pictures: the strip does not offer them.
    strip = page.evaluate("() => [...document.querySelectorAll('[data-series-strip] button[data-series]')]"
                          ".map(b => b.getAttribute('data-series'))")
    assert gsps.SeriesInstanceUID not in strip and kos.SeriesInstanceUID not in strip and strip
    page.shot("measurements-after-reload")
    assert page.errors == []

    # Another user (role viewer) on a phone: no annotations of their own, the GSPS's
    # shown, no button to save into the study; a one-finger drag with the length tool
    # measures (the swipe does not step frames) and is kept as theirs.
    phone = page.context.browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True,
                                             is_mobile=True, device_scale_factor=2, locale="en-US")
    try:
        second = phone.new_page()
        errors = []
        second.on("pageerror", lambda exc: errors.append(str(exc)))
        second.goto(live.url("/"))
        second.fill("input[name=username]", "view2")
        second.fill("input[name=password]", add_user(live, "view2", "viewer"))
        second.click("[data-login-form] button[type=submit]")
        second.wait_for_selector("[data-action=logout]", state="attached")    # in the phone's menu
        second.goto(live.url(f"/viewer?study={STUDY}"))
        open_series(second, ct)
        second.wait_for_function("() => [...document.querySelectorAll('[data-viewport] svg g.mark.shared')]"
                                 ".some(g => (g.getAttribute('data-label') || '').includes('80.00 mm'))")
        assert second.locator(OWN).count() == 0
        assert second.locator("[data-action=save-study]").count() == 0
        second.locator("[data-viewport] [data-tool=length]").click()
        cdp = phone.new_cdp_session(second)
        start, end = to_client(second, 100, 20), to_client(second, 100, 180)
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [start]})
        for k in range(1, 7):
            cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [
                {"x": start["x"] + (end["x"] - start["x"]) * k / 6, "y": start["y"] + (end["y"] - start["y"]) * k / 6}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        touched = measured(second, "length", 1)
        assert touched["value"] == pytest.approx(80.0, rel=0.01) and "(Pixel Spacing)" in touched["label"]
        assert errors == []
    finally:
        phone.close()
