"""Hand-written inline SVG charts (no JavaScript, no network assets) for ``report.html``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

__all__ = ["bar_chart", "line_chart"]

_W, _H, _PAD_L, _PAD_R, _PAD_T, _PAD_B = 560, 260, 56, 16, 28, 40
_LEGEND_ROW = 16  # one legend row between the title and the plot area, per 3 series
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def _ticks(lo: float, hi: float, n: int = 5, *, integer: bool = False) -> list[float]:
    """About ``n`` ticks at 1, 2 or 5 times a power of ten; whole numbers only if ``integer``
    (a step axis must not read 1.25 or 2.5)."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    if integer:
        step = max(1.0, float(math.ceil(step)))
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + 1e-9 * step:
        ticks.append(round(t) if integer else t)
        t += step
    return [float(t) for t in ticks] or [lo]


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def line_chart(
    title: str,
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    *,
    x_label: str,
    y_label: str,
    hline: tuple[str, float] | None = None,
) -> str:
    """An SVG line chart of named ``(x, y)`` series, with an optional labelled horizontal line.

    The legend sits above the plot area (``class="legend"``), never over a curve; when every x is
    a whole number (steps) the x ticks are whole numbers too.
    """
    points = [(x, y) for _, s in series for x, y in s if math.isfinite(y)]
    if hline is not None:
        points.append((points[0][0] if points else 0.0, hline[1]))
    if not points:
        return f"<p><em>{escape(title)}: no data</em></p>"
    x_lo, x_hi = min(p[0] for p in points), max(p[0] for p in points)
    y_lo, y_hi = min(0.0, min(p[1] for p in points)), max(p[1] for p in points)
    x_hi = x_hi if x_hi > x_lo else x_lo + 1
    y_hi = y_hi if y_hi > y_lo else y_lo + 1
    y_hi *= 1.05
    integer_x = all(float(p[0]).is_integer() for p in points)
    legend_rows = math.ceil(len(series) / 3)
    top = _PAD_T + _LEGEND_ROW * legend_rows
    height = _H + _LEGEND_ROW * legend_rows
    plot_w, plot_h = _W - _PAD_L - _PAD_R, height - top - _PAD_B

    def sx(x: float) -> float:
        return _PAD_L + (x - x_lo) / (x_hi - x_lo) * plot_w

    def sy(y: float) -> float:
        return top + plot_h - (y - y_lo) / (y_hi - y_lo) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {height}" width="{_W}" '
        f'height="{height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{_W / 2}" y="16" text-anchor="middle" font-size="14">{escape(title)}</text>',
        f'<rect class="plot-area" x="{_PAD_L}" y="{top}" width="{plot_w}" height="{plot_h}" '
        'fill="none" stroke="#999"/>',
    ]
    for t in _ticks(y_lo, y_hi):
        parts.append(
            f'<text x="{_PAD_L - 6}" y="{sy(t) + 4:.1f}" text-anchor="end" font-size="10">'
            f"{_fmt(t)}</text>"
        )
    for t in _ticks(x_lo, x_hi, integer=integer_x):
        label = str(int(t)) if integer_x else _fmt(t)
        parts.append(
            f'<text class="x-tick" x="{sx(t):.1f}" y="{height - _PAD_B + 14}" '
            f'text-anchor="middle" font-size="10">{label}</text>'
        )
    parts.append(
        f'<text x="{_PAD_L + plot_w / 2}" y="{height - 6}" text-anchor="middle" font-size="11">'
        f"{escape(x_label)}</text>"
    )
    parts.append(
        f'<text x="12" y="{top + plot_h / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {top + plot_h / 2})">{escape(y_label)}</text>'
    )
    if hline is not None:
        y = sy(hline[1])
        parts.append(
            f'<line x1="{_PAD_L}" x2="{_PAD_L + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#555" stroke-dasharray="4 3"/>'
            f'<text x="{_PAD_L + 4}" y="{y - 4:.1f}" text-anchor="start" font-size="10">'
            f"{escape(hline[0])}</text>"
        )
    for i, (name, s) in enumerate(series):
        colour = _COLOURS[i % len(_COLOURS)]
        pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s if math.isfinite(y))
        if pts:
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{pts}"/>'
            )
        lx = _PAD_L + (i % 3) * (plot_w / 3)
        ly = _PAD_T + _LEGEND_ROW * (i // 3) + 10
        parts.append(
            f'<g class="legend"><rect x="{lx:.1f}" y="{ly - 8}" width="12" height="3" '
            f'fill="{colour}"/><text x="{lx + 16:.1f}" y="{ly:.1f}" font-size="11" '
            f'fill="{colour}">{escape(name)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(title: str, values: dict[str, int]) -> str:
    """A horizontal SVG bar chart of counts by label."""
    if not values:
        return f"<p><em>{escape(title)}: none</em></p>"
    row = 22
    height = _PAD_T + row * len(values) + 10
    top = max(values.values()) or 1
    label_w, plot_w = 170, _W - 170 - 70
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {height}" width="{_W}" '
        f'height="{height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{_W / 2}" y="16" text-anchor="middle" font-size="14">{escape(title)}</text>',
    ]
    for i, (label, count) in enumerate(values.items()):
        y = _PAD_T + i * row
        w = count / top * plot_w
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end" font-size="11">'
            f"{escape(label)}</text>"
            f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" fill="#1f77b4"/>'
            f'<text x="{label_w + w + 4:.1f}" y="{y + 14}" font-size="11">{count}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
