"""The study browser and the viewer in headless Chromium against a real `dsmpacs serve`:
search a GB18030 Chinese name, open an XA run, play cine, toggle DSA subtraction,
compare two studies with linked scrolling, and markup in names stays text."""
from __future__ import annotations

import pytest

from tests import factories as f
from tests.browser import sign_in
from tests.webclient import add_user

STUDY_A = "1.2.826.0.1.3680043.8.498.8101"
STUDY_B = "1.2.826.0.1.3680043.8.498.8102"


@pytest.fixture
def live(server_factory):
    return server_factory()


def index_of(page, nth: int = 0) -> int:
    return int(page.locator("[data-viewport]").nth(nth).get_attribute("data-index") or -1)


def wait_image(page, nth: int = 0, contains: str = "/render/") -> str:
    page.wait_for_function(
        """([n, part]) => { const img = document.querySelectorAll('[data-viewport] [data-image]')[n];
             return img && (img.getAttribute('data-src') || '').includes(part) && img.complete && img.naturalWidth > 0; }""",
        arg=[nth, contains])
    return page.locator("[data-viewport] [data-image]").nth(nth).get_attribute("data-src")


def test_search_chinese_name_open_run_cine_subtraction_and_compare(live, page, tmp_path):
    patient = f.Patient(name="王^小明", patient_id="CN-7", charset="GB18030")
    run_a = f.xa_run(frames=12, size=64, patient=patient, study_uid=STUDY_A, study_date="20240601",
                     study_description="术后 follow-up")
    run_b = f.xa_run(frames=12, size=64, patient=patient, study_uid=STUDY_B, study_date="20230101",
                     study_description="术前 pre-op")
    paths = [f.write(ds, tmp_path / "in" / f"{i}.dcm") for i, ds in enumerate((run_a, run_b))]
    assert live.storescu(*paths).returncode == 0
    assert live.storescu(f.write(f.secondary_capture(patient=f.Patient("ZHAO^LEI", "OTHER-1")),
                                 tmp_path / "in" / "other.dcm")).returncode == 0
    sign_in(page, live, "rad1", add_user(live, "rad1", "radiologist"))

    # Search by the Chinese name: only that patient's two studies.
    page.fill("input[name=patient_name]", "王")
    page.click("[data-action=search]")
    page.wait_for_selector("[data-total]")
    rows = page.locator("[data-table=recent-studies] tbody tr[data-study]")
    assert rows.count() == 2
    assert set(page.locator("[data-col=patient-name]").all_text_contents()) == {"王小明"}
    page.wait_for_function("() => [...document.querySelectorAll('img.thumb')].every(i => i.complete && i.naturalWidth > 0)")
    page.shot("search-chinese")

    # Open study A and its viewer.
    page.click(f"tr[data-study='{STUDY_A}'] [data-action=open-study]")
    page.wait_for_selector("[data-table=series]")
    assert page.locator("[data-col=frames]").first.text_content() == "12"
    page.shot("study-page")
    page.click("[data-action=view]")
    first = wait_image(page)
    # The run opens on its frame of peak contrast (the server's peak_frame), not on the mask.
    info = page.request.get(live.url(f"/viewer/info/{STUDY_A}/{run_a.SeriesInstanceUID}/{run_a.SOPInstanceUID}.json")).json()
    peak = info["peak_frame"]
    assert index_of(page) == peak and page.locator("[data-frame-index]").text_content() == f"{peak + 1} / 12"

    # Cine at the file's 15 fps: the frame index advances by itself, then stops.
    page.click("[data-action=play]")
    page.wait_for_function("() => +document.querySelector('[data-viewport]').getAttribute('data-index') >= 4")
    page.click("[data-action=play]")
    stopped = index_of(page)
    page.wait_for_timeout(300)
    assert index_of(page) == stopped and stopped >= 4
    page.shot("cine-paused")

    # Subtraction: the mask (frame 1) is subtracted; the image the server sends changes.
    page.fill("[data-mask]", "1")
    before = wait_image(page)
    page.check("[data-subtract]")
    after = wait_image(page, contains="mask=0")
    plain_bytes = page.request.get(live.url(before)).body()
    subtracted_bytes = page.request.get(live.url(after)).body()
    assert plain_bytes != subtracted_bytes and len(subtracted_bytes) > 0
    page.shot("subtracted")
    # Window drag asks for an explicit window.
    box = page.locator("[data-stage]").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 60, box["y"] + box["height"] / 2 + 20, steps=4)
    page.mouse.up()
    assert "ww=" in wait_image(page, contains="ww=")
    page.click("[data-action=zoom-in]")
    assert float(page.locator("[data-viewport]").get_attribute("data-zoom")) > 1
    assert first != after

    # Compare pre-op (B) and post-op (A): scrolling one scrolls both.
    page.goto(live.url(f"/viewer?study={STUDY_A}&compare={STUDY_B}"))
    wait_image(page, 0)
    wait_image(page, 1)
    page.locator("[data-stage]").first.hover()
    target = min(index_of(page, 0) + 3, 11)
    for _ in range(3):
        page.mouse.wheel(0, 120)
    page.wait_for_function(f"() => document.querySelectorAll('[data-viewport]')[1].getAttribute('data-index') === '{target}'")
    assert index_of(page, 0) == target
    wait_image(page, 1, contains=f"/{target}.png")
    page.shot("compare-linked")
    assert page.errors == []


def test_markup_in_names_is_text_in_browser_study_page_and_viewer(live, page, tmp_path):
    xss = "<img src=x onerror=alert(1)>"
    ds = f.xa_run(frames=2, size=32, patient=f.Patient(name=xss, patient_id="XSS-9"),
                  study_description="<script>alert(2)</script>")
    assert live.storescu(f.write(ds, tmp_path / "x.dcm")).returncode == 0
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, live, "boss", add_user(live, "boss", "admin"))
    page.goto(live.url("/studies?patient_id=XSS-9"))
    cell = page.locator("[data-table=recent-studies] [data-col=patient-name]").first
    assert cell.text_content() == "<img src = x onerror = alert(1)>"
    assert cell.locator("img").count() == 0
    for url in (f"/studies/{ds.StudyInstanceUID}", f"/viewer?study={ds.StudyInstanceUID}"):
        page.goto(live.url(url))
        name = page.locator("[data-col=patient-name]").first
        assert name.text_content() == "<img src = x onerror = alert(1)>"
        assert name.locator("img").count() == 0
        assert page.locator("script:not([src]):not([type='application/json'])").count() == 0
    wait_image(page)
    page.goto(live.url(f"/studies/{ds.StudyInstanceUID}"))
    page.click("h1 a[data-col=patient-name]")                     # the patient's timeline
    page.wait_for_selector("[data-list=timeline]")
    assert page.locator("h1").text_content() == "<img src = x onerror = alert(1)>"
    page.goto(live.url(f"/studies/{ds.StudyInstanceUID}/delete"))
    assert page.get_by_text("<script>alert(2)</script>").count() == 1
    page.shot("xss-as-text")
    assert dialogs == []
    assert page.errors == []
