"""A 3D volume built from a series, for MPR and MIP (imaging/mpr.py renders it).

Three sources, tried in this order:

- a multi-frame object whose Per-Frame Functional Groups give each frame's Plane
  Position (3D XA, Enhanced CT/MR/XA...): frames sorted along the slice normal;
- single-frame instances (a CT-like series): sorted by Image Position (Patient)
  projected on the normal of Image Orientation (Patient), the spacing taken from
  the positions; slices of another orientation or size are refused, not guessed;
- a multi-frame object without positions: frames in stored order, the spacing
  taken from Spacing Between Slices, Slice Thickness or the pixel spacing, and
  the volume flagged ``assumed`` (its proportions are a guess the page shows).

The voxels hold modality values (Modality LUT applied), int16 when the values
are whole numbers that fit, float32 otherwise. The array is reoriented once,
by axis permutation and flips only (no resampling), so that its axes run along
the patient's +S (axis 0), +P (axis 1) and +L (axis 2) as near as the
acquisition allows: the axial, coronal and sagittal planes are then plain
array slices. Frames are read one at a time through frames.py and decode.py,
so a compressed run is never decompressed whole.

volume_cache.py keeps built volumes within a byte budget.
"""
from __future__ import annotations

import itertools
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
from pydicom.dataset import Dataset

from dsmpacs.imaging.decode import DecodeError, decode_frame
from dsmpacs.imaging.frames import PixelDataError, PixelLayout, read_frame, read_layout
from dsmpacs.imaging.lut import Window, auto_window, window_presets

__all__ = ["Volume", "VolumeError", "VolumeTooLarge", "build_volume",
           "may_form_volume", "MIN_SLICES", "VOLUME_SOP_CLASSES"]

MIN_SLICES = 8                       # fewer is a handful of images, not a volume
_ORIENTATION_TOLERANCE = 1e-3        # direction cosines written with 6 digits or fewer
_SPACING_TOLERANCE = 0.1             # a gap 10% off the median spacing is a missing slice

# Multi-frame objects that are volumes by definition (a cheap check on the index).
VOLUME_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.13.1.1",    # X-Ray 3D Angiographic Image
    "1.2.840.10008.5.1.4.1.1.13.1.2",    # X-Ray 3D Craniofacial Image
    "1.2.840.10008.5.1.4.1.1.13.1.3",    # Breast Tomosynthesis Image
    "1.2.840.10008.5.1.4.1.1.2.1",       # Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.2.2",       # Legacy Converted Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.4.1",       # Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.4.4",       # Legacy Converted Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.128.1",     # Legacy Converted Enhanced PET Image
    "1.2.840.10008.5.1.4.1.1.130",       # Enhanced PET Image
})


# Single-frame images that come as slices of a volume.
SLICE_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.2",         # CT Image
    "1.2.840.10008.5.1.4.1.1.4",         # MR Image
    "1.2.840.10008.5.1.4.1.1.128",       # Positron Emission Tomography Image
}) | VOLUME_SOP_CLASSES


class VolumeError(ValueError):
    """The series cannot be made into a volume. ``key`` and ``params`` name the
    reason in the i18n catalogs (mpr.error.*); str() is the English text."""

    def __init__(self, key: str, message: str, **params):
        super().__init__(message)
        self.key = key
        self.params = params


class VolumeTooLarge(VolumeError):
    """The volume alone would exceed the cache's byte budget."""

    def __init__(self, needed: int, budget: int):
        mb = lambda n: int(math.ceil(n / 2 ** 20))  # noqa: E731
        super().__init__("study.mpr.error.too_large",
                         f"the volume needs {mb(needed)} MiB, more than the {mb(budget)} MiB "
                         "viewer_volume_cache_mb allows", needed=mb(needed), budget=mb(budget))
        self.needed = needed
        self.budget = budget


@dataclass
class Volume:
    """Voxels indexed [s, p, l]: axis 0 runs towards the patient's head (S), axis 1
    towards the back (P), axis 2 towards the patient's left (L), as near as the
    acquisition's orientation allows."""
    data: np.ndarray                            # int16 or float32 modality values
    spacing: tuple[float, float, float]         # mm between voxel centres along axes 0, 1, 2
    assumed: bool                               # spacing/orientation guessed, not read from positions
    source: str                                 # "positions", "frame-positions" or "assumed"
    window: Window                              # the default window (first preset, else the range)
    presets: list[Window]
    monochrome1: bool = False
    build_seconds: float = 0.0
    # Lazily derived data kept with the volume (rotating MIP); guarded by _lock.
    derived: dict = field(default_factory=dict, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.data.shape)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes) + sum(int(getattr(v, "nbytes", 0)) for v in self.derived.values())

    def derive(self, name: str, make: Callable[[], np.ndarray]) -> np.ndarray:
        """A value computed from the voxels once and kept (counted in nbytes)."""
        with self._lock:
            if name not in self.derived:
                self.derived[name] = make()
            return self.derived[name]


def may_form_volume(instances: Iterable[tuple[str, int]]) -> bool:
    """Whether a series can make a volume, from its index rows alone (SOP class,
    frames): at least MIN_SLICES single-frame cross-sectional images (CT, MR, PET:
    what a 3D reconstruction of a rotational run is exported as, too), or a
    3D/enhanced multi-frame object of at least MIN_SLICES frames. No file is read.
    A stack of radiographs or screenshots is not offered, though the builder would
    stack it (flagged assumed) if asked."""
    singles = 0
    for sop_class, frames in instances:
        if frames >= MIN_SLICES and sop_class in VOLUME_SOP_CLASSES:
            return True
        if frames == 1 and sop_class in SLICE_SOP_CLASSES:
            singles += 1
    return singles >= MIN_SLICES


# --- reading headers -------------------------------------------------------------------
def _floats(value, n: int) -> np.ndarray | None:
    try:
        numbers = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return numbers if numbers.shape == (n,) and np.all(np.isfinite(numbers)) else None


def _item(ds: Dataset | None, keyword: str) -> Dataset | None:
    seq = ds.get(keyword) if ds is not None else None
    return seq[0] if seq else None


def _functional(layout: PixelLayout, frame: int, sequence: str) -> Dataset | None:
    """The first item of a functional group macro for ``frame``: per-frame first,
    then shared (PS3.3 C.7.6.16)."""
    header = layout.header
    per_frame = header.get("PerFrameFunctionalGroupsSequence")
    if per_frame and frame < len(per_frame):
        found = _item(per_frame[frame], sequence)
        if found is not None:
            return found
    return _item(_item(header, "SharedFunctionalGroupsSequence"), sequence)


def _orientation(ds: Dataset | None) -> np.ndarray | None:
    iop = _floats(ds.get("ImageOrientationPatient"), 6) if ds is not None else None
    if iop is None:
        return None
    row, col = iop[:3], iop[3:]
    if not (0.9 < np.linalg.norm(row) < 1.1 and 0.9 < np.linalg.norm(col) < 1.1) or abs(row @ col) > 0.01:
        return None
    return iop


def _position(ds: Dataset | None) -> np.ndarray | None:
    return _floats(ds.get("ImagePositionPatient"), 3) if ds is not None else None


def _pixel_spacing(ds: Dataset | None) -> tuple[float, float] | None:
    """(row spacing, column spacing) in mm: between rows, then between columns."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = _floats(ds.get(keyword), 2) if ds is not None else None
        if value is not None and np.all(value > 0):
            return float(value[0]), float(value[1])
    return None


def _positive(ds: Dataset | None, keyword: str) -> float | None:
    try:
        value = float(ds.get(keyword)) if ds is not None and ds.get(keyword) not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return value if value is not None and value > 0 and math.isfinite(value) else None


def _rescale(ds: Dataset | None) -> tuple[float, float] | None:
    if ds is None:
        return None
    try:
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
    except (TypeError, ValueError):
        return None
    return slope, intercept


def _is_grey(layout: PixelLayout) -> bool:
    return layout.samples_per_pixel == 1 and layout.photometric_interpretation in ("MONOCHROME1", "MONOCHROME2")


# --- the plan: which frames, in which order, with which geometry ----------------------------
@dataclass
class _Slice:
    path: object
    layout: PixelLayout
    frame: int
    rescale: tuple[float, float]


@dataclass
class _Plan:
    slices: list[_Slice]
    row_dir: np.ndarray          # patient direction of increasing column index
    col_dir: np.ndarray          # patient direction of increasing row index
    normal: np.ndarray           # patient direction of increasing slice index
    spacing: tuple[float, float, float]     # (slice, row, column) mm
    source: str
    header: Dataset


def _plan(paths: Sequence) -> _Plan:
    layouts = []
    for path in paths:
        try:
            layout = read_layout(path)
        except (OSError, ValueError) as exc:
            raise VolumeError("study.mpr.error.unreadable", f"cannot read an image header: {exc}") from exc
        if layout is not None and layout.rows > 0 and layout.columns > 0:
            layouts.append((path, layout))
    if not layouts:
        raise VolumeError("study.mpr.error.no_images", "the series has no images")
    if any(not _is_grey(layout) for _, layout in layouts):
        raise VolumeError("study.mpr.error.colour", "colour images cannot make a volume")
    multi = [(p, lay) for p, lay in layouts if lay.number_of_frames > 1]
    if multi:
        # The multi-frame object with the most frames is the volume (a 3D XA series may
        # carry a projection run or a secondary capture beside it).
        path, layout = max(multi, key=lambda pl: pl[1].number_of_frames)
        return _multi_frame_plan(path, layout)
    return _single_frame_plan(layouts)


def _single_frame_plan(layouts: list[tuple[object, PixelLayout]]) -> _Plan:
    if len(layouts) < 2:
        raise VolumeError("study.mpr.error.too_few", "one image is not a volume", count=len(layouts))
    first = layouts[0][1]
    sizes = {(lay.rows, lay.columns) for _, lay in layouts}
    if len(sizes) > 1:
        raise VolumeError("study.mpr.error.sizes", "the slices have different sizes: "
                          + ", ".join(f"{c}x{r}" for r, c in sorted(sizes)))
    orientations = [_orientation(lay.header) for _, lay in layouts]
    positions = [_floats(lay.header.get("ImagePositionPatient"), 3) for _, lay in layouts]
    slices = [_Slice(p, lay, 0, _rescale(lay.header) or (1.0, 0.0)) for p, lay in layouts]
    if any(o is None for o in orientations) or any(p is None for p in positions):
        if all(o is None for o in orientations) and all(p is None for p in positions):
            return _assumed_plan(slices, first.header)     # no geometry at all: the stored order
        raise VolumeError("study.mpr.error.positions", "some slices lack Image Position or Image "
                          "Orientation (Patient)")
    reference = orientations[0]
    if any(np.max(np.abs(o - reference)) > _ORIENTATION_TOLERANCE for o in orientations):
        raise VolumeError("study.mpr.error.orientation", "the slices do not all have the same orientation")
    row_dir, col_dir = reference[:3], reference[3:]
    normal = np.cross(row_dir, col_dir)
    distances = np.array([p @ normal for p in positions])
    order = np.argsort(distances, kind="stable")
    distances = distances[order]
    slices = [slices[i] for i in order]
    gaps = np.diff(distances)
    spacing = float(np.median(gaps))
    if spacing <= 1e-6 or np.min(gaps) <= 1e-6:
        raise VolumeError("study.mpr.error.duplicate", "two slices share a position (several "
                          "acquisitions in one series?)")
    if np.max(np.abs(gaps - spacing)) > _SPACING_TOLERANCE * spacing:
        raise VolumeError("study.mpr.error.gaps", f"the slice spacing is irregular ({np.min(gaps):.2f} to "
                          f"{np.max(gaps):.2f} mm): a slice is missing or the series mixes stacks",
                          low=round(float(np.min(gaps)), 2), high=round(float(np.max(gaps)), 2))
    pixel = _pixel_spacing(first.header) or (spacing, spacing)
    return _Plan(slices, row_dir, col_dir, normal, (spacing, pixel[0], pixel[1]), "positions", first.header)


def _multi_frame_plan(path, layout: PixelLayout) -> _Plan:
    n = layout.number_of_frames
    rescales = [_rescale(_functional(layout, i, "PixelValueTransformationSequence"))
                or _rescale(layout.header) or (1.0, 0.0) for i in range(n)]
    slices = [_Slice(path, layout, i, rescales[i]) for i in range(n)]
    positions = [_position(_functional(layout, i, "PlanePositionSequence")) for i in range(n)]
    orientation = (_orientation(_functional(layout, 0, "PlaneOrientationSequence"))
                   if positions and positions[0] is not None else None)
    if orientation is None or any(p is None for p in positions):
        return _assumed_plan(slices, layout.header)
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    distances = np.array([p @ normal for p in positions])
    order = np.argsort(distances, kind="stable")
    gaps = np.diff(distances[order])
    spacing = float(np.median(gaps)) if len(gaps) else 0.0
    if spacing <= 1e-6 or np.min(gaps) <= 1e-6:
        raise VolumeError("study.mpr.error.duplicate", "two frames share a position")
    if np.max(np.abs(gaps - spacing)) > _SPACING_TOLERANCE * spacing:
        raise VolumeError("study.mpr.error.gaps", f"the frame spacing is irregular ({np.min(gaps):.2f} to "
                          f"{np.max(gaps):.2f} mm)", low=round(float(np.min(gaps)), 2),
                          high=round(float(np.max(gaps)), 2))
    measures = _functional(layout, 0, "PixelMeasuresSequence")
    pixel = _pixel_spacing(measures) or _pixel_spacing(layout.header) or (spacing, spacing)
    return _Plan([slices[i] for i in order], row_dir, col_dir, normal, (spacing, pixel[0], pixel[1]),
                 "frame-positions", layout.header)


def _assumed_plan(slices: list[_Slice], header: Dataset) -> _Plan:
    """No positions: the stored order, axial, with the spacing the header suggests."""
    measures = _functional(slices[0].layout, 0, "PixelMeasuresSequence")
    pixel = _pixel_spacing(measures) or _pixel_spacing(header)
    between = (_positive(measures, "SpacingBetweenSlices") or _positive(header, "SpacingBetweenSlices")
               or _positive(measures, "SliceThickness") or _positive(header, "SliceThickness"))
    if pixel is None:
        pixel = (between or 1.0, between or 1.0)
    spacing = between or float(min(pixel))
    return _Plan(slices, np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([0, 0, 1.0]),
                 (spacing, pixel[0], pixel[1]), "assumed", header)


# --- reorientation: the array's axes towards S, P, L ------------------------------------
def _canonical_axes(plan: _Plan) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """For patient axes (z=S, y=P, x=L) in that order, which stored axis runs along
    each (stored axes: 0 slice, 1 row, 2 column) and whether it runs backwards."""
    # directions[a] = patient direction of stored axis a (LPS: x=L, y=P, z=S)
    directions = np.stack([plan.normal, plan.col_dir, plan.row_dir])
    best, best_score = None, -1.0
    for perm in itertools.permutations(range(3)):
        # perm[k] = stored axis used for patient axis k, k in (z, y, x) -> LPS index (2, 1, 0)
        score = sum(abs(directions[perm[k], 2 - k]) for k in range(3))
        if score > best_score + 1e-9:
            best, best_score = perm, score
    flips = tuple(bool(directions[best[k], 2 - k] < 0) for k in range(3))
    return best, flips


# --- reading voxels --------------------------------------------------------------------
def _dtype(plan: _Plan) -> np.dtype:
    """int16 when every modality value is a whole number within int16, else float32."""
    layout = plan.slices[0].layout
    bits = min(layout.bits_stored, layout.bits_allocated)
    if layout.pixel_representation:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        lo, hi = 0, 2 ** bits - 1
    if "ModalityLUTSequence" in plan.header:
        return np.dtype(np.float32)
    for slope, intercept in {s.rescale for s in plan.slices}:
        if slope != int(slope) or intercept != int(intercept):
            return np.dtype(np.float32)
        ends = (lo * slope + intercept, hi * slope + intercept)
        if min(ends) < -32768 or max(ends) > 32767:
            return np.dtype(np.float32)
    return np.dtype(np.int16)


def _read_slice(item: _Slice, layout_header: Dataset, dtype: np.dtype) -> np.ndarray:
    layout = item.layout
    try:
        pixels = decode_frame(layout, read_frame(item.path, layout, item.frame), rgb=False)
    except (DecodeError, PixelDataError, OSError) as exc:
        raise VolumeError("study.mpr.error.decode", f"frame {item.frame + 1} cannot be decoded: {exc}") from exc
    if pixels.ndim != 2:
        raise VolumeError("study.mpr.error.colour", "colour images cannot make a volume")
    if layout.pixel_representation == 0 and layout.bits_stored < layout.bits_allocated:
        pixels = pixels & ((1 << layout.bits_stored) - 1)
    if "ModalityLUTSequence" in layout_header:
        from dsmpacs.imaging.lut import modality
        return modality(pixels, layout_header).astype(dtype, copy=False)
    slope, intercept = item.rescale
    if dtype == np.int16:
        values = pixels.astype(np.int32, copy=False)
        if slope != 1:
            values = values * int(slope)
        if intercept:
            values = values + int(intercept)
        return values.astype(np.int16)
    values = pixels.astype(np.float32)
    if slope != 1:
        values *= np.float32(slope)
    if intercept:
        values += np.float32(intercept)
    return values


def _needed(plan: _Plan) -> int:
    layout = plan.slices[0].layout
    return len(plan.slices) * layout.rows * layout.columns * _dtype(plan).itemsize


def build_volume(paths: Sequence, *, max_bytes: int | None = None, plan: _Plan | None = None,
                 make_room: Callable[[int], None] | None = None) -> Volume:
    """Read the series' files (``paths``, any order) into a Volume. Raises VolumeError
    with the reason, VolumeTooLarge before reading any pixel when the voxels alone
    would pass ``max_bytes``. ``make_room(bytes)`` is called before the voxels are
    allocated (the cache evicts then, not after, so memory stays within its budget)."""
    started = time.perf_counter()
    plan = plan or _plan(paths)
    layout = plan.slices[0].layout
    if len(plan.slices) < 2:
        raise VolumeError("study.mpr.error.too_few", "one frame is not a volume", count=len(plan.slices))
    dtype = _dtype(plan)
    needed = _needed(plan)
    if max_bytes is not None and needed > max_bytes:
        raise VolumeTooLarge(needed, max_bytes)
    if make_room is not None:
        make_room(needed)
    perm, flips = _canonical_axes(plan)
    stored_shape = (len(plan.slices), layout.rows, layout.columns)
    # The voxels go straight to their reoriented place: data = flip(transpose(stored, perm)),
    # so stored = transpose(flip(data), perm^-1) is a view of data, written slice by slice
    # (no second copy of the volume, whatever the acquisition's orientation).
    data = np.empty(tuple(stored_shape[perm[k]] for k in range(3)), dtype=dtype)
    stored = np.transpose(data[tuple(slice(None, None, -1) if f else slice(None) for f in flips)],
                          np.argsort(perm))
    for i, item in enumerate(plan.slices):
        if (item.layout.rows, item.layout.columns) != (layout.rows, layout.columns):
            raise VolumeError("study.mpr.error.sizes", "the slices have different sizes")
        stored[i] = _read_slice(item, item.layout.header, dtype)
    spacing = tuple(float(plan.spacing[perm[k]]) for k in range(3))
    presets = window_presets(plan.header)
    window = presets[0] if presets else _range_window(data)
    return Volume(data=data, spacing=spacing, assumed=plan.source == "assumed", source=plan.source,
                  window=window, presets=presets,
                  monochrome1=layout.photometric_interpretation == "MONOCHROME1",
                  build_seconds=time.perf_counter() - started)


def _range_window(data: np.ndarray) -> Window:
    """The volume's range without its extreme tails (air and metal would flatten the rest)."""
    # About a million voxels spread over the volume say as much as all of them.
    stride = max(1, round((data.size / 1e6) ** (1 / 3)))
    sample = data[::stride, ::stride, ::stride].ravel()
    lo, hi = np.quantile(sample, [0.005, 0.995], method="closest_observation") if sample.size else (0, 1)
    if hi <= lo:
        return auto_window(sample)
    return Window(center=float(lo + hi + 1) / 2, width=float(hi - lo + 1), name="auto")
