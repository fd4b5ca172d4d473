"""Synthetic DSA runs with known answers: smooth 'anatomy', a vessel that fills and empties
with contrast (a bolus peaking at a known frame), a vessel that stays filled, and runs whose
contrast frame is the mask moved by a known sub-pixel amount (patient motion)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from tests import factories


def anatomy(size: int, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Smooth background 1500..2500, sampled at (x - dx, y - dy): the picture moved by shift."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    x, y = x - shift[0], y - shift[1]
    return 2000 + 350 * np.sin(x / 6.0) * np.cos(y / 7.0) + 150 * np.cos((x + y) / 11.0)


def bolus_run(frames: int = 30, size: int = 64, peak: int = 17, spread: float = 4.0,
              steady: bool = True, noise: float = 0.0, **kw) -> Dataset:
    """Frame 0 is the mask. A diagonal vessel's opacity follows a bolus curve that peaks at
    frame ``peak``; with ``steady`` a horizontal vessel (rows size//8 .. +4) keeps the same
    opacity (x0.7) in every frame after the mask, so its subtracted grey must not change
    from frame to frame. ``noise``: the standard deviation of added quantum-like noise
    (makes a 512x512 frame compress like a real one)."""
    background = anatomy(size)
    y, x = np.mgrid[0:size, 0:size]
    diagonal = np.abs(x - y) < max(3, size // 12)
    band = (y >= size // 8) & (y < size // 8 + 4)
    rng = np.random.default_rng(11)
    stack = np.empty((frames, size, size), dtype=np.uint16)
    for i in range(frames):
        opacity = 0.0 if i == 0 else 0.65 * np.exp(-((i - peak) / spread) ** 2)
        frame = background * np.where(diagonal, 1.0 - opacity, 1.0)
        if steady and i > 0:
            frame = frame * np.where(band & ~diagonal, 0.7, 1.0)
        if noise:
            frame = frame + rng.normal(0, noise, frame.shape)
        stack[i] = np.clip(np.rint(frame), 0, 4095)
    return _xa(stack, **kw)


def moved_run(shift: tuple[float, float], size: int = 48, **kw) -> Dataset:
    """Two frames: the mask, and the same anatomy moved by ``shift`` (dx, dy) pixels."""
    return _xa(np.stack([anatomy(size), anatomy(size, shift)]), **kw)


def _xa(values: np.ndarray, **kw) -> Dataset:
    ds = factories.base_dataset(factories.XA, modality="XA", **kw)
    factories._image(ds, np.clip(np.rint(values), 0, 4095).astype(np.uint16), 12)
    ds.CineRate = 15
    ds.FrameTime = 66.7
    return ds


def write(ds: Dataset, path: Path) -> Path:
    return factories.write(ds, path)
