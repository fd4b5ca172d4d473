"""Whole-run DSA on the server: the frame of peak contrast, one subtraction window for a
run, sub-pixel mask shift, the road map, and the render endpoint's WebP/quality/ETag."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from dsmpacs.archive.ingest import Origin
from dsmpacs.imaging import dsa
from dsmpacs.imaging import render as rd
from dsmpacs.imaging.subtraction import log_subtract, subtraction_window
from tests import dsa_runs
from tests import factories as f
from tests.webclient import client_as


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_peak_frame_of_a_run_and_middle_of_other_stacks(tmp_path):
    run = dsa_runs.write(dsa_runs.bolus_run(frames=30, peak=17, steady=False), tmp_path / "a.dcm")
    assert dsa.peak_frame(run) == 17
    # A long run is sampled every k-th frame, then refined: a peak between samples is found.
    long = dsa_runs.write(dsa_runs.bolus_run(frames=150, size=32, peak=101, spread=6, steady=False),
                          tmp_path / "b.dcm")
    assert dsa.peak_frame(long) == 101
    # The cache is keyed on the file's size and mtime: a replaced file is analysed again.
    dsa_runs.write(dsa_runs.bolus_run(frames=30, peak=8, steady=False), run)
    os.utime(run, ns=(1, 1))
    assert dsa.peak_frame(run) == 8
    noise_run = f.write(f.xa_run(frames=9, size=16), tmp_path / "c.dcm")
    ds = f.xa_run(frames=9, size=16)
    ds.Modality = "CT"
    assert dsa.peak_frame(f.write(ds, tmp_path / "d.dcm")) == 4      # not a run: the middle
    assert dsa.peak_frame(f.write(f.secondary_capture(size=8), tmp_path / "e.dcm")) == 0
    assert 1 <= dsa.peak_frame(noise_run) <= 8


def test_one_window_for_a_subtracted_run(tmp_path):
    run = dsa_runs.write(dsa_runs.bolus_run(frames=30, peak=17), tmp_path / "run.dcm")
    frames = [2, 10, 17, 25, 29]
    rendered = [rd.render_image(run, i, mask_index=0) for i in frames]
    windows = {(r.window.center, r.window.width) for r in rendered}
    assert len(windows) == 1 and rd.default_window(run, 3, 0) == rendered[0].window
    # Per-frame windows would have differed: the old behaviour this replaces.
    values = [rd._grey_values(run, rd.layout_of(run), i) for i in [0] + frames]
    per_frame = {round(subtraction_window(log_subtract(v, values[0])).width) for v in values[1:]}
    assert len(per_frame) >= 2
    # Same attenuation, same grey in every frame: the steady vessel and the background.
    images = [pixels(r.data) for r in rendered]
    steady = [int(np.median(im[8:12, 40:60])) for im in images]        # rows size//8..+4, off the diagonal
    background = [int(np.median(im[40:60, 2:12])) for im in images]
    assert max(steady) - min(steady) <= 1 and steady[0] < 100
    assert set(background) <= {127, 128}
    # The bolus vessel darkens towards the peak frame with the same window.
    diagonal = [int(np.median(np.diagonal(im)[20:40])) for im in images]
    assert diagonal[2] == min(diagonal) and diagonal[2] < diagonal[0] - 40


def test_mask_shift_cancels_patient_motion(tmp_path):
    run = dsa_runs.write(dsa_runs.moved_run((1.5, -2.0)), tmp_path / "moved.dcm")
    inner = (slice(4, -4), slice(4, -4))
    layout = rd.layout_of(run)
    frame = rd._grey_values(run, layout, 1)
    corrected = log_subtract(frame, dsa.mask_values(run, layout, 0, (1.5, -2.0)))[inner]
    plain = log_subtract(frame, dsa.mask_values(run, layout, 0))[inner]
    assert np.abs(corrected).max() < 3            # milli-log units: rounding to integers only
    assert np.abs(plain).max() > 40
    shown = pixels(rd.render(run, 1, mask_index=0, window=(0, 200), shift=(1.5, -2.0)))[inner]
    unshown = pixels(rd.render(run, 1, mask_index=0, window=(0, 200)))[inner]
    assert np.abs(shown.astype(int) - 128).max() <= 3
    assert np.abs(unshown.astype(int) - 128).max() > 40
    # The shift follows scipy.ndimage.shift's convention: out[y, x] = in[y - dy, x - dx].
    ramp = np.arange(16, dtype=np.float32).reshape(4, 4)
    moved = dsa.shift_image(ramp, 0.5, 1.0)
    assert moved[2, 2] == pytest.approx((ramp[1, 1] + ramp[1, 2]) / 2)
    for bad in ("1", "a,b", "40,0", "0,nan"):
        with pytest.raises(ValueError):
            dsa.parse_shift(bad)


def test_roadmap_is_peak_opacification(tmp_path):
    run = dsa_runs.write(dsa_runs.bolus_run(frames=30, peak=17, steady=False), tmp_path / "run.dcm")
    layout = rd.layout_of(run)
    low = dsa.roadmap(run, "min", 0)
    peak = log_subtract(rd._grey_values(run, layout, 17), rd._grey_values(run, layout, 0))
    np.testing.assert_allclose(low, peak, atol=1e-3)      # the bolus is fullest at its peak
    assert dsa.roadmap(run, "min", 0) is low               # computed once
    raw_max = dsa.roadmap(run, "max")
    assert (raw_max >= rd._grey_values(run, layout, 17)).all()
    image = pixels(rd.render(run, 3, mask_index=0, roadmap="min"))
    assert np.median(np.diagonal(image)[20:40]) < 20 and np.median(image[40:60, 2:12]) in (127, 128)
    with pytest.raises(rd.RenderError):
        dsa.roadmap(run, "mean")


def test_render_endpoint_run_window_shift_roadmap_webp_quality(client, archive, tmp_path):
    study = "1.2.826.0.1.3680043.8.498.7301"
    run = dsa_runs.bolus_run(frames=30, size=64, peak=17, study_uid=study)
    moved = dsa_runs.moved_run((1.5, -2.0), study_uid=study, series_number=2)
    for i, ds in enumerate((run, moved)):
        assert archive.ingest.import_file(dsa_runs.write(ds, tmp_path / f"{i}.dcm"), Origin("import")).archived
    client_as(client, archive, "viewer")
    base = f"/render/{study}/{run.SeriesInstanceUID}/{run.SOPInstanceUID}"
    info_url = f"/viewer/info/{study}/{run.SeriesInstanceUID}/{run.SOPInstanceUID}.json"
    info = client.get(info_url).get_json()
    assert info["peak_frame"] == 17 and "run_window" not in info
    with_mask = client.get(f"{info_url}?mask=0&frame=3").get_json()
    run_window = with_mask["run_window"]
    assert run_window["center"] == 0 and with_mask["window"] == run_window
    headers = {client.get(f"{base}/{i}.png?mask=0").headers["X-Window"] for i in (1, 9, 17, 29)}
    assert headers == {f"{0:g},{run_window['width']:g}"}
    # WebP and JPEG quality; the ETag names every parameter.
    webp = client.get(f"{base}/17.webp?mask=0&q=50")
    assert webp.mimetype == "image/webp" and Image.open(io.BytesIO(webp.data)).format == "WEBP"
    small, large = (len(client.get(f"{base}/17.jpeg?q={q}").data) for q in (10, 95))
    assert small < large
    etags = {client.get(f"{base}/17.{fmt}?mask=0{extra}").headers["ETag"]
             for fmt, extra in [("png", ""), ("webp", "&q=50"), ("webp", "&q=80"), ("png", "&shift=1,0"),
                                ("png", "&roadmap=min"), ("png", "&roadmap=max")]}
    assert len(etags) == 6
    roadmap = pixels(client.get(f"{base}/0.png?mask=0&roadmap=min").data)
    assert np.median(np.diagonal(roadmap)[20:40]) < 30
    for bad in ("shift=99,0", "shift=x", "roadmap=mean"):
        assert client.get(f"{base}/1.png?mask=0&{bad}").status_code == 400
    mbase = f"/render/{study}/{moved.SeriesInstanceUID}/{moved.SOPInstanceUID}"
    fixed = pixels(client.get(f"{mbase}/1.png?mask=0&wc=0&ww=200&shift=1.5,-2").data)[4:-4, 4:-4]
    assert np.abs(fixed.astype(int) - 128).max() <= 3


def test_a_damaged_frame_costs_the_run_nothing_but_itself(tmp_path):
    run = dsa_runs.write(dsa_runs.bolus_run(frames=30, peak=17, steady=False), tmp_path / "cut.dcm")
    data = run.read_bytes()
    run.write_bytes(data[:-64 * 64])          # the last frame loses half its bytes
    with pytest.raises(rd.RenderError):
        rd.render(run, 29)
    assert dsa.peak_frame(run) == 17
    assert rd.render_image(run, 17, mask_index=0).window.width > 1000
    low = dsa.roadmap(run, "min", 0)
    assert low.shape == (64, 64) and low.min() < -900
