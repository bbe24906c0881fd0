"""Scale-out: the same images through one process and through ``segment --ray local``, and the
million-image plan's figures derived from them.

Both runs are fresh processes (``bench.measure``) on the same folder of DRIVE images (200 by
default), back to back: wall time includes Ray's start-up on this machine (the cost a user
pays once per run). The plan divides a million images by the measured images/s of one
process on this machine (a CPU node like it); GPU figures are not measured here.
"""
from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

from .measure import Measurement, measure

ONE_PROCESS = "vesselseg segment, one process"
RAY_LOCAL = "vesselseg segment --ray local"
MILLION = 1_000_000
DAY_S = 86_400.0


def measure_scaleout(folder: Path, images: int, scratch: Path, repeats: int, cwd: Path,
                     model: Path | None = None) -> list[Measurement]:
    """Time the one-process run and the ``--ray local`` run of ``folder`` (``images`` images),
    ``repeats`` times each, alternating (one, Ray, one, Ray, ...) so that a slow spell of the
    machine falls on both; each is then reported as its median."""
    base = [sys.executable, "-m", "vesselcli", "segment", str(folder), "-q", "--engine", "onnxruntime"]
    base += ["--model", str(model)] if model is not None else []
    condition = f"{images} DRIVE images"
    paths = {ONE_PROCESS: lambda o: [*base, "--out", str(o)],
             RAY_LOCAL: lambda o: [*base, "--out", str(o), "--ray", "local"]}
    rounds = [[measure(subject, condition, images, command, scratch, 1, cwd=cwd) for subject, command in paths.items()]
              for _ in range(max(1, repeats))]
    return [replace(column[0], runs=tuple(run for m in column for run in m.runs)) for column in zip(*rounds)]


def plan_figures(runs: list[Measurement]) -> dict[str, float]:
    """Ray's wall-time ratio to one process, images/s per node, and nodes for a million images a day."""
    one = next(m for m in runs if m.subject == ONE_PROCESS)
    ray = next((m for m in runs if m.subject == RAY_LOCAL), None)
    rate = one.images_per_s
    figures = {
        "cpu_node_images_per_s": rate,
        "million_cpu_node_days": MILLION / rate / DAY_S,
        "million_one_day_cpu_nodes": float(math.ceil(MILLION / (rate * DAY_S))),
    }
    if ray is not None:
        figures["ray_over_one_process"] = ray.wall_s / one.wall_s
        figures["ray_images_per_s"] = ray.images_per_s
    return figures


def render_scaleout(runs: list[Measurement], cores: object) -> list[str]:
    """The ``## Scale-out`` section of BENCHMARKS.md."""
    if not runs:
        return []
    f = plan_figures(runs)
    lines = [
        "## Scale-out: Ray Data on this machine, and a million images",
        "",
        f"The same images through one `vesselseg segment` process and through `--ray local` (Ray started by the "
        f"command on this machine's {cores} cores: one 1-thread engine actor per core, each decoding, inferring and "
        "encoding its own images); whole "
        "commands, Ray's start-up included. Peak memory is not compared: Ray's workers are not the command's "
        "children, so only its driver would be counted.",
        "",
        "| Path | Images | Runs | Wall s | Images / s | Wall vs one process |",
        "|---|---|---|---|---|---|",
    ]
    one = next(m for m in runs if m.subject == ONE_PROCESS)
    for m in runs:
        lines.append(f"| {m.subject} | {m.images} | {len(m.runs)} | {m.wall_s:.1f} | {m.images_per_s:.2f} | "
                     f"{m.wall_s / one.wall_s:.2f}x |")
    lines += [
        "",
        f"- One CPU node like this one: **{f['cpu_node_images_per_s']:.2f} images/s**; a million images take "
        f"{f['million_cpu_node_days']:.1f} node-days, so **{f['million_one_day_cpu_nodes']:.0f} such node{'' if f['million_one_day_cpu_nodes'] == 1 else 's'}** "
        f"{'finishes' if f['million_one_day_cpu_nodes'] == 1 else 'finish'} them in one day (shards or Ray actors, one per node).",
        "- GPU nodes: not measured (no GPU on this machine).",
        "",
    ]
    return lines


def csv_rows(runs: list[Measurement]) -> list[list[object]]:
    """Rows of bench/results.csv (section ``scaleout``)."""
    rows: list[list[object]] = []
    for m in runs:
        rows += [
            ["scaleout", m.subject, m.condition, "wall_median", round(m.wall_s, 4), "s"],
            ["scaleout", m.subject, m.condition, "images_per_s", round(m.images_per_s, 4), "images/s"],
            ["scaleout", m.subject, m.condition, "peak_rss", round(m.peak_rss_mib, 1), "MiB"],
        ]
    if runs:
        for metric, value in plan_figures(runs).items():
            rows.append(["scaleout", "plan", "this machine", metric, round(value, 4), ""])
    return rows
