"""3D over HTTP and in headless Chromium against a real `dsmpacs serve`: volumes
stored with storescu (a shuffled CT series, a coronally acquired Enhanced CT, an
Enhanced CT without positions, a series with a tilted slice, an XA run, a series
larger than the volume budget); the study JSON says which series make a volume;
the server's planes show the sphere round and in place and its MIP the rod; a
refused series says why (422, 413, 410); then the MPR page
on a 390x844 phone: the four images load, a tap moves the crosshair point, the
slab and the rotating cine work, with no script error."""
from __future__ import annotations

import io
import math
import re

import numpy as np
from PIL import Image

from dsmpacs.archive.browse import study_files
from tests import factories as f
from tests.browser import sign_in
from tests.test_mpr import PHANTOM, WINDOW, bright, rod_samples
from tests.volumes import ROD_HU, SPHERE_HU, ct_series, enhanced_ct
from tests.webclient import WebSession, add_user, server_archive

STUDY = "1.2.826.0.1.3680043.8.498.8111"


def _store(live, tmp_path):
    ct = ct_series(PHANTOM, study_uid=STUDY, series_number=1)
    enhanced = enhanced_ct(PHANTOM, study_uid=STUDY, series_number=2)
    assumed = enhanced_ct(PHANTOM, positions=False, study_uid=STUDY, series_number=3)
    tilted = ct_series(PHANTOM.__class__(shape=(8, 16, 16), centre=(4, 8, 8), radius=4), study_uid=STUDY,
                       series_number=4)
    tilted[5].ImageOrientationPatient = [1, 0, 0, 0, 0.8, 0.6]
    run = f.xa_run(frames=12, size=32, study_uid=STUDY, series_number=5)
    big = []                                # 40 x 512 x 512 x 2 bytes: 20 MiB, over the 16 MiB budget
    for k in range(40):
        ds = f.ct_slice(512, study_uid=STUDY, series_uid=big[0].SeriesInstanceUID if big else None,
                        series_number=6, instance_number=k + 1)
        ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0, 0, k]
        big.append(ds)
    paths = [f.write(ds, tmp_path / "in" / f"{n}.dcm")
             for n, ds in enumerate([*ct, enhanced, assumed, *tilted, run, *big])]
    assert live.storescu(*paths).returncode == 0
    return {"ct": ct[0].SeriesInstanceUID, "enhanced": enhanced.SeriesInstanceUID,
            "assumed": assumed.SeriesInstanceUID, "tilted": tilted[0].SeriesInstanceUID,
            "run": run.SeriesInstanceUID, "big": big[0].SeriesInstanceUID}


def test_mpr_over_http_and_on_a_phone(server_factory, page, tmp_path):
    live = server_factory(viewer_volume_cache_mb=16)
    series = _store(live, tmp_path)
    password = add_user(live, "rad1", "radiologist")
    web = WebSession(live)
    web.login("rad1", password)
    web.headers["Accept"] = "application/json"

    study = web.get(f"/viewer/studies/{STUDY}.json").json()
    flags = {s["uid"]: (s["volume"], s["mpr_url"]) for s in study["series"]}
    assert flags[series["ct"]] == (True, f"/viewer/mpr?study={STUDY}&series={series['ct']}")
    assert flags[series["enhanced"]][0] and flags[series["tilted"]][0]
    assert flags[series["run"]] == (False, None)

    base = f"/viewer/mpr/{STUDY}"
    for name in ("ct", "enhanced"):
        described = web.get(f"{base}/{series[name]}/volume.json").json()
        assert described["shape"] == list(PHANTOM.shape) and not described["assumed"]
        assert np.allclose(described["spacing"], PHANTOM.spacing)
        pixel = min(PHANTOM.spacing)
        k, j, i = PHANTOM.centre
        nz = PHANTOM.shape[0]
        centre_row_sz = (nz - 1 - k + 0.5) * PHANTOM.spacing[0] / pixel - 0.5
        expected = {"axial": (k, (j, i)), "coronal": (j, (centre_row_sz, i)),
                    "sagittal": (i, (centre_row_sz, j))}
        for plane, (pos, centre) in expected.items():
            answer = web.get(f"{base}/{series[name]}/{plane}.png",
                             params={"pos": pos, "wc": WINDOW[0], "ww": WINDOW[1]})
            assert answer.status_code == 200 and answer.headers["Content-Type"] == "image/png"
            area, row, col = bright(answer.content, centre, 1.5 * PHANTOM.radius / pixel)
            circle = math.pi * (PHANTOM.radius / pixel) ** 2
            assert abs(area - circle) / circle < 0.10, (name, plane, area)
            assert abs(row - centre[0]) < 1 and abs(col - centre[1]) < 1, (name, plane, row, col)
        mip = web.get(f"{base}/{series[name]}/axial.png", params={
            "slab": 1000, "wc": (SPHERE_HU + ROD_HU) / 2, "ww": ROD_HU - SPHERE_HU}).content
        grey = np.asarray(Image.open(io.BytesIO(mip)))
        samples = rod_samples(PHANTOM)      # only its spacing is used
        assert sum(grey[r, c] > 128 for r, c in samples) >= 0.95 * len(samples), name

    assumed = web.get(f"{base}/{series['assumed']}/volume.json").json()
    assert assumed["assumed"] is True and assumed["source"] == "assumed"
    refused = web.get(f"{base}/{series['tilted']}/volume.json")
    assert refused.status_code == 422 and "same orientation" in refused.json()["detail"]
    too_big = web.get(f"{base}/{series['big']}/axial.png")
    assert too_big.status_code == 413
    assert too_big.json()["detail"] == ("This volume needs 20 MiB, more than the 16 MiB set aside for 3D "
                                        "(viewer_volume_cache_mb).")
    assert web.get(f"{base}/{series['ct']}/rotate/30.png").headers["Content-Type"] == "image/png"
    assert web.get(f"{base}/{series['ct']}/oblique.jpeg", params={"a": 20, "b": 45}).status_code == 200
    assert web.get(f"{base}/{series['ct']}/axial.png", params={"pos": 64}).status_code == 400
    assert web.get(f"/viewer/mpr/{STUDY}/1.2.3.4/volume.json").status_code == 404

    # The phone: from the study page's 3D link to the four planes.
    sign_in(page, live, "rad1", password)             # at desktop size: the phone hides the menu
    page.set_viewport_size({"width": 390, "height": 844})
    page.failed_loads.clear()                         # the 401 of the login page itself
    # The viewer's series strip offers 3D for the series that form a volume, and only those.
    page.goto(live.url(f"/viewer?study={STUDY}"))
    page.wait_for_selector("[data-series-strip] button[data-series]")
    offered = page.evaluate("() => [...document.querySelectorAll('[data-series-strip] [data-action=mpr]')]"
                            ".map(a => a.closest('li').querySelector('[data-series]').getAttribute('data-series'))")
    volumes = [uid for uid, (volume, _) in flags.items() if volume]
    assert sorted(offered) == sorted(volumes) and series["ct"] in offered
    page.goto(live.url(f"/studies/{STUDY}"))
    page.click(f"tr[data-series='{series['ct']}'] [data-action=mpr]")
    page.wait_for_selector("[data-mpr][data-ready=true]")
    all_loaded = """() => [...document.querySelectorAll('[data-mpr] [data-image]')]
        .every(i => i.getAttribute('data-loaded') === 'true' && i.naturalWidth > 0)"""
    page.wait_for_function(all_loaded)
    widths = page.evaluate("() => [...document.querySelectorAll('[data-mpr] [data-image]')]"
                           ".map(i => i.getBoundingClientRect().right)")
    assert max(widths) <= 390 and page.evaluate("() => document.documentElement.scrollWidth") <= 390
    assert page.locator("[data-plane=coronal]").get_attribute("data-pos-value") == str((PHANTOM.shape[1] - 1) // 2)
    page.shot("mpr-phone")

    # A tap on the axial image at the sphere's centre moves the coronal and sagittal planes there.
    box = page.locator("[data-plane=axial] [data-image]").bounding_box()
    _, j, i = PHANTOM.centre
    page.mouse.click(box["x"] + (i + 0.5) / PHANTOM.shape[2] * box["width"],
                     box["y"] + (j + 0.5) / PHANTOM.shape[1] * box["height"])
    page.wait_for_function(f"() => document.querySelector('[data-plane=coronal]').getAttribute('data-pos-value') === '{j}'")
    assert page.locator("[data-plane=sagittal]").get_attribute("data-pos-value") == str(i)
    page.wait_for_function(all_loaded)
    coronal = page.locator("[data-plane=coronal] [data-image]").get_attribute("data-src")
    assert f"pos={j}" in coronal
    # The wheel over a plane steps through it.
    before = int(page.locator("[data-plane=sagittal]").get_attribute("data-pos-value"))
    page.locator("[data-plane=sagittal] [data-stage]").hover()
    page.mouse.wheel(0, 120)
    page.wait_for_function(f"() => document.querySelector('[data-plane=sagittal]')"
                           f".getAttribute('data-pos-value') === '{before + 1}'")
    # A mouse drag sets the window of every plane: right wider, down a higher centre.
    shown = page.locator("[data-window]").text_content()
    width = re.search(r"ww=([\d.]+)", page.locator("[data-plane=coronal] [data-image]").get_attribute("data-src"))[1]
    page.locator("[data-plane=axial] [data-stage]").scroll_into_view_if_needed()
    box = page.locator("[data-plane=axial] [data-stage]").bounding_box()
    page.mouse.move(box["x"] + 40, box["y"] + 40)
    page.mouse.down()
    page.mouse.move(box["x"] + 100, box["y"] + 70, steps=5)
    page.mouse.up()
    page.wait_for_function("w => !document.querySelector('[data-plane=coronal] [data-image]')"
                           ".getAttribute('data-src').includes('ww=' + w + '&')", arg=width)
    assert page.locator("[data-window]").text_content() != shown
    assert page.locator("[data-plane=coronal]").get_attribute("data-pos-value") == str(j)   # no pick
    page.wait_for_function(all_loaded)
    # The slab slider asks for slabs.
    page.locator("[data-slab]").fill("20")
    page.wait_for_function("() => document.querySelector('[data-plane=axial] [data-image]')"
                           ".getAttribute('data-src').includes('slab=20')")
    page.wait_for_function(all_loaded)
    # The rotating MIP cine advances by itself, then stops.
    page.click("[data-action=rotate]")
    page.wait_for_function("() => +document.querySelector('[data-plane=oblique]').getAttribute('data-angle') >= 30")
    page.click("[data-action=rotate]")
    page.shot("mpr-phone-rotating")
    # The phone turned: two views side by side, none wider than the screen.
    page.set_viewport_size({"width": 844, "height": 390})
    page.wait_for_function(all_loaded)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 844
    lefts = page.evaluate("() => [...document.querySelectorAll('[data-mpr] [data-stage]')]"
                          ".map(s => Math.round(s.getBoundingClientRect().left))")
    assert len(set(lefts)) == 2
    page.shot("mpr-landscape", full_page=False)
    # On a desk the four views share the window as a 2x2 grid, nothing below the fold.
    page.set_viewport_size({"width": 1440, "height": 900})
    page.wait_for_function(all_loaded)
    boxes = page.evaluate("() => [...document.querySelectorAll('[data-mpr] [data-stage]')]"
                          ".map(s => { const r = s.getBoundingClientRect(); return [r.left, r.top, r.bottom]; })")
    assert len({round(b[0]) for b in boxes}) == 2 and max(b[2] for b in boxes) <= 900, boxes
    page.shot("mpr-desktop", full_page=False)
    assert page.errors == []
    assert page.failed_loads == []

    # A truncated stored file: the series is refused as the viewer refuses it.
    with server_archive(live) as archive:
        stored = archive.storage.path(study_files(archive.index, STUDY, series["run"])[0].path)
    with open(stored, "r+b") as fh:
        fh.truncate(1000)
    gone = web.get(f"{base}/{series['run']}/volume.json")
    assert gone.status_code == 410 and "corrupt" in gone.json()["detail"]
