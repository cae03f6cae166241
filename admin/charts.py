"""Bar charts drawn on the server as SVG: no script, no library, nothing fetched by the browser.

A chart is an image to assistive technology (``role="img"`` with its ``<title>`` and
``<desc>`` named by ``aria-labelledby``); the page puts the same numbers in a table
beside it, which is what a screen reader reads. Series are told apart by colour
and by the legend's text; bar colours have at least 3:1 contrast on white.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

COLOURS = ("#1f5fa8", "#b35c00", "#2e7d32", "#6a3fa0")  # blue, amber, green, purple: each ≥ 3:1 on white
WIDTH, HEIGHT = 560, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 16, 58


@dataclass(frozen=True)
class Series:
    name: str
    values: list[float | None]


def _ticks(largest: float, whole: bool = False) -> tuple[float, list[float]]:
    """A round top for the axis and its ticks (0 and four more)."""
    if largest <= 0:
        return 4, [0, 1, 2, 3, 4]
    raw = largest / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    if whole:  # counts: whole-number ticks
        step = max(1, math.ceil(step))
    return step * 4, [step * n for n in range(5)]


def _number(value: float) -> str:
    return f"{value:g}" if value == int(value) else f"{value:.1f}"


def bar_chart(
    chart_id: str, title: str, description: str, labels: list[str], series: list[Series], *, y_label: str, x_label: str
) -> Markup:
    """Grouped bars: one group per label (a week), one bar per series; missing values are left out."""
    values = [v for s in series for v in s.values if v is not None]
    top, ticks = _ticks(max(values, default=0), whole=all(float(v).is_integer() for v in values))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    group_w = plot_w / max(1, len(labels))
    bar_w = max(2.0, min(24.0, (group_w - 6) / max(1, len(series))))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT + 22 * len(series)}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" class="chart" id="{chart_id}">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(description)}</desc>',
        '<g font-family="sans-serif" font-size="11" fill="#3d4654">',
    ]
    for tick in ticks:
        y = TOP + plot_h - tick / top * plot_h
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d5dbe3"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_number(tick)}</text>')
    parts.append(f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + plot_h}" stroke="#3d4654"/>')
    parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" stroke="#3d4654"/>')
    every = max(1, math.ceil(len(labels) / 8))  # at most eight labels under the axis
    for n, label in enumerate(labels):
        x0 = LEFT + n * group_w + (group_w - bar_w * len(series)) / 2
        for k, one in enumerate(series):
            value = one.values[n]
            if value is None or value <= 0:
                continue
            height = value / top * plot_h
            parts.append(
                f'<rect x="{x0 + k * bar_w:.1f}" y="{TOP + plot_h - height:.1f}" width="{bar_w - 1:.1f}" height="{height:.1f}" '
                f'fill="{COLOURS[k % len(COLOURS)]}"/>'
            )
        if n % every == 0:
            parts.append(
                f'<text x="{LEFT + (n + 0.5) * group_w:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">{escape(label[-3:])}</text>'
            )
    parts.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{TOP + plot_h + 36}" text-anchor="middle">{escape(x_label)}</text>')
    parts.append(f'<text transform="translate(14 {TOP + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle">{escape(y_label)}</text>')
    for k, one in enumerate(series):  # the legend, under the axis label
        y = HEIGHT + 22 * k - 4
        parts.append(f'<rect x="{LEFT}" y="{y - 10}" width="12" height="12" fill="{COLOURS[k % len(COLOURS)]}"/>')
        parts.append(f'<text x="{LEFT + 18}" y="{y}">{escape(one.name)}</text>')
    parts.append("</g></svg>")
    return Markup("".join(parts))
