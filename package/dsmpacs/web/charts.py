"""Bar charts drawn on the server as SVG: no chart library, no script, works
offline and on a phone. This module computes the geometry; the macro in
templates/_chart.html draws it, escaping every text like any template."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 8, 12, 28


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: str


@dataclass(frozen=True)
class Tick:
    position: float      # y for value ticks, x for label ticks
    text: str


@dataclass(frozen=True)
class BarChart:
    title: str
    width: int
    height: int
    bars: list[Bar]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    plot_left: float
    plot_right: float
    plot_top: float
    plot_bottom: float


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is >= value (1 for 0)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return float(step * power)
    return 10.0 * power


def bar_chart(values: Sequence[float], labels: Sequence[str], title: str, *,
              value_format: Callable[[float], str] = str, label_every: int = 5) -> BarChart:
    if len(values) != len(labels):
        raise ValueError("one label per value")
    top = nice_ceiling(max(values, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(values))
    bars = []
    for i, (value, label) in enumerate(zip(values, labels)):
        h = plot_h * (value / top)
        bars.append(Bar(x=round(LEFT + i * slot + slot * 0.1, 2), y=round(TOP + plot_h - h, 2),
                        width=round(slot * 0.8, 2), height=round(h, 2), label=label,
                        value=value_format(value)))
    y_ticks = [Tick(round(TOP + plot_h - plot_h * f, 2), value_format(top * f)) for f in (0, 0.5, 1)]
    last = len(labels) - 1
    x_ticks = [Tick(round(LEFT + i * slot + slot / 2, 2), labels[i]) for i in range(len(labels))
               if (last - i) % label_every == 0]
    return BarChart(title, WIDTH, HEIGHT, bars, y_ticks, x_ticks, LEFT, WIDTH - RIGHT, TOP, TOP + plot_h)
