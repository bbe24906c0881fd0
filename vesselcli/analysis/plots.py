"""Inline SVG histograms for the HTML report: no plotting library, no script, a few kB each.

A histogram of one figure over every image, with the outliers (Tukey's fences: below
Q1 - 1.5 IQR or above Q3 + 1.5 IQR) drawn as red marks under the axis, each a link to its
image.
"""
from __future__ import annotations

from dataclasses import dataclass
from html import escape

import numpy as np

BINS = 40
WIDTH, HEIGHT = 380, 170
_LEFT, _RIGHT, _TOP, _AXIS = 38, 10, 22, 124  # plot area, px


@dataclass(frozen=True)
class Outlier:
    """One image outside the fences: its value, where its link goes ("" for none) and its tooltip."""

    value: float
    href: str
    label: str


def fences(values: np.ndarray) -> tuple[float, float]:
    """Tukey's fences ``(Q1 - 1.5 IQR, Q3 + 1.5 IQR)`` of ``(N,) float64`` values (N >= 1)."""
    q1, q3 = np.percentile(values, [25, 75])
    spread = 1.5 * (q3 - q1)
    return float(q1 - spread), float(q3 + spread)


def _number(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000 or magnitude < 0.01:
        return f"{value:.3g}"
    return f"{value:.3f}".rstrip("0").rstrip(".")


def histogram_svg(title: str, values: np.ndarray, outliers: list[Outlier]) -> str:
    """An ``<svg>`` histogram of ``(N,) float64`` finite values with linked outlier marks."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        hi = lo + (abs(lo) * 0.01 or 1.0)
    counts, edges = np.histogram(values, bins=BINS, range=(lo, hi))
    plot_w = WIDTH - _LEFT - _RIGHT
    plot_h = _AXIS - _TOP
    top = max(int(counts.max()), 1)
    bar_w = plot_w / BINS

    def x_of(value: float) -> float:
        return _LEFT + (value - lo) / (hi - lo) * plot_w

    parts = [f'<svg class="plot" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
             f'<text x="{_LEFT}" y="14" class="pt">{escape(title)} (n={values.size})</text>']
    for i, count in enumerate(counts):
        if count:
            h = count / top * plot_h
            parts.append(f'<rect x="{_LEFT + i * bar_w:.1f}" y="{_AXIS - h:.1f}" width="{max(bar_w - 1, 1):.1f}" '
                         f'height="{h:.1f}" class="bar"><title>{_number(edges[i])} to {_number(edges[i + 1])}: '
                         f'{count}</title></rect>')
    parts.append(f'<line x1="{_LEFT}" y1="{_AXIS}" x2="{WIDTH - _RIGHT}" y2="{_AXIS}" class="ax"/>')
    parts.append(f'<text x="{_LEFT - 4}" y="{_TOP + 4}" class="tk" text-anchor="end">{top}</text>')
    for value, anchor in ((lo, "start"), ((lo + hi) / 2, "middle"), (hi, "end")):
        parts.append(f'<text x="{x_of(value):.1f}" y="{_AXIS + 13}" class="tk" text-anchor="{anchor}">'
                     f'{_number(value)}</text>')
    for o in outliers:
        mark = (f'<circle cx="{x_of(o.value):.1f}" cy="{_AXIS + 24}" r="4" class="out">'
                f'<title>{escape(o.label)}: {_number(o.value)}</title></circle>')
        parts.append(f'<a href="{escape(o.href)}">{mark}</a>' if o.href else mark)  # no outputs: nothing to link
    parts.append("</svg>")
    return "".join(parts)
