"""Planes of a Volume (imaging/volume.py) rendered as images: MPR and MIP.

- ``orthogonal``: the axial, coronal or sagittal plane at a slice position,
  either thin (one slice) or a slab of a thickness in mm reduced by maximum
  (MIP), mean or minimum along the plane's normal;
- ``oblique``: the plane through a point with any orientation (two angles or a
  normal), sampled by trilinear interpolation, with the same slab reduction;
- ``rotating_mip``: the MIP seen from an angle around the patient's vertical
  axis (one frame of a rotating cine).

Every plane is resampled to square display pixels (the smallest voxel spacing,
or coarser to fit ``max_size``), so a sphere shows round whatever the slice
spacing, then windowed with lut.apply_window and encoded as PNG or JPEG.

Display conventions (radiological): axial with the patient's right on the
image's left and anterior at the top; coronal and sagittal with the head at
the top, the sagittal with anterior on the left.

The trilinear sampler is numpy's (8 gathers per point, as
scipy.ndimage.map_coordinates with order=1 would do): it keeps scipy and its
35 MB of wheels out of the NAS package for the one function used.
"""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from dsmpacs.imaging.lut import Window, apply_window
from dsmpacs.imaging.render import FORMATS, Rendered, RenderError
from dsmpacs.imaging.volume import Volume

__all__ = ["PLANES", "MODES", "orthogonal", "oblique", "rotating_mip", "encode", "render_plane",
           "oblique_axes", "display_size", "plane_extent"]

PLANES = ("axial", "coronal", "sagittal")
MODES = ("mip", "avg", "min")
MAX_SIZE = 1024
DEFAULT_SIZE = 512
ROTATE_SIZE = 256                    # rotating MIP frames: a cine, computed per angle
_MAX_SLAB_SAMPLES = 64               # oblique slab: planes sampled at most (cost grows with each)
_AXIS = {"axial": 0, "coronal": 1, "sagittal": 2}


def _reduce(stack: np.ndarray, axis: int, mode: str) -> np.ndarray:
    if mode == "avg":
        return stack.mean(axis=axis, dtype=np.float32)
    if mode == "min":
        return stack.min(axis=axis)
    return stack.max(axis=axis)


def plane_extent(volume: Volume, plane: str) -> tuple[int, int, float, float]:
    """(rows, columns, row spacing mm, column spacing mm) of an orthogonal plane as stored."""
    nz, ny, nx = volume.shape
    sz, sy, sx = volume.spacing
    return {"axial": (ny, nx, sy, sx), "coronal": (nz, nx, sz, sx), "sagittal": (nz, ny, sz, sy)}[plane]


def display_size(rows: int, columns: int, row_mm: float, column_mm: float, pixel: float,
                 max_size: int) -> tuple[int, int]:
    """(height, width) in square display pixels of ``pixel`` mm, shrunk to fit max_size."""
    height, width = rows * row_mm / pixel, columns * column_mm / pixel
    scale = min(1.0, max_size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _slab_range(n: int, position: float, thickness: float, spacing: float) -> tuple[int, int]:
    """First and last slice whose centre lies within the slab (the nearest one when thin)."""
    nearest = min(max(int(math.floor(position + 0.5)), 0), n - 1)
    if thickness <= 0:
        return nearest, nearest
    half = thickness / 2 / spacing
    lo, hi = max(0, int(math.ceil(position - half))), min(n - 1, int(math.floor(position + half)))
    return (lo, hi) if lo <= hi else (nearest, nearest)


def orthogonal(volume: Volume, plane: str, position: float | None = None, *, slab: float = 0.0,
               mode: str = "mip", max_size: int = DEFAULT_SIZE) -> np.ndarray:
    """The plane's modality values (float32) in square display pixels. ``position``
    is the voxel index along the plane's normal axis (the middle when None);
    ``slab`` the thickness in mm (0: the one slice nearest the position)."""
    if plane not in _AXIS:
        raise RenderError(f"unknown plane {plane!r}")
    if mode not in MODES:
        raise RenderError(f"unknown projection {mode!r}")
    axis = _AXIS[plane]
    n = volume.shape[axis]
    position = (n - 1) / 2 if position is None else float(position)
    if not -0.5 <= position <= n - 0.5:
        raise RenderError(f"position {position} is outside 0..{n - 1}")
    lo, hi = _slab_range(n, position, max(0.0, slab), volume.spacing[axis])
    index = [slice(None)] * 3
    index[axis] = slice(lo, hi + 1)
    values = _reduce(volume.data[tuple(index)], axis, mode)
    if plane != "axial":
        values = values[::-1]                     # the head at the top
    rows, columns, row_mm, column_mm = plane_extent(volume, plane)
    return _resample(values, row_mm, column_mm, min(volume.spacing), max_size)


def _resample(values: np.ndarray, row_mm: float, column_mm: float, pixel: float,
              max_size: int) -> np.ndarray:
    height, width = display_size(values.shape[0], values.shape[1], row_mm, column_mm, pixel, max_size)
    image = Image.fromarray(np.ascontiguousarray(values, dtype=np.float32))
    if (height, width) != values.shape:
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


# --- oblique planes ---------------------------------------------------------------------
def _rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    if axis == 0:       # about L (x)
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])     # about S (z)


def oblique_axes(*, angles: tuple[float, float] | None = None,
                 normal: tuple[float, float, float] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u, v, n) unit vectors in (L, P, S) millimetre axes: image columns run along u,
    rows along v, the slab along n. From ``angles`` (a, b) in degrees: the axial
    plane tilted by b about the left-right axis (b=90: coronal), then turned by a
    about the vertical axis (a=90, b=90: sagittal). From ``normal`` (L, P, S): the
    smallest rotation taking the axial plane's normal onto it."""
    if normal is not None:
        n = np.asarray(normal, dtype=np.float64)
        length = np.linalg.norm(n)
        if not math.isfinite(length) or length < 1e-9:
            raise RenderError("the normal must be a non-zero vector")
        n = n / length
        z = np.array([0.0, 0.0, 1.0])
        axis = np.cross(z, n)
        sin, cos = np.linalg.norm(axis), float(z @ n)
        if sin < 1e-9:
            rotation = np.eye(3) if cos > 0 else np.diag([1.0, -1.0, -1.0])
        else:
            k = axis / sin
            cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
            rotation = np.eye(3) + sin * cross + (1 - cos) * cross @ cross     # Rodrigues
    else:
        a, b = angles or (0.0, 0.0)
        rotation = _rotation(2, a) @ _rotation(0, -b)
    return rotation[:, 0], rotation[:, 1], rotation[:, 2]


def _trilinear(data: np.ndarray, k: np.ndarray, j: np.ndarray, i: np.ndarray, outside: float) -> np.ndarray:
    """Values at fractional voxel indices (k, j, i), linear between voxel centres,
    ``outside`` beyond them: scipy.ndimage.map_coordinates(order=1, cval=outside)."""
    nk, nj, ni = data.shape
    inside = (k >= 0) & (k <= nk - 1) & (j >= 0) & (j <= nj - 1) & (i >= 0) & (i <= ni - 1)
    k0 = np.clip(np.floor(k), 0, max(nk - 2, 0)).astype(np.intp)
    j0 = np.clip(np.floor(j), 0, max(nj - 2, 0)).astype(np.intp)
    i0 = np.clip(np.floor(i), 0, max(ni - 2, 0)).astype(np.intp)
    fk = np.clip(k - k0, 0, 1).astype(np.float32)
    fj = np.clip(j - j0, 0, 1).astype(np.float32)
    fi = np.clip(i - i0, 0, 1).astype(np.float32)
    flat = data.reshape(-1)
    base = (k0 * nj + j0) * ni + i0
    dk, dj = (nj * ni if nk > 1 else 0), (ni if nj > 1 else 0)
    di = 1 if ni > 1 else 0

    def at(offset):
        return flat.take(base + offset).astype(np.float32)

    c00 = at(0) * (1 - fi) + at(di) * fi
    c01 = at(dj) * (1 - fi) + at(dj + di) * fi
    c10 = at(dk) * (1 - fi) + at(dk + di) * fi
    c11 = at(dk + dj) * (1 - fi) + at(dk + dj + di) * fi
    values = (c00 * (1 - fj) + c01 * fj) * (1 - fk) + (c10 * (1 - fj) + c11 * fj) * fk
    return np.where(inside, values, np.float32(outside))


def oblique(volume: Volume, point: tuple[float, float, float] | None = None, *,
            angles: tuple[float, float] | None = None, normal: tuple[float, float, float] | None = None,
            slab: float = 0.0, mode: str = "mip", max_size: int = DEFAULT_SIZE) -> np.ndarray:
    """The plane through ``point`` (voxel indices along axes S, P, L; the centre when
    None), oriented by ``angles`` or ``normal`` (see oblique_axes), as a square image
    as wide as the volume's diagonal with the point at its centre."""
    if mode not in MODES:
        raise RenderError(f"unknown projection {mode!r}")
    u, v, n = oblique_axes(angles=angles, normal=normal)
    shape = np.array(volume.shape, dtype=np.float64)
    sz, sy, sx = volume.spacing
    point = (shape - 1) / 2 if point is None else np.asarray(point, dtype=np.float64)
    # (L, P, S) millimetres of the point, measured from voxel (0, 0, 0)'s centre
    centre = np.array([point[2] * sx, point[1] * sy, point[0] * sz])
    diagonal = float(np.linalg.norm(shape * np.array(volume.spacing)))
    side = max(2, min(max_size, int(math.ceil(diagonal / min(volume.spacing)))))
    pixel = diagonal / side
    steps = (np.arange(side, dtype=np.float64) + 0.5 - side / 2) * pixel
    cols, rows = np.meshgrid(steps, steps)
    base = centre + cols[..., None] * u + rows[..., None] * v            # (side, side, 3) mm
    offsets = [0.0]
    if slab > 0:
        count = min(_MAX_SLAB_SAMPLES, int(slab / pixel) + 1)
        offsets = list(np.linspace(-slab / 2, slab / 2, count)) if count > 1 else [0.0]
    outside = float(volume.data.min())
    result = None
    for t in offsets:
        at = base + t * n
        values = _trilinear(volume.data, at[..., 2] / sz, at[..., 1] / sy, at[..., 0] / sx, outside)
        if result is None:
            result = values
        elif mode == "mip":
            np.maximum(result, values, out=result)
        elif mode == "min":
            np.minimum(result, values, out=result)
        else:
            result += values
    if mode == "avg" and len(offsets) > 1:
        result /= len(offsets)
    return result


# --- rotating MIP -----------------------------------------------------------------------
def _pooled(volume: Volume, size: int) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The volume max-pooled (a MIP keeps thin bright vessels that way) until each axis
    is at most ``size`` voxels; kept with the volume, used by every angle."""
    factors = tuple(max(1, math.ceil(n / size)) for n in volume.shape)
    if factors == (1, 1, 1):
        return volume.data, volume.spacing            # small enough as it is: no copy

    def make():
        data = volume.data
        trimmed = data[:data.shape[0] // factors[0] * factors[0] or None,
                       :data.shape[1] // factors[1] * factors[1] or None,
                       :data.shape[2] // factors[2] * factors[2] or None]
        nz, ny, nx = (trimmed.shape[a] // factors[a] for a in range(3))
        return np.ascontiguousarray(trimmed.reshape(nz, factors[0], ny, factors[1], nx, factors[2])
                                    .max(axis=(1, 3, 5)))

    pooled = volume.derive(f"pool-{size}", make)
    return pooled, tuple(s * f for s, f in zip(volume.spacing, factors))


def rotating_mip(volume: Volume, angle: float, *, max_size: int = ROTATE_SIZE) -> np.ndarray:
    """The maximum intensity projection seen from ``angle`` degrees around the
    patient's vertical axis: 0 looks from the front (as a coronal MIP), 90 from the
    patient's left. The head is at the top."""
    pooled, (sz, sy, sx) = _pooled(volume, max_size)
    nz, ny, nx = pooled.shape
    pixel = min(sx, sy)
    diagonal = math.hypot(nx * sx, ny * sy)
    width = max(2, min(max_size, int(math.ceil(diagonal / pixel))))
    pixel = diagonal / width
    steps = (np.arange(width, dtype=np.float64) + 0.5 - width / 2) * pixel
    depth, across = np.meshgrid(steps, steps, indexing="ij")       # (depth, column)
    a = math.radians(angle)
    # Seen from angle a: columns run along (cos a, sin a), the gaze along (-sin a, cos a).
    x = nx * sx / 2 + across * math.cos(a) - depth * math.sin(a)
    y = ny * sy / 2 + across * math.sin(a) + depth * math.cos(a)
    i, j = x / sx - 0.5, y / sy - 0.5
    inside = ((i >= 0) & (i <= nx - 1) & (j >= 0) & (j <= ny - 1)).ravel()
    i0 = np.clip(np.floor(i), 0, max(nx - 2, 0)).astype(np.intp)
    j0 = np.clip(np.floor(j), 0, max(ny - 2, 0)).astype(np.intp)
    fi = np.clip(i - i0, 0, 1).astype(np.float32).ravel()[inside]
    fj = np.clip(j - j0, 0, 1).astype(np.float32).ravel()[inside]
    base = (j0 * nx + i0).ravel()[inside]
    di, dj = (1 if nx > 1 else 0), (nx if ny > 1 else 0)
    column = np.broadcast_to(np.arange(width), (width, width)).ravel()[inside]
    flat = pooled.reshape(nz, ny * nx)
    outside = float(pooled.min())
    out = np.full((nz, width), outside, dtype=np.float32)
    order = np.argsort(column, kind="stable")          # group samples by output column
    column, base, fi, fj = column[order], base[order], fi[order], fj[order]
    starts = np.flatnonzero(np.r_[True, column[1:] != column[:-1]]) if len(column) else np.array([], int)
    for z0 in range(0, nz, 16):                         # bounded temporaries
        chunk = flat[z0:z0 + 16]
        top = chunk[:, base].astype(np.float32) * (1 - fi) + chunk[:, base + di].astype(np.float32) * fi
        bottom = chunk[:, base + dj].astype(np.float32) * (1 - fi) + chunk[:, base + dj + di] * fi
        values = top * (1 - fj) + bottom * fj
        if len(starts):
            out[z0:z0 + 16, column[starts]] = np.maximum.reduceat(values, starts, axis=1)
    return _resample(out[::-1], sz, pixel, min(pixel, sz), max_size)


# --- to an image -------------------------------------------------------------------------
def encode(values: np.ndarray, window: Window | tuple[float, float], *, fmt: str = "png",
           monochrome1: bool = False, quality: int = 90) -> Rendered:
    """Windowed modality values as a PNG or JPEG (lut.apply_window; MONOCHROME1 inverted)."""
    if fmt not in FORMATS:
        raise RenderError(f"unknown image format {fmt!r}")
    if isinstance(window, tuple):
        window = Window(float(window[0]), float(window[1]))
    if window.width < 1:
        raise RenderError("window width must be at least 1")
    grey = apply_window(values, window.center, window.width)
    if monochrome1:
        grey = 255 - grey
    out = io.BytesIO()
    pil_format, media_type = FORMATS[fmt]
    image = Image.fromarray(np.ascontiguousarray(grey))
    if pil_format == "JPEG":
        image.save(out, format="JPEG", quality=max(1, min(int(quality), 100)))
    else:
        image.save(out, format="PNG", compress_level=1)
    return Rendered(out.getvalue(), media_type, window)


def render_plane(volume: Volume, plane: str, *, window: Window | tuple[float, float] | None = None,
                 fmt: str = "png", **options) -> Rendered:
    """One image: ``plane`` is axial, coronal, sagittal (options: position, slab,
    mode, max_size), oblique (point, angles or normal, slab, mode, max_size) or
    rotate (angle, max_size)."""
    if plane == "oblique":
        values = oblique(volume, **options)
    elif plane == "rotate":
        values = rotating_mip(volume, **options)
    else:
        values = orthogonal(volume, plane, **options)
    return encode(values, window or volume.window, fmt=fmt, monochrome1=volume.monochrome1)
