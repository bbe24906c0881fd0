"""``OUT/report.html``: one self-contained page about a run, built from its outputs alone.

Read: ``OUT/results.csv`` (required), ``OUT/run.json`` (optional: every key is optional),
and the overlays or masks for thumbnails. Written: one HTML file with inline CSS, inline
SVG plots and JPEG thumbnails as data URIs; no script, nothing fetched, so it opens
anywhere and can be mailed. Sections, in order:

1. run header (version, model and its hash, engine and device, machine, start, duration,
   settings and options, as far as run.json records them);
2. counts (done, failed, skipped) and the failures with their messages;
3. distributions of density, each morphology figure and, with ground truth, IoU and Dice:
   histograms with the outliers (Tukey's fences) marked, each a link to its image;
4. worst cases first (lowest Dice with ground truth, else the lowest and highest densities,
   where a failed capture or a wrong FOV shows) with overlay thumbnails;
5. a sample grid of thumbnails spread evenly over the run.

Built for big runs: at most ``WORST + SAMPLE`` thumbnails and ``MAX_OUTLIERS`` marks per
plot, failures listed up to ``MAX_FAILURES``; everything else is a fixed-size summary, so
the page stays well under a few MB whatever the number of rows.
"""
from __future__ import annotations

import base64
import csv
import io
import json
import math
from dataclasses import dataclass
from html import escape
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import cv2
import numpy as np

from ..io.discover import OutputPaths, UnsafeNameError
from ..io.imageio import write_atomic
from .plots import Outlier, fences, histogram_svg

REPORT_NAME = "report.html"
WORST = 24
SAMPLE = 48
MAX_OUTLIERS = 40
MAX_FAILURES = 500
THUMB_WIDTH = 200
THUMB_QUALITY = 70
THUMB_THREADS = 2
FIGURES = ("vessel_density", "vessel_length_px", "mean_width_px", "branch_points", "end_points", "segments",
           "tortuosity", "fractal_dimension", "vessel_length_mm", "mean_width_um", "iou", "dice", "width_ratio")
RUN_FIELDS = ("version", "engine", "device", "machine", "started", "finished", "duration_s")


class ReportError(ValueError):
    """The folder holds no results to report on; the message says what to do."""


@dataclass(frozen=True)
class RunOutputs:
    """What a run left in ``out``: the rows of results.csv (column -> cell) and run.json's object."""

    out: Path
    rows: list[dict[str, str]]
    run: dict
    notes: tuple[str, ...] = ()


def read_outputs(out: Path) -> RunOutputs:
    """Read ``out``'s results.csv and run.json; ``ReportError`` when there is no results.csv."""
    out = Path(out)
    csv_path = out / "results.csv"
    try:
        text = csv_path.read_bytes().decode("utf-8", "backslashreplace")
    except FileNotFoundError:
        raise ReportError(f"{csv_path} does not exist; point at the --out folder of a segment run") from None
    except OSError as exc:
        raise ReportError(f"cannot read {csv_path}: {exc.strerror or exc}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, [])
    rows = [dict(zip(header, cells)) for cells in reader if len(cells) == len(header) and cells and cells[0]]
    notes: list[str] = []
    run: dict = {}
    try:
        loaded = json.loads((out / "run.json").read_text(encoding="utf-8"))
        run = loaded if isinstance(loaded, dict) else {}
    except FileNotFoundError:
        notes.append("no run.json in this folder: the run's settings were not recorded")
    except (OSError, ValueError) as exc:
        notes.append(f"run.json could not be read ({exc.__class__.__name__}); run details left out")
    return RunOutputs(out, rows, run, tuple(notes))


def _float(cell: str | None) -> float:
    try:
        value = float(cell) if cell not in (None, "") else math.nan
    except ValueError:
        return math.nan
    return value if math.isfinite(value) else math.nan


def column(rows: list[dict[str, str]], name: str) -> np.ndarray:
    """``(N,) float64`` of one column over ``rows``, NaN where empty, infinite or not a number."""
    cells = [r.get(name) or "nan" for r in rows]
    try:
        values = np.array(cells, dtype=np.str_).astype(np.float64)  # numpy parses in C: 100,000 rows in ms
    except ValueError:  # a cell that is not a number: the slow way, cell by cell
        values = np.fromiter((_float(c) for c in cells), np.float64, count=len(cells))
    values[~np.isfinite(values)] = np.nan
    return values


def output_file(out: Path, image: str, kind: str) -> Path | None:
    """The overlay (``kind`` ``overlay``) or mask of a results.csv ``image`` name, if it exists.

    The output key is the name without its extension, or the whole name when two images
    shared a stem (``vesselcli.io.discover``); whichever file exists is the one.
    """
    paths = OutputPaths(out)
    path = PurePosixPath(image)
    keys = [str(path.with_suffix(""))] if path.suffix and path.stem not in (".", "..") else []
    for key in keys + [image]:
        try:
            candidate = getattr(paths, kind)(key)
        except UnsafeNameError:
            continue
        if candidate.is_file():
            return candidate
    return None


def _href(out: Path, image: str) -> str:
    target = output_file(out, image, "overlay") or output_file(out, image, "mask")
    if target is None:
        return ""
    return quote(target.relative_to(out).as_posix())


def thumbnail(path: Path, width: int = THUMB_WIDTH) -> str:
    """A ``data:image/jpeg;base64,...`` URI of ``path`` scaled to ``width`` px; "" when unreadable."""
    try:
        data = np.fromfile(path, np.uint8)
    except OSError:
        return ""
    image = cv2.imdecode(data, cv2.IMREAD_REDUCED_COLOR_2)
    if image is None or image.size == 0:
        return ""
    h, w = image.shape[:2]
    if w > width:
        image = cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, THUMB_QUALITY])
    return "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode("ascii") if ok else ""


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return "–"
    if value == int(value) and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.4g}" if abs(value) >= 1000 else f"{value:.4f}"


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{padding:2px 10px 2px 0;text-align:left;vertical-align:top}
th{color:#555;font-weight:600}.num{text-align:right;font-variant-numeric:tabular-nums}
.counts span{display:inline-block;margin-right:24px;font-size:20px}.counts b{font-size:26px}
.failed b{color:#b00}.note{color:#a60}.plots{display:flex;flex-wrap:wrap;gap:8px}
.plot{border:1px solid #eee}.bar{fill:#4a7fb5}.ax{stroke:#444}.tk{font-size:10px;fill:#444}
.pt{font-size:12px;font-weight:600;fill:#222}.out{fill:#d22;stroke:#fff}
.grid{display:flex;flex-wrap:wrap;gap:10px}.card{width:200px;font-size:12px}
.card img{width:200px;display:block;background:#000}.card .name{overflow-wrap:anywhere;font-weight:600}
.err{color:#b00;overflow-wrap:anywhere}code{font-size:12px}
"""


def _text(value: object) -> str:
    """A run.json value as one line for a person: dicts as ``key value, ...``, lists joined."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {_text(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    if value is None:
        return "–"
    return str(value)


def _table(pairs: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in pairs) + "</table>"


def _run_header(outputs: RunOutputs) -> str:
    run = outputs.run
    settings = run.get("settings") if isinstance(run.get("settings"), dict) else {}
    pairs = [(key, _text(run[key])) for key in RUN_FIELDS if key in run]
    model = settings.get("model") or settings.get("model_path")
    if model is not None:
        pairs.append(("model", str(model)))
    sha = settings.get("model_sha256") or settings.get("sha256")
    if sha is not None:
        pairs.append(("model sha256", str(sha)))
    parts = [f"<h1>vesselseg report: {escape(outputs.out.name or str(outputs.out))}</h1>"]
    parts += [f'<p class="note">{escape(n)}</p>' for n in outputs.notes]
    if pairs:
        parts.append(_table(pairs))
    if settings:
        shown = {"model", "model_path", "model_sha256", "sha256"}  # already in the header
        parts.append("<h2>Settings</h2>" + _table([(k, _text(v)) for k, v in settings.items() if k not in shown]))
    options = run.get("options")
    if isinstance(options, dict) and options:
        parts.append("<details><summary>All options</summary>" + _table(
            [(k, _text(v)) for k, v in options.items()]) + "</details>")
    return "".join(parts)


def _counts(outputs: RunOutputs) -> str:
    done = sum(r.get("status") == "ok" for r in outputs.rows)
    failed = sum(r.get("status") == "error" for r in outputs.rows)
    counts = outputs.run.get("counts") if isinstance(outputs.run.get("counts"), dict) else {}
    skipped = counts.get("skipped")
    items = [("done", done), ("failed", failed)] + ([("skipped", skipped)] if skipped is not None else [])
    html = '<h2>Counts</h2><p class="counts" id="counts">' + "".join(
        f'<span class="{name}"><b>{escape(str(value))}</b> {name}</span>' for name, value in items) + "</p>"
    failures = [r for r in outputs.rows if r.get("status") == "error"]
    if failures:
        shown = failures[:MAX_FAILURES]
        html += "<h2>Failures</h2><table><tr><th>image</th><th>message</th></tr>" + "".join(
            f'<tr><td>{escape(r["image"])}</td><td class="err">{escape(r.get("error", ""))}</td></tr>' for r in shown)
        html += "</table>"
        if len(failures) > len(shown):
            html += f"<p>and {len(failures) - len(shown)} more (see the error column of results.csv)</p>"
    return html


def _distributions(outputs: RunOutputs) -> str:
    ok = [r for r in outputs.rows if r.get("status") == "ok"]
    plots, stats = [], []
    for name in FIGURES:
        values = column(ok, name)
        present = np.flatnonzero(np.isfinite(values))
        if present.size == 0:
            continue
        finite = values[present]
        low, high = fences(finite)
        out_idx = present[(finite < low) | (finite > high)]
        # The most extreme first, so a capped list keeps those furthest out.
        median = float(np.median(finite))
        out_idx = out_idx[np.argsort(-np.abs(values[out_idx] - median), kind="stable")][:MAX_OUTLIERS]
        marks = [Outlier(float(values[i]), _href(outputs.out, ok[i]["image"]), ok[i]["image"]) for i in out_idx]
        plots.append(histogram_svg(name, finite, marks))
        stats.append((name, finite, len(present), int(np.count_nonzero((finite < low) | (finite > high)))))
    if not plots:
        return ""
    rows = "".join(
        f'<tr><td>{escape(n)}</td><td class="num">{count}</td><td class="num">{_fmt(float(np.mean(v)))}</td>'
        f'<td class="num">{_fmt(float(np.median(v)))}</td><td class="num">{_fmt(float(v.min()))}</td>'
        f'<td class="num">{_fmt(float(v.max()))}</td><td class="num">{outl}</td></tr>' for n, v, count, outl in stats)
    table = ("<table><tr><th>figure</th><th>images</th><th>mean</th><th>median</th><th>min</th><th>max</th>"
             f"<th>outliers</th></tr>{rows}</table>")
    return ('<h2>Distributions</h2><p>Red marks: outliers (beyond 1.5 interquartile ranges from the quartiles), '
            f'each a link to its image.</p>{table}<div class="plots">{"".join(plots)}</div>')


def _source(out: Path, row: dict[str, str]) -> Path | None:
    """The file a row's thumbnail is made of: its overlay, else its mask (None: neither)."""
    return output_file(out, row["image"], "overlay") or output_file(out, row["image"], "mask")


def _thumbnail_uris(sources: list[Path | None]) -> list[str]:
    """``thumbnail`` of each source ("" for None), decoded and encoded on two threads at once:
    OpenCV lets go of the GIL, and at the end of a run the engine's cores are free (20 DRIVE
    overlays: about half the time of one thread)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(THUMB_THREADS) as pool:
        return list(pool.map(lambda source: thumbnail(source) if source is not None else "", sources))


def _card(out: Path, row: dict[str, str], caption: str, source: Path | None, uri: str) -> str:
    image = row["image"]
    picture = f'<img class="thumb" src="{uri}" alt="{escape(image)}">' if uri else "<p>(no overlay or mask)</p>"
    if source is not None:
        picture = f'<a href="{quote(source.relative_to(out).as_posix())}">{picture}</a>'
    return f'<div class="card">{picture}<div class="name">{escape(image)}</div><div>{escape(caption)}</div></div>'


def _caption(row: dict[str, str]) -> str:
    parts = [f"density {_fmt(_float(row.get('vessel_density')))}"]
    if math.isfinite(_float(row.get("dice"))):
        parts.append(f"Dice {_fmt(_float(row.get('dice')))}")
    return ", ".join(parts)


def _thumbnails(outputs: RunOutputs) -> str:
    ok = [r for r in outputs.rows if r.get("status") == "ok"]
    if not ok:
        return ""
    dice = column(ok, "dice")
    density = column(ok, "vessel_density")
    if np.isfinite(dice).any():
        order = [int(i) for i in np.argsort(np.where(np.isfinite(dice), dice, np.inf), kind="stable")
                 if math.isfinite(dice[i])][:WORST]
        title, why = "Worst cases: lowest Dice", "lowest Dice against the ground truth first"
    else:
        ranked = [int(i) for i in np.argsort(np.where(np.isfinite(density), density, np.inf), kind="stable")
                  if math.isfinite(density[i])]
        half = WORST // 2
        order = list(dict.fromkeys(ranked[:half] + ranked[::-1][:half]))
        title, why = "Worst cases: extreme densities", "the lowest vessel densities, then the highest (a failed capture or a wrong field of view shows here)"
    shown = set(order)
    rest = [i for i in range(len(ok)) if i not in shown]
    step = max(1, len(rest) / SAMPLE)
    sample = [rest[int(k * step)] for k in range(min(SAMPLE, len(rest)))]
    sources = [_source(outputs.out, ok[i]) for i in order + sample]
    cards = [_card(outputs.out, ok[i], _caption(ok[i]), source, uri)
             for i, source, uri in zip(order + sample, sources, _thumbnail_uris(sources))]
    worst, grid = "".join(cards[: len(order)]), "".join(cards[len(order):])
    html = f'<h2>{title}</h2><p>{escape(why)}; click a thumbnail for the full overlay.</p><div class="grid">{worst}</div>'
    if sample:
        html += (f'<h2>Sample</h2><p>{len(sample)} of {len(ok)} images, spread evenly over the run.</p>'
                 f'<div class="grid">{grid}</div>')
    return html


def render(outputs: RunOutputs) -> str:
    """The whole page as one string."""
    title = f"vesselseg report: {outputs.out.name or outputs.out}"
    body = _run_header(outputs) + _counts(outputs) + _distributions(outputs) + _thumbnails(outputs)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style></head>'
            f"<body>{body}</body></html>\n")


def build_report(out: Path, path: Path | None = None) -> Path:
    """Write the report of the run in ``out`` to ``path`` (default ``out/report.html``), atomically."""
    out = Path(out)
    target = Path(path) if path is not None else out / REPORT_NAME
    write_atomic(target, render(read_outputs(out)).encode("utf-8"))
    return target
