"""Inline SVG plots for the "Empirical privacy" section: an exposure histogram and ROC curves.

No JavaScript, no external assets: the fragment embeds in ``report.html`` or stands alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

__all__ = ["histogram_svg", "roc_svg"]

_W, _H, _L, _R, _T, _B = 520, 280, 52, 16, 30, 44
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def _frame(title: str, x_label: str, y_label: str) -> list[str]:
    pw, ph = _W - _L - _R, _H - _T - _B
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" width="{_W}" '
        f'height="{_H}" role="img" aria-label="{escape(title)}">',
        f'<text x="{_W / 2}" y="18" text-anchor="middle" font-size="14">{escape(title)}</text>',
        f'<rect x="{_L}" y="{_T}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
        f'<text x="{_L + pw / 2}" y="{_H - 8}" text-anchor="middle" font-size="12">'
        f"{escape(x_label)}</text>",
        f'<text x="14" y="{_T + ph / 2}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 14 {_T + ph / 2})">{escape(y_label)}</text>',
    ]


def _tick(x: float, y: float, label: str, anchor: str) -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="10">{label}</text>'


def histogram_svg(
    values: Sequence[float],
    *,
    title: str,
    x_label: str,
    x_max: float | None = None,
    bins: int = 20,
    marker: tuple[str, float] | None = None,
) -> str:
    """A histogram of ``values`` on ``[0, x_max]`` with an optional labelled vertical line."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return f"<p><em>{escape(title)}: no data</em></p>"
    hi = x_max if x_max is not None else max(max(finite), 1.0)
    hi = hi if hi > 0 else 1.0
    counts = [0] * bins
    for v in finite:
        counts[min(bins - 1, max(0, int(v / hi * bins)))] += 1
    top = max(counts)
    pw, ph = _W - _L - _R, _H - _T - _B
    parts = _frame(title, x_label, "canaries")
    bw = pw / bins
    for i, c in enumerate(counts):
        h = c / top * ph
        parts.append(
            f'<rect x="{_L + i * bw + 1:.1f}" y="{_T + ph - h:.1f}" width="{bw - 2:.1f}" '
            f'height="{h:.1f}" fill="{_COLOURS[0]}"><title>{c}</title></rect>'
        )
    for k in range(5):
        x = hi * k / 4
        parts.append(_tick(_L + pw * k / 4, _T + ph + 14, f"{x:.3g}", "middle"))
    parts.append(_tick(_L - 4, _T + 4, str(top), "end"))
    parts.append(_tick(_L - 4, _T + ph, "0", "end"))
    if marker is not None and 0 <= marker[1] <= hi:
        x = _L + marker[1] / hi * pw
        parts.append(
            f'<line x1="{x:.1f}" y1="{_T}" x2="{x:.1f}" y2="{_T + ph}" stroke="#d62728" '
            'stroke-dasharray="4 3"/>'
        )
        parts.append(_tick(x + 4, _T + 14, escape(marker[0]), "start"))
    parts.append("</svg>")
    return "".join(parts)


def roc_svg(
    curves: Sequence[tuple[str, Sequence[float], Sequence[float]]], *, title: str, log: bool = True
) -> str:
    """ROC curves ``(name, fpr, tpr)``; ``log`` puts both axes on a log scale from 10⁻³ (the
    low-FPR region is where an attack on individuals shows), with the chance diagonal."""
    if not curves:
        return f"<p><em>{escape(title)}: no data</em></p>"
    pw, ph = _W - _L - _R, _H - _T - _B
    floor = 1e-3

    def sc(v: float) -> float:
        if not log:
            return v
        return (math.log10(max(v, floor)) - math.log10(floor)) / -math.log10(floor)

    def px(x: float, y: float) -> str:
        return f"{_L + sc(x) * pw:.1f},{_T + ph - sc(y) * ph:.1f}"

    parts = _frame(title, "false positive rate", "true positive rate")
    parts.append(
        f'<polyline points="{px(floor, floor)} {px(1, 1)}" fill="none" stroke="#aaa" '
        'stroke-dasharray="4 3"/>'
    )
    for i, (name, fpr, tpr) in enumerate(curves):
        colour = _COLOURS[i % len(_COLOURS)]
        pts = " ".join(px(x, y) for x, y in zip(fpr, tpr, strict=True))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.append(
            f'<text x="{_L + 8}" y="{_T + 16 + 14 * i}" font-size="11" fill="{colour}">'
            f"{escape(name)}</text>"
        )
    ticks = [floor, 1e-2, 1e-1, 1.0] if log else [0.0, 0.25, 0.5, 0.75, 1.0]
    for t in ticks:
        parts.append(_tick(_L + sc(t) * pw, _T + ph + 14, f"{t:g}", "middle"))
        parts.append(_tick(_L - 4, _T + ph - sc(t) * ph + 4, f"{t:g}", "end"))
    parts.append("</svg>")
    return "".join(parts)
