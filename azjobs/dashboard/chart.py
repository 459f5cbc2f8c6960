"""A small inline SVG line chart (no script, no external asset: the page must work offline)."""

from __future__ import annotations

import html
import time
from typing import Sequence

from .history import Point

WIDTH, HEIGHT, PAD = 560, 140, 28


def _scale(values: Sequence[float], low: float, high: float, out_low: float, out_high: float) -> list[float]:
    span = (high - low) or 1.0
    return [out_low + (v - low) * (out_high - out_low) / span for v in values]


def depth_chart(points: Sequence[Point], title: str, *, width: int = WIDTH, height: int = HEIGHT,
                now: float | None = None) -> str:
    """An SVG of depth (and poison depth) over the sampled time; a note when there is nothing to draw yet."""
    label = html.escape(title)
    if len(points) < 2:
        return (f'<svg class="chart" role="img" aria-label="{label}" width="{width}" height="{height}" '
                f'viewBox="0 0 {width} {height}"><text x="{PAD}" y="{height // 2}" class="empty">'
                f'Collecting samples… ({len(points)} so far)</text></svg>')
    now = now if now is not None else time.time()
    times = [p.at for p in points]
    t0, t1 = times[0], max(times[-1], times[0] + 1)
    top = max(max(p.depth for p in points), max(p.poison_depth for p in points), 1)
    xs = _scale(times, t0, t1, PAD, width - 8)
    lines = []
    for cls, values in (("depth", [p.depth for p in points]), ("poison", [p.poison_depth for p in points])):
        ys = _scale(values, 0, top, height - PAD + 8, 10)
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
        lines.append(f'<polyline class="{cls}" fill="none" points="{coords}"/>')
    span_min = (t1 - t0) / 60
    age = max(0, now - t1)
    axis = (f'<line class="axis" x1="{PAD}" y1="{height - PAD + 8}" x2="{width - 8}" y2="{height - PAD + 8}"/>'
            f'<text x="2" y="14" class="tick">{top}</text><text x="2" y="{height - PAD + 8}" class="tick">0</text>'
            f'<text x="{PAD}" y="{height - 4}" class="tick">{span_min:.1f} min ago</text>'
            f'<text x="{width - 8}" y="{height - 4}" class="tick" text-anchor="end">'
            f'{"now" if age < 90 else f"{age / 60:.0f} min ago"}</text>')
    return (f'<svg class="chart" role="img" aria-label="{label}" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">{axis}{"".join(lines)}</svg>')
