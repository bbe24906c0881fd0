"""The benchmark chart, drawn with Pillow (already a dependency; no plotting library needed).

Left panel: images per second of each path on the same DRIVE images (log scale, so the report's
path and the I/O floor fit on one axis). Right panel: images per second of our pipeline and of
the I/O floor for each image size. Bars carry their values, so the chart reads without a grid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 1400, 620
COLOURS = {"report": (196, 78, 82), "ours": (76, 114, 176), "floor": (130, 130, 130), "other": (85, 168, 104)}


@dataclass(frozen=True)
class Bar:
    label: str
    value: float  # images per second, > 0
    kind: str  # a COLOURS key


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _log_axis(values: list[float]) -> tuple[float, float]:
    """Decade bounds enclosing ``values``."""
    low = 10 ** math.floor(math.log10(min(values)))
    high = 10 ** math.ceil(math.log10(max(values)) + 1e-9)
    return low, max(high, low * 10)


def _horizontal(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], title: str, bars: list[Bar]) -> None:
    left, top, right, bottom = box
    font, small = _font(18), _font(14)
    draw.text((left, top), title, fill="black", font=font)
    label_w = 230
    x0, x1 = left + label_w, right - 110
    low, high = _log_axis([b.value for b in bars])
    scale = lambda v: x0 + (x1 - x0) * (math.log10(v) - math.log10(low)) / (math.log10(high) - math.log10(low))  # noqa: E731
    y = top + 40
    row = min(70, (bottom - y - 30) // max(1, len(bars)))
    decade = low
    while decade <= high * 1.0001:
        x = scale(decade)
        draw.line([(x, y - 5), (x, y + row * len(bars))], fill=(225, 225, 225))
        draw.text((x - 12, y + row * len(bars) + 4), f"{decade:g}", fill=(90, 90, 90), font=small)
        decade *= 10
    for i, bar in enumerate(bars):
        yy = y + i * row
        draw.text((left, yy + row // 2 - 10), bar.label, fill="black", font=small)
        draw.rectangle([x0, yy + 8, max(x0 + 2, scale(bar.value)), yy + row - 8], fill=COLOURS[bar.kind])
        draw.text((scale(bar.value) + 6, yy + row // 2 - 9), f"{bar.value:.3g}/s", fill="black", font=small)
    draw.text((x0, y + row * len(bars) + 24), "images per second (log scale)", fill=(90, 90, 90), font=small)


def _grouped(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], title: str, groups: list[tuple[str, list[Bar]]]) -> None:
    left, top, right, bottom = box
    font, small = _font(18), _font(14)
    draw.text((left, top), title, fill="black", font=font)
    values = [b.value for _, bars in groups for b in bars]
    low, high = _log_axis(values)
    y0, y1 = bottom - 60, top + 50
    scale = lambda v: y0 - (y0 - y1) * (math.log10(v) - math.log10(low)) / (math.log10(high) - math.log10(low))  # noqa: E731
    x_axis = left + 50
    decade = low
    while decade <= high * 1.0001:
        y = scale(decade)
        draw.line([(x_axis, y), (right, y)], fill=(225, 225, 225))
        draw.text((left, y - 8), f"{decade:g}", fill=(90, 90, 90), font=small)
        decade *= 10
    slot = (right - x_axis) / max(1, len(groups))
    for g, (name, bars) in enumerate(groups):
        width = slot * 0.7 / max(1, len(bars))
        for b, bar in enumerate(bars):
            x = x_axis + g * slot + slot * 0.15 + b * width
            draw.rectangle([x, scale(bar.value), x + width - 4, y0], fill=COLOURS[bar.kind])
            draw.text((x, scale(bar.value) - 18), f"{bar.value:.3g}", fill="black", font=small)
        draw.text((x_axis + g * slot + slot * 0.15, y0 + 8), name, fill="black", font=small)
    legend_y = bottom - 26
    kinds = []
    for _, bars in groups:
        for bar in bars:
            if (bar.kind, bar.label) not in kinds:
                kinds.append((bar.kind, bar.label))
    x = x_axis
    for kind, label in kinds:
        draw.rectangle([x, legend_y, x + 14, legend_y + 14], fill=COLOURS[kind])
        draw.text((x + 20, legend_y - 1), label, fill="black", font=small)
        x += 30 + 9 * len(label)


def draw_chart(path: Path, paths: list[Bar], sizes: list[tuple[str, list[Bar]]], footer: str) -> None:
    """Write the two-panel PNG to ``path``; ``footer`` names the machine and the command."""
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    _horizontal(draw, (20, 20, 700, HEIGHT - 40), "Same DRIVE images, whole command", paths)
    if sizes:
        _grouped(draw, (740, 20, WIDTH - 20, HEIGHT - 40), "Images per second by image size (log scale)", sizes)
    font = _font(13)
    while len(footer) > 20 and draw.textlength(footer, font=font) > WIDTH - 40:
        footer = footer[:-4] + "..."
    draw.text((20, HEIGHT - 28), footer, fill=(90, 90, 90), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", optimize=True)
