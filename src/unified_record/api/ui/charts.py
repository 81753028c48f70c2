"""Plain inline SVG charts (no script, nothing fetched): bars with a text alternative.

Each chart is drawn from numbers only; the page shows the same numbers in a table too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Bar", "bar_chart", "stacked_chart", "waterfall"]

BLUE, GREEN, RED = "#1d70b8", "#00703c", "#d4351c"
PALETTE = ("#1d70b8", "#f47738", "#00703c", "#4c2c92", "#d4351c", "#28a197", "#b58840",
           "#505a5f")


@dataclass(frozen=True)
class Bar:
    label: str
    start: float
    end: float
    colour: str = BLUE


def _esc(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def waterfall(bars: Sequence[Bar], title: str, *, label_width: int = 300,
              chart_width: int = 420) -> str:
    """Horizontal bars from `start` to `end` (a waterfall of match weights)."""
    row = 24
    points = [0.0] + [v for b in bars for v in (b.start, b.end) if math.isfinite(v)]
    low, high = min(points), max(points)
    span = (high - low) or 1.0

    def x(value: float) -> float:
        return label_width + (value - low) / span * chart_width

    height = row * (len(bars) + 1) + 10
    width = label_width + chart_width + 70
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="ur-chart" '
             f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMinYMin meet">',
             f"<title>{_esc(title)}</title>",
             f'<line x1="{x(0):.1f}" y1="0" x2="{x(0):.1f}" y2="{height - row}" stroke="#505a5f" '
             'stroke-dasharray="3,3"/>']
    for i, bar in enumerate(bars):
        y = 4 + i * row
        left, right = sorted((x(bar.start), x(bar.end)))
        parts.append(f'<text x="{label_width - 6}" y="{y + 15}" text-anchor="end" '
                     f'font-size="12" fill="#0b0c0c">{_esc(bar.label[:48])}</text>')
        parts.append(f'<rect x="{left:.1f}" y="{y + 3}" width="{max(right - left, 1.0):.1f}" '
                     f'height="{row - 8}" fill="{bar.colour}"/>')
        parts.append(f'<text x="{label_width + chart_width + 4}" y="{y + 15}" font-size="12" '
                     f'fill="#0b0c0c">{bar.end - bar.start:+.2f}</text>')
    axis = 4 + len(bars) * row
    for value in sorted({round(low, 1), 0.0, round(high, 1)}):
        parts.append(f'<text x="{x(value):.1f}" y="{axis + 12}" text-anchor="middle" '
                     f'font-size="11" fill="#0b0c0c">{value:.1f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(values: Sequence[tuple[str, float]], title: str, *, colour: str = BLUE,
              height: int = 160) -> str:
    """Vertical bars, one per (label, value), labels under the bars (at most 12 shown)."""
    count = max(len(values), 1)
    step = max(min(80, 640 // count), 6)
    width = max(50 + step * count, 320)
    top = max((v for _, v in values), default=0) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="ur-chart" '
             f'viewBox="0 0 {width} {height + 30}" width="{width}" height="{height + 30}">'
             f"<title>{_esc(title)}</title>",
             f'<line x1="46" y1="{height}" x2="{width}" y2="{height}" stroke="#505a5f"/>',
             f'<text x="42" y="14" text-anchor="end" font-size="12" fill="#0b0c0c">'
             f'{top:g}</text>',
             f'<text x="42" y="{height}" text-anchor="end" font-size="12" fill="#0b0c0c">0</text>']
    label_every = max(1, -(-count // 12))
    for i, (label, value) in enumerate(values):
        h = value / top * (height - 10)
        x = 50 + i * step
        parts.append(f'<rect x="{x}" y="{height - h:.1f}" width="{max(step - 4, 2)}" '
                     f'height="{h:.1f}" fill="{colour}"><title>{_esc(label)}: {value:g}</title>'
                     "</rect>")
        if i % label_every == 0:
            shown = label if len(label) <= max(step * label_every // 7, 5) else label[-5:]
            parts.append(f'<text x="{x}" y="{height + 16}" font-size="12" fill="#0b0c0c">'
                         f'{_esc(shown)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def stacked_chart(columns: Sequence[str], series: Sequence[tuple[str, Sequence[float]]],
                  title: str, *, height: int = 160) -> str:
    """Vertical stacked bars: one bar per column, one coloured part per series, a legend."""
    count = max(len(columns), 1)
    step = max(min(60, 640 // count), 6)
    width = max(50 + step * count, 320)
    totals = [sum(values[i] for _, values in series) for i in range(len(columns))]
    top = max(totals, default=0) or 1
    per_row = max(1, (width - 50) // 130)
    legend_rows = -(-len(series) // per_row)
    full = height + 30 + 20 * legend_rows
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="ur-chart" '
             f'viewBox="0 0 {width} {full}" width="{width}" height="{full}">'
             f"<title>{_esc(title)}</title>",
             f'<line x1="46" y1="{height}" x2="{width}" y2="{height}" stroke="#505a5f"/>',
             f'<text x="42" y="14" text-anchor="end" font-size="12" fill="#0b0c0c">{top:g}</text>',
             f'<text x="42" y="{height}" text-anchor="end" font-size="12" fill="#0b0c0c">0</text>']
    label_every = max(1, -(-count // 8))
    for i, column in enumerate(columns):
        x, base = 50 + i * step, float(height)
        for k, (name, values) in enumerate(series):
            h = values[i] / top * (height - 10)
            if h <= 0:
                continue
            base -= h
            parts.append(f'<rect x="{x}" y="{base:.1f}" width="{max(step - 4, 2)}" '
                         f'height="{h:.1f}" fill="{PALETTE[k % len(PALETTE)]}">'
                         f"<title>{_esc(column)}, {_esc(name)}: {values[i]:g}</title></rect>")
        if i % label_every == 0:
            parts.append(f'<text x="{x}" y="{height + 16}" font-size="12" fill="#0b0c0c">'
                         f"{_esc(column[-5:])}</text>")
    for k, (name, _) in enumerate(series):
        lx, ly = 50 + (k % per_row) * 130, height + 30 + (k // per_row) * 20
        parts.append(f'<rect x="{lx}" y="{ly}" width="12" height="12" '
                     f'fill="{PALETTE[k % len(PALETTE)]}"/>'
                     f'<text x="{lx + 16}" y="{ly + 11}" font-size="12" fill="#0b0c0c">'
                     f"{_esc(name[:18])}</text>")
    parts.append("</svg>")
    return "".join(parts)
