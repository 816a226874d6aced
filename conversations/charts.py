"""Bar charts drawn on the server as SVG geometry.

The page's Content-Security-Policy allows no inline script and no style attributes, so a chart is
plain SVG elements placed with ``x``/``y``/``width``/``height`` and coloured by CSS classes from
the site's stylesheet. Templates draw it (``conversations/usage.html#chart``); this module only
works out where each bar goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WIDTH = 720
HEIGHT = 240
LEFT = 72  # room for the largest value's label
RIGHT = WIDTH - 8
TOP = 16
BASELINE = HEIGHT - 28  # room for the first and last day under the bars
GAP = 0.2  # share of each bar's slot left empty between bars


@dataclass(frozen=True)
class Bar:
    key: Any
    value: int
    x: float
    y: float
    width: float
    height: float
    slot_x: float  # the bar's whole column, which carries its tooltip even when the bar is empty
    slot_width: float


@dataclass(frozen=True)
class BarChart:
    bars: list[Bar]
    max_value: int
    peak: Bar | None  # the first bar with the largest value
    total: int
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = RIGHT
    top: int = TOP
    baseline: int = BASELINE

    @property
    def first(self) -> Bar | None:
        return self.bars[0] if self.bars else None

    @property
    def last(self) -> Bar | None:
        return self.bars[-1] if self.bars else None

    @property
    def plot_height(self) -> int:
        return self.baseline - self.top


def bar_chart(points: list[tuple[Any, int]]) -> BarChart:
    """Return the geometry of one bar per ``(key, value)`` point, heights scaled to the largest."""
    max_value = max((value for _key, value in points), default=0)
    slot = (RIGHT - LEFT) / len(points) if points else 0
    plot_height = BASELINE - TOP
    bars = []
    for index, (key, value) in enumerate(points):
        height = plot_height * value / max_value if max_value else 0
        bars.append(Bar(
            key=key, value=value,
            x=round(LEFT + slot * (index + GAP / 2), 2), width=round(slot * (1 - GAP), 2),
            y=round(BASELINE - height, 2), height=round(height, 2),
            slot_x=round(LEFT + slot * index, 2), slot_width=round(slot, 2),
        ))
    peak = next((bar for bar in bars if bar.value == max_value), None) if max_value else None
    return BarChart(bars=bars, max_value=max_value, peak=peak, total=sum(v for _k, v in points))
