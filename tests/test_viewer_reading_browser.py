"""The reading viewer in headless Chromium against a real `dsmpacs serve`: the
image fits the window at 1440x900, 390x844 and 844x390; overlays show the C-arm
angles, orientation and scale of the file; touch gestures (pinch, swipes, tap)
through Chromium's own input pipeline (CDP Input.dispatchTouchEvent); keyboard
shortcuts after toolbar clicks and in both viewports of a comparison; layouts,
the series strip (click and drag) and per-series memory.

One server and one sign-in for all of it: the later contexts reuse the session."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests import factories as f
from tests.browser import sign_in
from tests.webclient import add_user

STUDY_A = "1.2.826.0.1.3680043.8.498.8201"
STUDY_B = "1.2.826.0.1.3680043.8.498.8202"
SERIES_1 = "1.2.826.0.1.3680043.8.498.8201.1"
SERIES_2 = "1.2.826.0.1.3680043.8.498.8201.2"


@pytest.fixture
def live(server_factory):
    return server_factory()


def attr(page, name: str, nth: int = 0) -> str:
    return page.locator("[data-viewport]").nth(nth).get_attribute(name) or ""


def wait_image(page, nth: int = 0) -> None:
    page.wait_for_function(
        """n => { const img = document.querySelectorAll('[data-viewport] [data-image]')[n];
             return img && img.complete && img.naturalWidth > 0 && (img.getAttribute('data-src') || '').includes('/render/'); }""",
        arg=nth)


def image_box(page, nth: int = 0) -> dict:
    """The <img> box (the picture and its letterbox) and the window's size."""
    return page.evaluate("""n => { const r = document.querySelectorAll('[data-viewport] [data-image]')[n].getBoundingClientRect();
        return {top: r.top, left: r.left, bottom: r.bottom, right: r.right, width: r.width, height: r.height,
                innerWidth: innerWidth, innerHeight: innerHeight, scrollY: scrollY}; }""", nth)


def assert_whole_image_visible(page, min_share: float) -> dict:
    box = image_box(page)
    assert box["top"] >= 0 and box["left"] >= 0, box
    assert box["bottom"] <= box["innerHeight"] and box["right"] <= box["innerWidth"], box
    # And it is the main thing on the screen, not a stamp.
    assert box["height"] * box["width"] >= min_share * box["innerHeight"] * box["innerWidth"], box
    return box


RUN_FRAMES = 12


def xa(study: str, series: str, number: int, **kw):
    ds = f.xa_run(frames=RUN_FRAMES, size=128, patient=f.Patient(name="LI^NA", patient_id="READ-1"), study_uid=study,
                  series_uid=series, series_number=number, study_date="20240601", **kw)
    ds.PositionerPrimaryAngle = 30
    ds.PositionerSecondaryAngle = -20
    ds.PatientOrientation = ["L", "F"]
    ds.ImagerPixelSpacing = [0.2, 0.2]
    ds.ShutterShape = ["RECTANGULAR", "CIRCULAR"]
    ds.ShutterLeftVerticalEdge, ds.ShutterRightVerticalEdge = 9, 120
    ds.ShutterUpperHorizontalEdge, ds.ShutterLowerHorizontalEdge = 5, 124
    ds.CenterOfCircularShutter = [64, 64]
    ds.RadiusOfCircularShutter = 60
    return ds


class Touch:
    """Touches through CDP: they go through hit testing, touch-action and scrolling like a finger's."""

    def __init__(self, page):
        self.cdp = page.context.new_cdp_session(page)

    def send(self, kind: str, points: list[tuple[float, float]]) -> None:
        self.cdp.send("Input.dispatchTouchEvent", {
            "type": kind, "touchPoints": [{"x": x, "y": y, "id": i} for i, (x, y) in enumerate(points)]})

    def drag(self, start: list[tuple[float, float]], end: list[tuple[float, float]], steps: int = 8) -> None:
        self.send("touchStart", start)
        for k in range(1, steps + 1):
            self.send("touchMove", [(a[0] + (b[0] - a[0]) * k / steps, a[1] + (b[1] - a[1]) * k / steps)
                                    for a, b in zip(start, end)])
        self.send("touchEnd", [])

    def tap(self, x: float, y: float) -> None:
        self.send("touchStart", [(x, y)])
        self.send("touchEnd", [])


def with_peak(ds, frame: int):
    """The run's contrast arrives at ``frame``: that frame darkened well below the rest,
    so the server's peak-contrast frame (dsa.peak_frame) is known."""
    frames = np.frombuffer(ds.PixelData, dtype="<u2").reshape(RUN_FRAMES, ds.Rows, ds.Columns).copy()
    frames[frame] = np.maximum(frames[frame] // 8, 1)
    ds.PixelData = frames.tobytes()
    return ds


SERIES_2_PEAK = 4
SERIES_1_LEFT_AT = 8            # the frame the reader leaves series 1 on (not series 2's peak)


def test_reading_layout_overlays_touch_and_keyboard(live, page, browser, tmp_path):
    files = [xa(STUDY_A, SERIES_1, 1), with_peak(xa(STUDY_A, SERIES_2, 2), SERIES_2_PEAK),
             xa(STUDY_B, None, 1, study_description="follow-up")]
    paths = [f.write(ds, tmp_path / "in" / f"{i}.dcm") for i, ds in enumerate(files)]
    assert live.storescu(*paths).returncode == 0
    sign_in(page, live, "rad1", add_user(live, "rad1", "radiologist"))
    session = page.context.storage_state()

    # --- Desktop, 1440x900 ---------------------------------------------------------------
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto(live.url(f"/viewer?study={STUDY_A}"))
    wait_image(page)
    assert_whole_image_visible(page, 0.45)
    assert page.evaluate("document.documentElement.scrollHeight") <= 900
    # Overlay text from the header: angles (PS3.3: +primary = LAO, -secondary = CAUD).
    page.wait_for_function("() => document.querySelector('[data-corner=tr]').textContent.includes('LAO')")
    top_right = page.locator("[data-corner=tr]").first.text_content()
    assert "LAO 30°" in top_right and "CAUD 20°" in top_right and "XA" in top_right
    assert "LI NA" in page.locator("[data-corner=tl]").first.text_content()
    assert f"Frame {int(attr(page, 'data-index')) + 1}/12" in page.locator("[data-corner=bl]").first.text_content()
    assert "66.7 ms" in page.locator("[data-corner=bl]").first.text_content()
    assert page.locator("[data-side=right]").first.text_content() == "L"
    assert page.locator("[data-side=top]").first.text_content() == "H"
    assert "(at detector)" in page.locator("[data-scale-bar]").first.text_content()
    assert page.locator("[data-shutter] path").count() == 2          # rectangle and circle
    # Scale bar: its length on screen is its millimetres at 0.2 mm per image pixel.
    box = image_box(page)
    per_pixel = min(box["width"], box["height"]) / 128                 # object-fit: contain, zoom 1
    bar = page.locator("[data-scale-bar] div").first.bounding_box()
    mm = float(page.locator("[data-scale-bar]").first.get_attribute("data-mm"))
    assert abs(bar["width"] - mm / 0.2 * per_pixel) <= 1.5, (bar, mm, per_pixel)
    # Shutters black out the image's corner (outside the circle), not its centre.
    left = box["left"] + (box["width"] - 128 * per_pixel) / 2
    top = box["top"] + (box["height"] - 128 * per_pixel) / 2
    corner = Image.open(io.BytesIO(page.screenshot(clip={"x": left + 2 * per_pixel, "y": top + 2 * per_pixel,
                                                           "width": 4 * per_pixel, "height": 4 * per_pixel})))
    centre = Image.open(io.BytesIO(page.screenshot(clip={"x": left + 60 * per_pixel, "y": top + 60 * per_pixel,
                                                           "width": 8 * per_pixel, "height": 8 * per_pixel})))
    assert corner.convert("L").getextrema() == (0, 0)
    assert centre.convert("L").getextrema()[1] > 60
    page.shot("desktop-open", full_page=False)

    # Keyboard after toolbar clicks: Space plays (and does not click the button).
    page.click("[data-action=zoom-in]")
    zoom = float(attr(page, "data-zoom"))
    page.keyboard.press("Space")
    assert attr(page, "data-playing") == "true" and float(attr(page, "data-zoom")) == zoom
    page.keyboard.press("Space")
    assert attr(page, "data-playing") == "false"
    index = int(attr(page, "data-index"))
    # Cine may have stopped on the last frame, where ArrowRight has nowhere to go.
    key, step = ("ArrowLeft", -1) if index == 11 else ("ArrowRight", 1)
    page.keyboard.press(key)
    assert int(attr(page, "data-index")) == index + step
    # Space on a focused checkbox plays and leaves the checkbox alone; S toggles subtraction.
    page.click("[data-subtract]")
    assert page.locator("[data-subtract]").first.is_checked()
    page.keyboard.press("Space")
    assert attr(page, "data-playing") == "true" and page.locator("[data-subtract]").first.is_checked()
    page.keyboard.press("Space")
    page.keyboard.press("s")
    assert not page.locator("[data-subtract]").first.is_checked()
    page.keyboard.press("s")
    # M takes the current frame as mask; H flips (the orientation letters follow); R rotates.
    page.keyboard.press("ArrowRight")
    shown = int(attr(page, "data-index"))
    page.keyboard.press("m")
    assert page.locator("[data-mask]").first.input_value() == str(shown + 1)
    page.wait_for_function(f"() => (document.querySelector('[data-image]').getAttribute('data-src') || '').includes('mask={shown}')")
    page.keyboard.press("h")
    assert attr(page, "data-flip") == "h" and page.locator("[data-side=right]").first.text_content() == "R"
    page.keyboard.press("r")
    assert attr(page, "data-rotation") == "90" and page.locator("[data-side=right]").first.text_content() == "H"
    page.keyboard.press("n")
    assert attr(page, "data-inverted") == "true"
    page.keyboard.press("i")
    assert not page.locator("[data-overlay]").first.is_visible()
    page.keyboard.press("i")
    assert page.locator("[data-overlay]").first.is_visible()
    page.keyboard.press("?")
    assert page.locator("[data-help]").is_visible()
    assert page.locator("[data-help-keys] tr").count() >= 14
    page.shot("help", full_page=False)
    page.keyboard.press("Escape")
    assert not page.locator("[data-help]").is_visible()
    page.keyboard.press("Escape")                                   # now: reset the view
    assert attr(page, "data-rotation") == "0" and attr(page, "data-flip") == "" and attr(page, "data-zoom") == "1"

    # Per-series memory: subtraction, mask and frame come back with the series. The
    # second series' frame info is held back until the reader has gone back to the first:
    # its late arrival must not move the first series to the second one's peak frame.
    for _ in range(RUN_FRAMES):                 # at most a run's length of steps, never a hang
        index = int(attr(page, "data-index"))
        if index == SERIES_1_LEFT_AT:
            break
        page.keyboard.press("ArrowRight" if index < SERIES_1_LEFT_AT else "ArrowLeft")
    remembered = attr(page, "data-index")
    assert remembered == str(SERIES_1_LEFT_AT)
    held = []
    page.route(f"**/viewer/info/*/{SERIES_2}/**", lambda route: held.append(route))
    strip = page.locator("[data-series-strip] button")
    strip.nth(1).click()
    page.wait_for_function(f"() => document.querySelector('[data-viewport]').getAttribute('data-series') === '{SERIES_2}'")
    assert not page.locator("[data-subtract]").first.is_checked()
    strip.nth(0).click()
    page.wait_for_function(f"() => document.querySelector('[data-viewport]').getAttribute('data-series') === '{SERIES_1}'")
    assert page.locator("[data-subtract]").first.is_checked()
    assert page.locator("[data-mask]").first.input_value() == str(shown + 1)
    assert attr(page, "data-index") == remembered
    assert held, "the second series asked for its frame info"
    with page.expect_response(lambda r: "/viewer/info/" in r.url and SERIES_2 in r.url) as late:
        for route in held:
            route.continue_()
    assert late.value.json()["peak_frame"] == SERIES_2_PEAK            # what the stale answer would impose
    page.unroute(f"**/viewer/info/*/{SERIES_2}/**")
    page.evaluate("() => new Promise((done) => setTimeout(done, 0))")     # its continuation has run
    assert attr(page, "data-index") == remembered

    # 2x2: four viewports inside the window; a click makes one active; a thumbnail dragged in.
    page.click("[data-layout-choice='2x2']")
    page.wait_for_function("() => [...document.querySelectorAll('[data-viewport]')].filter(v => !v.hidden).length === 4")
    for n in range(4):
        wait_image(page, n)
        box = image_box(page, n)
        assert box["bottom"] <= box["innerHeight"] and box["right"] <= box["innerWidth"]
    page.locator("[data-viewport] [data-stage]").nth(3).click()
    assert "active" in (attr(page, "class", 3) or "")
    before = [attr(page, "data-index", n) for n in range(4)]
    # A run may open on its last frame (its peak): step back then, so the key must move it.
    page.keyboard.press("ArrowLeft" if before[3] != "0" else "ArrowRight")
    after = [attr(page, "data-index", n) for n in range(4)]
    assert after[:3] == before[:3] and after[3] != before[3]
    strip.nth(1).drag_to(page.locator("[data-viewport]").nth(2))
    page.wait_for_function(f"() => document.querySelectorAll('[data-viewport]')[2].getAttribute('data-series') === '{SERIES_2}'")
    assert "active" in attr(page, "class", 2)
    page.keyboard.press("l")                                        # 2x2 -> 1x1
    assert page.locator("[data-viewer]").get_attribute("data-layout") == "1x1"
    page.shot("layout-1x1", full_page=False)
    # F: the viewer (not the page) goes full screen, and the image still fits; F again leaves.
    page.keyboard.press("f")
    page.wait_for_function("() => document.fullscreenElement === document.querySelector('[data-viewer]')")
    page.wait_for_function("() => document.querySelector('[data-image]').getBoundingClientRect().bottom <= innerHeight")
    # The button follows the fullscreenchange event, which may come after the element is set.
    page.wait_for_function("() => document.querySelector('[data-action=fullscreen]')"
                           ".getAttribute('aria-pressed') === 'true'")
    page.keyboard.press("f")
    page.wait_for_function("() => document.fullscreenElement === null")

    # Compare: the keyboard acts on the viewport clicked last, in both.
    page.goto(live.url(f"/viewer?study={STUDY_A}&compare={STUDY_B}"))
    wait_image(page, 0)
    wait_image(page, 1)
    page.uncheck("[data-link]")
    left, right = int(attr(page, "data-index", 0)), int(attr(page, "data-index", 1))
    page.locator("[data-viewport] [data-action=zoom-in]").nth(1).click()
    page.keyboard.press("n")
    page.keyboard.press("ArrowLeft")
    assert attr(page, "data-inverted", 1) == "true" and attr(page, "data-inverted", 0) != "true"
    assert int(attr(page, "data-index", 1)) == max(right - 1, 0) and int(attr(page, "data-index", 0)) == left
    right = int(attr(page, "data-index", 1))
    page.locator("[data-viewport] [data-action=zoom-out]").nth(0).click()
    # The left run may open on one of its last frames (its peak, or the frame the
    # series was left on earlier in this test): step towards the middle then.
    key, expected = ("ArrowRight", left + 2) if left + 2 < RUN_FRAMES else ("ArrowLeft", left - 2)
    page.keyboard.press(key)
    page.keyboard.press(key)
    assert int(attr(page, "data-index", 0)) == expected and int(attr(page, "data-index", 1)) == right
    assert page.errors == []

    # --- Phone, portrait 390x844, touch ----------------------------------------------------
    phone = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True,
                                device_scale_factor=2, storage_state=session, locale="en-US")
    try:
        mobile = phone.new_page()
        errors: list[str] = []
        mobile.on("pageerror", lambda exc: errors.append(str(exc)))
        mobile.goto(live.url(f"/viewer?study={STUDY_A}"))
        wait_image(mobile)
        box = assert_whole_image_visible(mobile, 0.3)
        mobile.wait_for_function("() => document.querySelector('[data-corner=tr]').textContent.includes('CAUD 20°')")
        mobile.screenshot(path=str(tmp_path / "phone-portrait.png"))
        touch = Touch(mobile)
        cx, cy = box["left"] + box["width"] / 2, box["top"] + box["height"] / 2
        window = attr(mobile, "data-window")
        assert window

        touch.drag([(cx - 30, cy), (cx + 30, cy)], [(cx - 90, cy), (cx + 90, cy)])      # pinch out
        zoomed = float(attr(mobile, "data-zoom"))
        assert zoomed > 2, zoomed
        touch.drag([(cx - 90, cy), (cx + 90, cy)], [(cx - 30, cy), (cx + 30, cy)])      # and back in
        assert float(attr(mobile, "data-zoom")) < zoomed

        start = int(attr(mobile, "data-index"))
        # The run may open on its last frame (its peak, or where it was left earlier in this
        # test), where a swipe towards the next frame has nowhere to go: swipe back then.
        if start + 1 < RUN_FRAMES:
            touch.drag([(cx - 80, cy)], [(cx + 80, cy)])                                # swipe right
            assert int(attr(mobile, "data-index")) > start
        else:
            touch.drag([(cx + 80, cy)], [(cx - 80, cy)])                                # swipe left
            assert int(attr(mobile, "data-index")) < start
        stepped = attr(mobile, "data-index")

        region = image_box(mobile)
        touch.drag([(cx, cy + 120)], [(cx, cy - 120)], steps=10)                        # vertical swipe
        moved = image_box(mobile)
        # The browser owns a vertical swipe: the page scrolls if it can, else nothing moves.
        assert moved["scrollY"] > region["scrollY"] or (moved["top"], moved["height"]) == (region["top"], region["height"])
        assert attr(mobile, "data-index") == stepped and attr(mobile, "data-window") == window
        assert float(attr(mobile, "data-zoom")) < zoomed

        # No gesture touched the window; in window mode one finger does.
        mobile.evaluate("scrollTo(0, 0)")
        box = image_box(mobile)
        cx, cy = box["left"] + box["width"] / 2, box["top"] + box["height"] / 2
        assert attr(mobile, "data-window") == window
        mobile.tap("[data-action=window-mode]")
        touch.drag([(cx, cy)], [(cx + 60, cy + 40)])
        assert attr(mobile, "data-window") != window
        mobile.tap("[data-action=window-mode]")

        touch.tap(cx, cy)                                                               # tap: play
        assert attr(mobile, "data-playing") == "true"
        touch.tap(cx, cy)                                                               # tap: pause
        assert attr(mobile, "data-playing") == "false"

        # Landscape 844x390 (the phone turned): still the whole image.
        mobile.set_viewport_size({"width": 844, "height": 390})
        mobile.reload()
        wait_image(mobile)
        mobile.wait_for_function("() => document.querySelector('[data-corner=tr]').textContent.includes('LAO 30°')")
        assert_whole_image_visible(mobile, 0.2)
        mobile.screenshot(path=str(tmp_path / "phone-landscape.png"))
        assert errors == []
    finally:
        phone.close()
