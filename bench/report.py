"""BENCHMARKS.md and results.csv from one benchmark run.

The Markdown puts every measured figure beside the machine it was measured on and the exact
command; the CSV holds the same figures in a tidy long format, one figure per row:

``section, subject, condition, metric, value, unit, machine, date_utc``

(section: accuracy | speed | scaling_count | scaling_size | cost; subject: what was measured;
condition: data set, image count or size; metric/value/unit: the figure).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from .measure import Measurement
from .scaleout import csv_rows as scaleout_rows, render_scaleout

#: Subjects of the speed tables (also the CSV's ``subject`` column).
REPORT_SUBJECT = "Report's path: 31M valid U-Net, eager PyTorch, 512x512, one image at a time"
FLOOR_SUBJECT = "I/O floor: read, encode, write, no model"
OURS_PREFIX = "Ours: vesselseg segment --engine "
#: ``segment`` as a user runs it: ONNX Runtime (``--engine auto`` on a CPU) and ``--precision
#: auto`` (the fastest variant that passed its gate); the headline ratio is this command's.
DEFAULT_ENGINE = "onnxruntime --precision auto"
DEFAULT_SUBJECT = OURS_PREFIX + DEFAULT_ENGINE

#: The report's own figures (DRIVE-512 protocol: whole 512x512 image, threshold 0.5).
REPORT_FIGURES = {"test_iou": 0.6827, "val_iou": 0.7242}

#: Published figures, not measured here. Only numbers read from a stored source are given.
PUBLISHED = [
    {
        "method": "SA-UNet (Guo et al., ICPR 2020, arXiv:2004.03696)",
        "DRIVE": {"f1": 0.8263, "auc": 0.9864, "acc": 0.9698},
        "CHASE_DB1": {"f1": 0.8153, "auc": 0.9905},
        "source": "Papers with Code leaderboard entries for the paper (mirrored at hyper.ai/en/papers/2004.03696)",
    },
    {
        "method": "IterNet (Li et al., WACV 2020, arXiv:1912.05763)",
        "DRIVE": {"auc": 0.9816},
        "CHASE_DB1": {"auc": 0.9851},
        "source": "the authors' README, github.com/conscienceli/IterNet",
    },
    {
        "method": "Best published models (e.g. FR-UNet, Liu et al., IEEE JBHI 2022)",
        "DRIVE": {"f1_text": "about 0.83"},
        "CHASE_DB1": {},
        "source": "order of magnitude of the best published F1, per the issue brief; not verified here",
    },
]


@dataclass
class Results:
    """Everything one ``python -m bench`` run measured."""

    command: str
    machine: dict[str, object]
    quick: bool
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    accuracy_commands: dict[str, str] = field(default_factory=dict)
    accuracy_options: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # option -> set -> figures
    observer: dict[str, float] = field(default_factory=dict)
    speed: list[Measurement] = field(default_factory=list)  # headline, same DRIVE images
    counts: list[Measurement] = field(default_factory=list)
    sizes: list[Measurement] = field(default_factory=list)
    scaleout: list[Measurement] = field(default_factory=list)  # one process vs --ray local
    cost: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)
    stages_command: str = ""
    cost_command: str = ""
    analysis: dict = field(default_factory=dict)  # bench.analysis's JSON, plus per_image_ms and the command
    notes: list[str] = field(default_factory=list)

    def find(self, subject: str) -> Measurement | None:
        """The speed-table measurement of ``subject``, if it was measured."""
        return next((m for m in self.speed if m.subject == subject), None)

    def ours(self) -> list[Measurement]:
        return [m for m in self.speed if m.subject.startswith(OURS_PREFIX)]

    def default(self) -> Measurement | None:
        """``segment`` with its default options (else the fastest of ours)."""
        ours = self.ours()
        return self.find(DEFAULT_SUBJECT) or (min(ours, key=lambda m: m.wall_s) if ours else None)


def _f(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _machine_line(machine: dict[str, object]) -> str:
    return (
        f"{machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB; {machine['os']}; "
        f"Python {machine['python']}, torch {machine['torch']}, onnxruntime {machine['onnxruntime']}, "
        f"numpy {machine['numpy']}, opencv {machine['opencv-python-headless']}, Pillow {machine['pillow']}; "
        f"commit {machine['commit']}; {machine['date_utc']}"
    )


def _with_interval(a: dict[str, float], name: str, bold: bool = False) -> str:
    """``0.8215 [0.8155, 0.8287]``: the mean and its 95% interval, where measured."""
    if name not in a:
        return ""
    mean = f"**{a[name]:.4f}**" if bold else f"{a[name]:.4f}"
    return f"{mean} [{a[name + '_lo']:.4f}, {a[name + '_hi']:.4f}]" if name + "_lo" in a else mean


def _gain(a: dict[str, float], name: str) -> str:
    return (f"{a[name + '_gain']:+.4f} [{a[name + '_gain_lo']:+.4f}, {a[name + '_gain_hi']:+.4f}], "
            f"higher on {int(a[name + '_better'])} of {int(a['images'])} images")


def _accuracy_rows(method: str, name: str, a: dict[str, float], bold: bool) -> list[str]:
    where = f"inside {'detected ' if 'iou_whole_image' in a else ''}FOV"
    rows = [
        f"| {method} | {name} ({int(a['images'])} images, {where}) | {_with_interval(a, 'f1', bold)} | {_with_interval(a, 'iou')} | "
        f"{_f(a.get('auc'))} | {_f(a.get('se'))} | {_f(a.get('sp'))} | {_f(a.get('acc'))} | measured here |"
    ]
    if "iou_whole_image" in a:
        rows.append(f"| {method} | {name} (whole image, report's protocol) |  | {_with_interval(a, 'iou_whole_image', bold)} |  |  |  |  | measured here |")
    return rows


def accuracy_section(r: Results) -> list[str]:
    if not r.accuracy and not r.observer:
        return []
    lines = [
        "## Accuracy",
        "",
        "Measured by running the product (`vesselseg segment` with `--gt`, default options, the shipped model): "
        "per-image figures from its `results.csv`, averaged over the images, inside the field of view "
        "(the datasets' FOV masks); F1 and IoU with their 95% bootstrap interval over images (2,000 draws, "
        "`vesselcli.analysis.metrics.bootstrap_interval`). DRIVE-512 is not a third test set: it is the same 20 DRIVE test photographs "
        "(and annotations) squashed to 512x512, the re-packaging the report was measured on. It has no FOV masks: "
        "inside the detected FOV, and over the whole 512x512 image as the report measured it (IoU of the written "
        "masks, `vesselcli.analysis.metrics`).",
        "",
        "| Method | Data | F1 | IoU | AUC | Se | Sp | Acc | Source |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, a in r.accuracy.items():
        lines += _accuracy_rows("**vesselseg (ours)**", name, a, bold=True)
    for option, sets in r.accuracy_options.items():
        for name, a in sets.items():
            lines += _accuracy_rows(f"vesselseg (ours), `{option}`", name, a, bold=False)
    if r.observer:
        o = r.observer
        lines.append(
            f"| Second human observer | DRIVE test ({int(o['images'])} images, inside FOV) | {_f(o['f1'])} | {_f(o['iou'])} | n/a (binary) | "
            f"{_f(o['se'])} | {_f(o['sp'])} | {_f(o['acc'])} | measured here: 2nd_manual vs 1st_manual |"
        )
    lines.append(
        f"| The report (31M valid U-Net) | DRIVE-512 test (whole image) |  | {REPORT_FIGURES['test_iou']} |  |  |  |  | "
        f"the report (best validation IoU {REPORT_FIGURES['val_iou']}) |"
    )
    for p in PUBLISHED:
        for data in ("DRIVE", "CHASE_DB1"):
            fig = p[data]
            if not fig:
                continue
            f1 = fig.get("f1_text") or _f(fig.get("f1"))
            lines.append(
                f"| {p['method']} | {data} test | {f1} |  | {_f(fig.get('auc'))} |  |  | {_f(fig.get('acc'))} | "
                f"*published, not measured here*: {p['source']} |"
            )
    for option, sets in r.accuracy_options.items():
        lines += ["", f"`{option}` against the default options, the same images, image by image (the mean difference, its 95% bootstrap interval):", ""]
        for name, a in sets.items():
            gains = [f"F1 {_gain(a, 'f1')}"] if "f1_gain" in a else []
            if "iou_whole_image_gain" in a:
                gains.append(f"whole-image IoU {_gain(a, 'iou_whole_image')}")
            lines.append(f"- {name}: " + "; ".join(gains) + ".")
    lines += [
        "",
        "Published figures come from other protocols (often pooled over all test pixels, their own FOV and "
        "threshold choices) and are given for orientation only. Commands"
        + (f" (the option rows add {', '.join(f'`{o}`' for o in r.accuracy_options)})" if r.accuracy_options else "")
        + ":",
        "",
    ]
    lines += [f"- {name}: `{cmd}`" for name, cmd in r.accuracy_commands.items()]
    return lines + [""]


def speed_section(r: Results) -> list[str]:
    if not r.speed:
        return []
    report = r.find(REPORT_SUBJECT)
    floor = r.find(FLOOR_SUBJECT)
    m0 = r.speed[0]
    lines = [
        "## Speed on the same DRIVE images",
        "",
        f"{m0.images} DRIVE test photographs (565x584 TIFF), each configuration run {len(m0.runs)} times in a fresh "
        "process; wall time of the whole command from process start to exit (Python start-up, imports, model "
        "loading, reading, writing), median of the runs (fastest-slowest in brackets); peak memory is the "
        "largest resident-set high-water mark of the runs (`ru_maxrss` of the process and its children).",
        "",
        "| Path | Wall s (median, range) | ms / image | Images / s | Peak MiB | Faster than report | Time vs I/O floor |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in r.speed:
        lo, hi = m.spread
        vs_report = f"{report.wall_s / m.wall_s:.1f}x" if report else ""
        vs_floor = f"{m.wall_s / floor.wall_s:.1f}x" if floor else ""
        lines.append(
            f"| {m.subject} | {m.wall_s:.2f} ({lo:.2f}-{hi:.2f}) | {m.ms_per_image:.0f} | {m.images_per_s:.2f} | "
            f"{m.peak_rss_mib:.0f} | {vs_report} | {vs_floor} |"
        )
    lines += ["", "Commands (`OUT` is a fresh folder per run):", ""]
    lines += [f"- {m.subject}: `{m.command}`" for m in r.speed]
    return lines + [""]


def cost_section(r: Results) -> list[str]:
    c = r.cost
    if not c:
        return []
    peaks = c.get("peaks", {"fp32": c["peak_gflops"]})
    shipped, report, image = c["networks"]["shipped"], c["networks"]["report"], c["image"]
    peak_text = ", ".join(f"**{v:.0f} G{'FLOP' if k == 'fp32' else 'OP'}/s** {k}" for k, v in peaks.items())
    lines = [
        "## Model cost against the machine's arithmetic limits",
        "",
        f"Measured peaks: {peak_text} (one {c['matmul']}x{c['matmul']} matmul in ONNX Runtime, all cores, best of 5: "
        "`MatMul` on float32, `MatMulInteger` on uint8 x int8; each peak measured the same way). FLOPs count the "
        "multiply-adds of convolutions and transposed convolutions (2 each; PyTorch's `FlopCounterMode`); ReLU, pooling "
        "and BatchNorm (folded into the convolutions) are left out.",
        "",
        "| Network | Parameters | GFLOP per megapixel | GFLOP per DRIVE image as run | Time at the float32 peak | Time at the int8 peak |",
        "|---|---|---|---|---|---|",
    ]
    int8_peak = peaks.get("int8")

    def at(flops: float, peak: float | None) -> str:
        return f"{flops / peak / 1e6:.0f} ms" if peak else ""

    tiles = f"{image['tiles']} tile{'s' if image['tiles'] != 1 else ''} of {image.get('tile_shape', c['tile'])}"
    lines += [
        f"| Shipped (ours) | {shipped['params']:,} | {shipped['flops_per_mp'] / 1e9:.1f} | {image['flops'] / 1e9:.1f} "
        f"({tiles}: the FOV's box of {image['model_size']} at model scale) | {at(image['flops'], peaks['fp32'])} | {at(image['flops'], int8_peak)} |",
        f"| Report (31M valid U-Net) | {report['params']:,} | {report['flops_per_mp'] / 1e9:.0f} (per input megapixel) | "
        f"{report['flops'] / 1e9:.0f} (one 512x512 image, unpadded) | {at(report['flops'], peaks['fp32'])} | |",
        "",
        f"The shipped network's own time, one batch of {c.get('batch_shape', c['batch'])} through `Engine.infer` "
        f"(median of {c.get('repeats', 5)} after a warm-up), against the peak of its own arithmetic:",
        "",
        "| Engine | ms per batch | Achieved G(FL)OP/s | Share of its peak | Distance from the arithmetic limit |",
        "|---|---|---|---|---|",
    ]
    batch_flops = image["flops"] / max(image["tiles"], 1) * c["batch"] if "tile_hw" in image else shipped["flops"] * c["batch"]
    for name, e in c["engines"].items():
        peak = peaks.get(e.get("precision", "fp32"), peaks["fp32"])
        limit_ms = batch_flops / peak / 1e6
        lines.append(f"| {name} | {e['ms_per_batch']:.0f} | {e['gflops']:.0f} | {100 * e['gflops'] / peak:.0f}% | "
                     f"{e['ms_per_batch'] / limit_ms:.1f}x ({limit_ms:.0f} ms at peak) |")
    ours = r.default()
    fastest = min(c["engines"].values(), key=lambda e: e["ms_per_batch"]) if c["engines"] else None
    if ours and fastest:
        per_image_model = fastest["ms_per_batch"] / c["batch"] * image["tiles"]
        lines += [
            "",
            f"Per DRIVE image the network itself takes about {per_image_model:.0f} ms (fastest engine above) against "
            f"{ours.ms_per_image:.0f} ms per image for the whole default command; the rest is reading, FOV detection, "
            "preprocessing, encoding, writing and start-up (see the stage table), partly overlapped with the network by the "
            "pipeline's threads.",
        ]
    return lines + ["", f"Command: `{r.cost_command}`", ""] if r.cost_command else lines + [""]


#: Stage names of ``bench.stages`` as table rows.
STAGE_LABELS = {
    "decode": "decode (read the TIFF)", "fov": "FOV detection", "scale": "resize to model scale", "clahe": "CLAHE",
    "normalise": "standardise inside the FOV", "tile_blend": "tile and blend", "sigmoid": "sigmoid",
    "resize_threshold": "resize back and threshold", "morphology": "morphology columns (skeleton, graph, box counts)",
    "metrics": "metrics with --gt (confusion counts, ROC AUC)",
    "encode_mask": "PNG-encode the mask", "overlay": "overlay: compose and JPEG-encode", "write": "write both files (atomic, fsync)",
}


def stages_section(r: Results) -> list[str]:
    st = r.stages
    if not st:
        return []
    lines = [
        "## Where the time goes (ms per image)",
        "",
        f"Every stage of `segment` timed on its own, one thread, on the {st['images']} DRIVE test photographs "
        f"({st['size']}); each figure is the mean over the images of each image's fastest of {st.get('repeats', 3)} runs. "
        f"The network runs each image's FOV box as one tile ({st.get('tile_shape', '?')} for the first image): the box starts "
        "on the model's 8-pixel grid and runs at its own size rounded up to 8, where the whole image used to be padded to a "
        "592x592 tile.",
        "",
        "| Stage | ms / image |",
        "|---|---|",
    ]
    for name, ms in st["stages"].items():
        lines.append(f"| {STAGE_LABELS.get(name, name)} | {ms:.1f} |")
    for name, ms in st["network"].items():
        lines.append(f"| network, ONNX Runtime {name} (all cores) | **{ms:.1f}** |")
    for name, ms in st.get("network_parallel", {}).items():
        lines.append(f"| network, ONNX Runtime {name}, two calls at once as segment runs it (wall per image) | **{ms:.1f}** |")
    for name, ms in st.get("startup_ms", {}).items():
        lines.append(f"| start-up once per command: interpreter, imports, {name} session | {ms:.0f} (per command) |")
    around = sum(v for k, v in st["stages"].items() if k != "metrics")
    lines += [
        "",
        f"Everything but the network and the metrics adds up to {around:.0f} ms per image of one core's time; the "
        "pipeline spreads it over reader and writer threads beside the network. Metrics only run with `--gt`.",
        "",
    ]
    return lines + ([f"Command: `{r.stages_command}`", ""] if r.stages_command else [])


def scaling_section(r: Results) -> list[str]:
    lines: list[str] = []
    if r.counts:
        lines += [
            "## Scaling with the number of images",
            "",
            "The DRIVE test photographs repeated through symbolic links (same files, distinct names).",
            "",
            "| Path | Images | Runs | Wall s | Images / s | Marginal images / s | Peak MiB | Peak vs the smallest run |",
            "|---|---|---|---|---|---|---|---|",
        ]
        base: dict[str, float] = {}
        previous: dict[str, Measurement] = {}
        for m in r.counts:
            base.setdefault(m.subject, m.peak_rss_mib)
            before = previous.get(m.subject)
            marginal = f"{marginal_rate(before, m):.2f}" if before and marginal_rate(before, m) else ""
            previous[m.subject] = m
            lines.append(
                f"| {m.subject} | {m.images} | {len(m.runs)} | {m.wall_s:.1f} | {m.images_per_s:.2f} | {marginal} | "
                f"{m.peak_rss_mib:.0f} | {m.peak_rss_mib / base[m.subject]:.2f}x |"
            )
        lines += [
            "",
            "Marginal images / s: the extra images over the extra seconds against the previous row of the same path, "
            "i.e. the rate once start-up (interpreter, imports, model loading) is paid.",
            "",
        ]
    if r.sizes:
        lines += [
            "## Scaling with the image size",
            "",
            "The DRIVE test photographs scaled to a camera frame's height (aspect ratio kept, centred on a black "
            "frame of the full width; bicubic upscaling) and saved as JPEG quality 95. The default scale rule "
            "(calibre) brings every photograph to the model's scale by its FOV diameter but never shrinks it more than "
            "2x, so a large photograph gives the network more pixels than a DRIVE-sized one; decoding, resizing and "
            "encoding grow with the pixels.",
            "",
            "| Path | Size | Images | Runs | Wall s | ms / image | Images / s | Peak MiB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for m in r.sizes:
            lines.append(
                f"| {m.subject} | {m.condition} | {m.images} | {len(m.runs)} | {m.wall_s:.1f} | {m.ms_per_image:.0f} | "
                f"{m.images_per_s:.2f} | {m.peak_rss_mib:.0f} |"
            )
        lines += [""]
    return lines


def marginal_rate(smaller: Measurement, larger: Measurement) -> float | None:
    """Images per second between two runs of one path on different image counts."""
    extra = larger.wall_s - smaller.wall_s
    if larger.images <= smaller.images or extra <= 0:
        return None
    return (larger.images - smaller.images) / extra


def report_loop_rate(report: Measurement) -> float | None:
    """The report path's images per second inside its loop (after imports and model set-up)."""
    loops = [run.report.get("loop_s") for run in report.runs if run.report.get("loop_s")]
    if not loops:
        return None
    loops.sort()
    return report.images / loops[len(loops) // 2]


def headline(r: Results) -> list[str]:
    report, floor = r.find(REPORT_SUBJECT), r.find(FLOOR_SUBJECT)
    ours = r.ours()
    best = r.default()
    lines: list[str] = []
    if ours and report:
        lines.append(
            f"- `vesselseg segment` ({best.subject.removeprefix(OURS_PREFIX)}) segments the same DRIVE images "
            f"**{report.wall_s / best.wall_s:.1f}x faster** than the report's inference path "
            f"({best.images_per_s:.2f} vs {report.images_per_s:.3f} images/s, whole command, median of {len(best.runs)}, same run)."
        )
        for other in ours:
            if other is not best:
                lines.append(f"  - with `--engine {other.subject.removeprefix(OURS_PREFIX)}`: {report.wall_s / other.wall_s:.1f}x "
                             f"({other.images_per_s:.2f} images/s).")
    if ours and floor:
        lines.append(
            f"- Gap to the I/O floor: {best.ms_per_image:.0f} ms per image against {floor.ms_per_image:.0f} ms for reading, "
            f"encoding and writing alone: **{best.wall_s / floor.wall_s:.1f}x** the floor "
            f"({best.ms_per_image - floor.ms_per_image:.0f} ms per image above it)."
        )
    if ours and report and r.counts:
        engine = best.subject
        runs = [m for m in r.counts if m.subject == engine]
        rate = marginal_rate(runs[0], runs[-1]) if len(runs) > 1 else None
        loop = report_loop_rate(report)
        if rate and loop:
            lines.append(
                f"- Once started (start-up excluded on both sides): ours ({engine.removeprefix(OURS_PREFIX)}) "
                f"{rate:.2f} images/s between the {runs[0].images}- and {runs[-1].images}-image runs, the report's path "
                f"{loop:.3f} images/s inside its loop: **{rate / loop:.1f}x**."
            )
    drive = r.accuracy.get("DRIVE test")
    d512 = r.accuracy.get("DRIVE-512 test")
    if drive:
        lines.append(f"- DRIVE test F1 inside the FOV {_with_interval(drive, 'f1', bold=True)} (second human observer: {r.observer.get('f1', float('nan')):.4f}).")
    if d512 and "iou_whole_image" in d512:
        lines.append(
            f"- DRIVE-512 (the DRIVE test photographs squashed to 512x512) whole-image IoU {_with_interval(d512, 'iou_whole_image', bold=True)} "
            f"against the report's {REPORT_FIGURES['test_iou']}."
        )
    return ["## Headline", "", *lines, ""] if lines else []


def analysis_section(r: Results) -> list[str]:
    a = r.analysis
    if not a:
        return []
    lines = ["## Morphology and the HTML report", ""]
    if a.get("per_image_ms"):
        share = a["morphology_ms"] / a["per_image_ms"]
        lines.append(f"- Morphology (every column of `vesselcli.analysis.morphology`) on a DRIVE-size mask: "
                     f"**{a['morphology_ms']:.1f} ms** per image (median, DRIVE test annotations inside their FOV), "
                     f"**{100 * share:.1f}%** of the {a['per_image_ms']:.0f} ms per image of `{a['per_image_source']}` "
                     "(the budget is 20%).")
    lines.append(f"- `OUT/report.html` of {a['rows']:,} synthetic rows (overlays: links to one real DRIVE overlay): "
                 f"**{a['report_s']:.1f} s**, **{a['report_mb']:.2f} MB**.")
    if "run_images" in a:
        lines.append(f"- `OUT/report.html` of a {a['run_images']:,}-image run (the DRIVE test run x {a['copies']}, real "
                     f"overlays): **{a['run_report_s']:.1f} s**, **{a['run_report_mb']:.2f} MB**.")
    return lines + ["", f"Command: `{a['command']}`", ""]


def render(r: Results, chart_name: str | None) -> str:
    title = "# Benchmarks" + (" (quick mode: a few images, one run; not the published figures)" if r.quick else "")
    lines = [
        title,
        "",
        "Generated by `make bench` on the machine below; every figure in this file comes from this one run.",
        "",
        f"- Command: `{r.command}`",
        f"- Machine: {_machine_line(r.machine)}",
        "",
        *headline(r),
        *([f"![Images per second: the report's path, our pipeline per engine, the I/O floor; and by image size]({chart_name})", ""] if chart_name else []),
        *accuracy_section(r),
        *speed_section(r),
        *stages_section(r),
        *cost_section(r),
        *scaling_section(r),
        *analysis_section(r),
        *render_scaleout(r.scaleout, r.machine.get("cores")),
    ]
    if r.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in r.notes], ""]
    return "\n".join(lines)


def csv_rows(r: Results) -> list[list[object]]:
    """The tidy rows of results.csv (without machine and date, added by ``write_csv``)."""
    rows: list[list[object]] = []
    for name, a in r.accuracy.items():
        for metric, value in a.items():
            if metric not in ("images", "seconds"):
                rows.append(["accuracy", "vesselseg", name, metric, value, ""])
    for option, sets in r.accuracy_options.items():
        for name, a in sets.items():
            for metric, value in a.items():
                if metric not in ("images", "seconds"):
                    rows.append(["accuracy", f"vesselseg {option}", name, metric, value, ""])
    for metric, value in r.observer.items():
        if metric != "images":
            rows.append(["accuracy", "second observer", "DRIVE test", metric, value, ""])
    for section, table in (("speed", r.speed), ("scaling_count", r.counts), ("scaling_size", r.sizes)):
        for m in table:
            condition = m.condition
            rows += [
                [section, m.subject, condition, "images", m.images, "images"],
                [section, m.subject, condition, "runs", len(m.runs), "runs"],
                [section, m.subject, condition, "wall_median", round(m.wall_s, 4), "s"],
                [section, m.subject, condition, "ms_per_image", round(m.ms_per_image, 2), "ms"],
                [section, m.subject, condition, "images_per_s", round(m.images_per_s, 4), "images/s"],
                [section, m.subject, condition, "peak_rss", round(m.peak_rss_mib, 1), "MiB"],
            ]
    a = r.analysis
    if a:
        rows.append(["analysis", "morphology", "DRIVE test annotations", "ms_per_image", round(a["morphology_ms"], 2), "ms"])
        if a.get("per_image_ms"):
            rows.append(["analysis", "morphology", "DRIVE test annotations", "share_of_image_time",
                         round(a["morphology_ms"] / a["per_image_ms"], 4), "fraction"])
        rows.append(["analysis", "report.html", f"{a['rows']} synthetic rows", "build_s", round(a["report_s"], 2), "s"])
        rows.append(["analysis", "report.html", f"{a['rows']} synthetic rows", "size", round(a["report_mb"], 3), "MB"])
        if "run_images" in a:
            rows.append(["analysis", "report.html", f"{a['run_images']}-image run", "build_s", round(a["run_report_s"], 2), "s"])
            rows.append(["analysis", "report.html", f"{a['run_images']}-image run", "size", round(a["run_report_mb"], 3), "MB"])
    rows += scaleout_rows(r.scaleout)
    if r.cost:
        c = r.cost
        for precision, peak in c.get("peaks", {"fp32": c["peak_gflops"]}).items():
            rows.append(["cost", "machine", f"{precision} matmul (ONNX Runtime)", "peak", round(peak, 2), "GOP/s"])
        for name, n in c["networks"].items():
            rows.append(["cost", name, n["input"], "params", n["params"], "parameters"])
            rows.append(["cost", name, n["input"], "flops_per_mp", round(n["flops_per_mp"] / 1e9, 3), "GFLOP/MP"])
        for name, e in c["engines"].items():
            condition = f"{c['batch']}x{c['tile']}x{c['tile']}"
            rows.append(["cost", name, condition, "ms_per_batch", round(e["ms_per_batch"], 2), "ms"])
            rows.append(["cost", name, condition, "achieved", round(e["gflops"], 2), "GFLOP/s"])
    if r.stages:
        for name, ms in r.stages["stages"].items():
            rows.append(["stages", name, r.stages["size"], "ms_per_image", round(ms, 2), "ms"])
        for name, ms in r.stages["network"].items():
            rows.append(["stages", f"network {name}", r.stages["size"], "ms_per_image", round(ms, 2), "ms"])
        for name, ms in r.stages.get("network_parallel", {}).items():
            rows.append(["stages", f"network {name} parallel", r.stages["size"], "ms_per_image", round(ms, 2), "ms"])
        for name, ms in r.stages.get("startup_ms", {}).items():
            rows.append(["stages", f"startup {name}", "per command", "ms", round(ms, 1), "ms"])
    return rows


def write_csv(r: Results, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    machine = f"{r.machine['cpu']} ({r.machine['cores']} cores)"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["section", "subject", "condition", "metric", "value", "unit", "machine", "date_utc"])
        for row in csv_rows(r):
            value = row[4]
            if isinstance(value, float):
                row[4] = f"{value:.6g}"
            writer.writerow([*row, machine, r.machine["date_utc"]])
