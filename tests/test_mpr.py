"""3D volumes and their planes (imaging/volume.py, imaging/mpr.py), without a server:
a phantom with a sphere and an oblique rod comes back voxel for voxel from a shuffled
CT series, from a coronally acquired Enhanced CT (RLE compressed too), and as an
"assumed" volume without positions; inconsistent series are refused with their
reason; the cache builds once and stays within its budget; the planes show the
sphere round and at its place, and the MIP shows the rod."""
from __future__ import annotations

import io
import math
import threading

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import FileMetaDataset

from dsmpacs.imaging import mpr
from dsmpacs.imaging.volume import VolumeError, VolumeTooLarge, build_volume, may_form_volume
from dsmpacs.imaging.volume_cache import VolumeCache
from tests import factories as f
from tests.volumes import ENHANCED_CT, ROD_HU, SPHERE_HU, Phantom, ct_series, enhanced_ct, sagittal_series

PHANTOM = Phantom()


@pytest.fixture(scope="module")
def ct_paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ct")
    return [f.write(ds, folder / f"{i}.dcm") for i, ds in enumerate(ct_series(PHANTOM))]


@pytest.fixture(scope="module")
def volume(ct_paths):
    return build_volume(ct_paths)


def test_ct_series_sorted_by_position_gives_the_phantom_back(volume):
    assert volume.source == "positions" and not volume.assumed
    assert volume.shape == PHANTOM.shape
    assert np.allclose(volume.spacing, PHANTOM.spacing)
    assert volume.data.dtype == np.int16                    # whole HU values fit
    assert np.array_equal(volume.data, PHANTOM.values())   # modality LUT applied, slices in place


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5"])   # native, RLE
def test_enhanced_ct_acquired_coronally_is_reoriented_to_the_same_grid(tmp_path, syntax):
    ds = enhanced_ct(PHANTOM)
    if syntax != "1.2.840.10008.1.2.1":
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
        ds.compress(syntax, encoding_plugin="pydicom")      # frame by frame, one fragment each
    path = f.write(ds, tmp_path / "enhanced.dcm", transfer_syntax=syntax)
    built = build_volume([path])
    assert built.source == "frame-positions" and not built.assumed
    assert np.allclose(built.spacing, PHANTOM.spacing)
    assert np.array_equal(built.data, PHANTOM.values())


def test_sagittal_slices_against_the_left_axis_are_flipped_into_place(tmp_path):
    paths = [f.write(ds, tmp_path / f"{i}.dcm") for i, ds in enumerate(sagittal_series(PHANTOM))]
    built = build_volume(paths)
    assert np.allclose(built.spacing, PHANTOM.spacing)
    assert np.array_equal(built.data, PHANTOM.values())


def test_multi_frame_without_positions_is_flagged_assumed(tmp_path):
    path = f.write(enhanced_ct(PHANTOM, positions=False), tmp_path / "noplanes.dcm")
    built = build_volume([path])
    assert built.assumed and built.source == "assumed"
    # frames stacked as slices: Spacing Between Slices between them, Pixel Spacing within
    assert np.allclose(built.spacing, (0.8, 1.6, 0.8))
    assert built.shape == (64, 64, 64)


def test_inconsistent_series_are_refused_with_the_reason(tmp_path):
    small = Phantom(shape=(10, 16, 16), centre=(5, 8, 8), radius=4)
    slices = ct_series(small)
    slices[3].ImageOrientationPatient = [1, 0, 0, 0, 0.8, 0.6]
    paths = [f.write(ds, tmp_path / "o" / f"{i}.dcm") for i, ds in enumerate(slices)]
    with pytest.raises(VolumeError) as refused:
        build_volume(paths)
    assert refused.value.key == "study.mpr.error.orientation"

    other = ct_series(Phantom(shape=(10, 16, 16), centre=(5, 8, 8), radius=4))
    odd = ct_series(Phantom(shape=(1, 20, 20), centre=(0, 8, 8), radius=4))[0]
    paths = [f.write(ds, tmp_path / "s" / f"{i}.dcm") for i, ds in enumerate(other[:-1] + [odd])]
    with pytest.raises(VolumeError) as refused:
        build_volume(paths)
    assert refused.value.key == "study.mpr.error.sizes" and "16x16" in str(refused.value)

    gap = ct_series(small)
    del gap[4]                                                 # a missing slice
    paths = [f.write(ds, tmp_path / "g" / f"{i}.dcm") for i, ds in enumerate(gap)]
    with pytest.raises(VolumeError) as refused:
        build_volume(paths)
    assert refused.value.key == "study.mpr.error.gaps"


def test_cache_builds_once_evicts_the_oldest_and_refuses_what_alone_is_too_big(tmp_path, ct_paths):
    one = 64 * 64 * 64 * 2
    small = [f.write(ds, tmp_path / "small" / f"{i}.dcm")
             for i, ds in enumerate(ct_series(Phantom(shape=(16, 32, 32), centre=(8, 16, 16), radius=5)))]
    cache = VolumeCache(one + 16 * 32 * 32 * 2 - 1)          # not both at once
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("ct", lambda: ct_paths)))
               for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert cache.builds == 1 and len({id(v) for v in results}) == 1
    cache.get("small", lambda: small)
    assert "small" in cache and "ct" not in cache and cache.used <= cache.budget

    with pytest.raises(VolumeTooLarge) as refused:
        VolumeCache(one - 1).get("ct", lambda: ct_paths)
    assert refused.value.needed == one and refused.value.key == "study.mpr.error.too_large"


def test_may_form_volume_from_index_rows_alone():
    ct = "1.2.840.10008.5.1.4.1.1.2"
    assert may_form_volume([(ct, 1)] * 8)
    assert not may_form_volume([(ct, 1)] * 7)
    assert not may_form_volume([(f.SC, 1)] * 20)               # screenshots, not slices
    assert may_form_volume([(ENHANCED_CT, 64)])
    assert not may_form_volume([(f.XA, 300)])                 # a 2D run, not a volume
    assert may_form_volume([("1.2.840.10008.5.1.4.1.1.13.1.1", 300)])      # 3D XA


# --- planes ------------------------------------------------------------------------------
def bright(png: bytes, centre=None, within: float | None = None, level: int = 128):
    """(area, row, column) of the pixels brighter than ``level``, only those within
    ``within`` pixels of ``centre`` (row, column) when given."""
    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    mask = grey > level
    if centre is not None:
        rows, cols = np.indices(grey.shape)
        mask &= (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= within ** 2
    rows, cols = np.nonzero(mask)
    return len(rows), (rows.mean() if len(rows) else math.nan), (cols.mean() if len(cols) else math.nan)


def expected_centres(volume):
    """Where each orthogonal plane shows the sphere's centre, in display pixels
    (row, column), and the display pixel size, from the geometry alone."""
    pixel = min(volume.spacing)
    k, j, i = PHANTOM.centre
    nz, ny, nx = volume.shape

    def at(index, n, spacing):       # a voxel centre through the resampling
        return (index + 0.5) * spacing / pixel - 0.5
    return pixel, {
        "axial": (at(j, ny, volume.spacing[1]), at(i, nx, volume.spacing[2])),
        "coronal": (at(nz - 1 - k, nz, volume.spacing[0]), at(i, nx, volume.spacing[2])),
        "sagittal": (at(nz - 1 - k, nz, volume.spacing[0]), at(j, ny, volume.spacing[1])),
    }


WINDOW = (SPHERE_HU / 2, SPHERE_HU)          # grey 128 at half the sphere's value


@pytest.mark.parametrize("plane", mpr.PLANES)
def test_each_plane_through_the_centre_shows_the_sphere_round_and_in_place(volume, plane):
    pixel, centres = expected_centres(volume)
    png = mpr.render_plane(volume, plane, window=WINDOW, position=PHANTOM.centre[mpr._AXIS[plane]]).data
    area, row, col = bright(png, centres[plane], 1.5 * PHANTOM.radius / pixel)
    circle = math.pi * (PHANTOM.radius / pixel) ** 2
    assert abs(area - circle) / circle < 0.10, (plane, area, circle)
    assert abs(row - centres[plane][0]) < 1 and abs(col - centres[plane][1]) < 1, (plane, row, col)


def test_oblique_plane_through_the_centre_shows_a_circle_at_the_image_centre(volume):
    png = mpr.render_plane(volume, "oblique", window=WINDOW, point=PHANTOM.centre, angles=(30, 40)).data
    side = Image.open(io.BytesIO(png)).size[0]
    pixel = float(np.linalg.norm(np.array(volume.shape) * np.array(volume.spacing))) / side
    middle = (side - 1) / 2
    area, row, col = bright(png, (middle, middle), 1.5 * PHANTOM.radius / pixel)
    circle = math.pi * (PHANTOM.radius / pixel) ** 2
    assert abs(area - circle) / circle < 0.10
    assert abs(row - middle) < 1 and abs(col - middle) < 1
    # A plane 8 mm off the centre along its normal cuts a smaller circle (radius 6 mm).
    u, v, n = mpr.oblique_axes(angles=(30, 40))
    shift = 8 * n[::-1] / np.array(volume.spacing)            # (L, P, S) mm -> (S, P, L) voxels
    png = mpr.render_plane(volume, "oblique", window=WINDOW, point=np.array(PHANTOM.centre) + shift,
                           angles=(30, 40)).data
    area, _, _ = bright(png, (middle, middle), 1.5 * PHANTOM.radius / pixel)
    assert abs(area - math.pi * (6 / pixel) ** 2) / (math.pi * (6 / pixel) ** 2) < 0.15


def rod_samples(volume):
    """Display pixels (row, column) along the rod's axial projection, ends left out."""
    pixel = min(volume.spacing)
    a, b = np.array(PHANTOM.rod_a), np.array(PHANTOM.rod_b)
    points = [a + s * (b - a) for s in np.linspace(0.05, 0.95, 40)]
    return [(int(round(p[1] / pixel)), int(round(p[0] / pixel))) for p in points]


def test_axial_mip_over_the_whole_volume_shows_the_rod(volume):
    rod_window = ((SPHERE_HU + ROD_HU) / 2, ROD_HU - SPHERE_HU)     # the sphere black
    thin = np.asarray(Image.open(io.BytesIO(mpr.render_plane(volume, "axial", window=rod_window,
                                                             position=PHANTOM.centre[0]).data)))
    mip = np.asarray(Image.open(io.BytesIO(mpr.render_plane(volume, "axial", window=rod_window,
                                                            slab=1000).data)))
    samples = rod_samples(volume)
    on_rod = [mip[r, c] > 128 for r, c in samples]
    assert sum(on_rod) >= 0.95 * len(samples)
    assert sum(thin[r, c] > 128 for r, c in samples) <= 0.1 * len(samples)     # a thin slice cuts it once
    # and the MIP is the rod: nothing bright away from its line (the sphere is dimmer)
    assert (mip > 128).sum() < 1.5 * len(samples) * (2 * PHANTOM.rod_radius / min(volume.spacing) + 2)
    # a 10 mm slab around slice 24 holds only a short piece of the rod
    slab = np.asarray(Image.open(io.BytesIO(mpr.render_plane(volume, "axial", window=rod_window,
                                                             position=PHANTOM.centre[0], slab=10).data)))
    assert 1 <= sum(slab[r, c] > 128 for r, c in samples) < 0.4 * len(samples)


def test_rotating_mip_turns_around_the_vertical_axis(volume):
    nz, ny, nx = volume.shape
    sz, sy, sx = volume.spacing
    offsets = {0: (PHANTOM.centre[2] + 0.5) * sx - nx * sx / 2,          # +L from the front
               180: -((PHANTOM.centre[2] + 0.5) * sx - nx * sx / 2)}     # mirrored from behind
    for angle, offset in offsets.items():
        png = mpr.render_plane(volume, "rotate", window=WINDOW, angle=angle)
        width, height = Image.open(io.BytesIO(png.data)).size
        pixel = math.hypot(nx * sx, ny * sy) / width
        centre = ((nz - 1 - PHANTOM.centre[0] + 0.5) * sz / pixel - 0.5, (width - 1) / 2 + offset / pixel)
        area, row, col = bright(png.data, centre, 1.5 * PHANTOM.radius / pixel, level=100)
        circle = math.pi * (PHANTOM.radius / pixel) ** 2
        assert abs(area - circle) / circle < 0.15, (angle, area, circle)
        assert abs(row - centre[0]) < 1.5 and abs(col - centre[1]) < 1.5, (angle, row, col, centre)
