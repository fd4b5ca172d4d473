"""The package's icons, drawn here rather than copied from anywhere.

A blue tile with a white ring and a branching vessel: an angiogram, abstracted.
Drawn once at 1024 px and reduced to each size DSM asks for.
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

MASTER = 1024


def master() -> Image.Image:
    size = MASTER
    tile = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    gradient = Image.new("RGBA", (size, size))
    top, bottom = (18, 64, 140), (20, 140, 190)
    draw = ImageDraw.Draw(gradient)
    for y in range(size):
        mix = y / (size - 1)
        draw.line([(0, y), (size, y)], fill=tuple(round(a + (b - a) * mix) for a, b in zip(top, bottom)) + (255,))
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rounded_rectangle([40, 40, size - 40, size - 40], radius=200, fill=255)
    tile.paste(gradient, (0, 0), mask)

    draw = ImageDraw.Draw(tile)
    white = (255, 255, 255, 255)
    centre, radius = size // 2, 330
    draw.ellipse([centre - radius, centre - radius, centre + radius, centre + radius],
                 outline=white, width=56)
    # A vessel entering from the top and branching twice.
    trunk = [(512, 180), (500, 330), (520, 470), (505, 560)]
    branches = [[(505, 560), (400, 650), (330, 780)], [(505, 560), (600, 660), (690, 770)],
                [(520, 470), (640, 420), (760, 440)], [(400, 650), (460, 800)]]
    draw.line(trunk, fill=white, width=58, joint="curve")
    for branch in branches:
        draw.line(branch, fill=white, width=40, joint="curve")
    return tile


def render(size: int, image: Image.Image | None = None) -> Image.Image:
    return (image or master()).resize((size, size), Image.Resampling.LANCZOS)


def write(path: Path, size: int, image: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    render(size, image).save(path, format="PNG", optimize=True)
    return path
