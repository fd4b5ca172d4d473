"""Synthetic volumes for the MPR tests and the MPR benchmark: a sphere and a bright
oblique rod in a box, as a CT-like series of single-frame slices, as an Enhanced CT
multi-frame object with per-frame plane positions (acquired coronally, frames
stored out of order), or as a multi-frame object without positions.

The phantom is defined on a grid whose axes run along S, P and L (index
[k, j, i] at k*dz, j*dy, i*dx millimetres from the origin, which is the patient
position of voxel (0, 0, 0)): the grid MPR should give back whatever the
acquisition's orientation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests.factories import CT, base_dataset

ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
SPHERE_HU, ROD_HU = 1000, 2000
INTERCEPT = -1024


@dataclass(frozen=True)
class Phantom:
    shape: tuple[int, int, int] = (64, 64, 64)                 # slices along S, rows along P, columns along L
    spacing: tuple[float, float, float] = (1.6, 0.8, 0.8)      # mm along S, P, L
    centre: tuple[int, int, int] = (24, 40, 40)               # sphere centre, voxel indices (S, P, L)
    radius: float = 10.0                                        # mm
    # The rod, from A to B in (L, P, S) millimetres, and its radius.
    rod_a: tuple[float, float, float] = (2.0, 2.0, 4.0)
    rod_b: tuple[float, float, float] = (14.0, 46.0, 98.0)
    rod_radius: float = 1.2

    def values(self) -> np.ndarray:
        """Hounsfield units on the grid: 0 outside, SPHERE_HU in the sphere, ROD_HU in the rod."""
        k, j, i = np.indices(self.shape, dtype=np.float64)
        dz, dy, dx = self.spacing
        z, y, x = k * dz, j * dy, i * dx
        cz, cy, cx = (c * s for c, s in zip(self.centre, self.spacing))
        hu = np.zeros(self.shape, dtype=np.int16)
        hu[(z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= self.radius ** 2] = SPHERE_HU
        a, b = np.array(self.rod_a), np.array(self.rod_b)
        d = (b - a) / np.linalg.norm(b - a)
        p = np.stack([x - a[0], y - a[1], z - a[2]], axis=-1)
        t = np.clip(p @ d, 0, np.linalg.norm(b - a))
        distance = np.linalg.norm(p - t[..., None] * d, axis=-1)
        hu[distance <= self.rod_radius] = ROD_HU
        return hu

    def stored(self) -> np.ndarray:
        return (self.values().astype(np.int32) - INTERCEPT).astype(np.uint16)


def _pixels(ds: Dataset, frames: np.ndarray) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = frames.shape[-2:]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = frames.astype("<u2").tobytes()


def ct_series(phantom: Phantom | None = None, *, study_uid: str | None = None, seed: int = 7,
              **kw) -> list[Dataset]:
    """Axial single-frame CT slices, instance numbers shuffled (so the order must
    come from the positions, not the numbers)."""
    phantom = phantom or Phantom()
    stored = phantom.stored()
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    dz, dy, dx = phantom.spacing
    numbers = np.random.default_rng(seed).permutation(phantom.shape[0]) + 1
    out = []
    for k in range(phantom.shape[0]):
        ds = base_dataset(CT, modality="CT", study_uid=study_uid, series_uid=series_uid,
                          instance_number=int(numbers[k]), series_description="CT volume", **kw)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, round(k * dz, 4)]
        ds.PixelSpacing = [dy, dx]
        ds.SliceThickness = dz
        ds.RescaleIntercept, ds.RescaleSlope = INTERCEPT, 1
        _pixels(ds, stored[k])
        out.append(ds)
    return out


def enhanced_ct(phantom: Phantom | None = None, *, positions: bool = True, seed: int = 11,
                **kw) -> Dataset:
    """One Enhanced CT object acquired coronally: frame j is the plane at P = j*dy,
    its rows running from the head down (Image Orientation 1,0,0 / 0,0,-1), frames
    stored in a shuffled order. Without ``positions``: frames in P order, no Plane
    Position and no orientation, only Spacing Between Slices (an "assumed" volume)."""
    phantom = phantom or Phantom()
    stored = phantom.stored()
    dz, dy, dx = phantom.spacing
    nz, ny, _ = phantom.shape
    order = np.random.default_rng(seed).permutation(ny) if positions else np.arange(ny)
    ds = base_dataset(ENHANCED_CT, modality="CT", series_description="Enhanced CT volume", **kw)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.NumberOfFrames = ny
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [dz, dx]            # between rows (along S), between columns (along L)
    measures.SliceThickness = dy
    measures.SpacingBetweenSlices = dy
    shared.PixelMeasuresSequence = [measures]
    transform = Dataset()
    transform.RescaleIntercept, transform.RescaleSlope, transform.RescaleType = INTERCEPT, 1, "HU"
    shared.PixelValueTransformationSequence = [transform]
    if positions:
        plane = Dataset()
        plane.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
        shared.PlaneOrientationSequence = [plane]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    per_frame = []
    for j in order:
        frames.append(stored[::-1, j, :])            # row 0 is the top (highest S)
        item = Dataset()
        if positions:
            position = Dataset()
            position.ImagePositionPatient = [0, round(j * dy, 4), round((nz - 1) * dz, 4)]
            item.PlanePositionSequence = [position]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    _pixels(ds, np.stack(frames))
    return ds


def sagittal_series(phantom: Phantom | None = None, **kw) -> list[Dataset]:
    """Single-frame sagittal slices whose normal points to the patient's right
    (Image Orientation 0,1,0 / 0,0,-1): the stored order runs against the L axis,
    rows from the head down, columns along P."""
    phantom = phantom or Phantom()
    stored = phantom.stored()
    study_uid, series_uid = kw.pop("study_uid", None) or generate_uid(), generate_uid()
    dz, dy, dx = phantom.spacing
    nz, _, nx = phantom.shape
    out = []
    for i in range(nx):
        ds = base_dataset(CT, modality="CT", study_uid=study_uid, series_uid=series_uid,
                          instance_number=i + 1, series_description="CT sagittal", **kw)
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [round(i * dx, 4), 0, round((nz - 1) * dz, 4)]
        ds.PixelSpacing = [dz, dy]
        ds.RescaleIntercept, ds.RescaleSlope = INTERCEPT, 1
        _pixels(ds, stored[::-1, :, i])
        out.append(ds)
    return out
