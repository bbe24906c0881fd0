"""``vesselseg info``: version, the model and what it was trained on, the engines installed,
which one ``--engine auto`` picks here and why (a GPU backend that failed to start says why),
the device, and what a GPU user is missing with the command that fixes it
(``vesselcli.engines.diagnose``: no driver, driver too old, CPU-only runtime, both runtimes
installed, CUDA or cuDNN libraries not found, TensorRT absent).

Exit code 0, or 2 when the model cannot be opened by any engine (the reasons are printed).
Nothing heavy is imported unless the chosen engine needs it, so on a CPU machine this never
imports torch.
"""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .. import __version__
from ..engines.diagnose import Finding, GpuFacts, installed_version

#: Distributions that provide each backend (the first one installed is reported).
BACKENDS = {
    "onnxruntime": ("onnxruntime-gpu", "onnxruntime"),
    "torch": ("torch",),
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-cu11"),
}


def gpu_names() -> list[str]:
    """NVIDIA GPUs the driver lists (read from /proc, so no CUDA library is loaded)."""
    names = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        for line in info.read_text(errors="replace").splitlines():
            if line.startswith("Model:"):
                names.append(line.split(":", 1)[1].strip())
    return names


def _described_version(name: str, distributions: tuple[str, ...], facts: GpuFacts) -> str:
    """'1.26.0 (onnxruntime-gpu, CUDA 12.8)', '2.13.0+cpu (CPU build)', or '' when not installed."""
    if name == "onnxruntime" and facts.runtimes:
        build = f"CUDA {facts.ort_cuda}" if facts.ort_cuda else "CPU build"
        return " + ".join(f"{version} ({dist}{', ' + build if len(facts.runtimes) == 1 else ''})"
                          for dist, version in facts.runtimes)
    version = installed_version(distributions) or ""
    if name == "torch" and version:
        return f"{version} ({'CPU build' if version.endswith('+cpu') else 'CUDA build'})"
    return version


def _print_findings(console: Console, findings: list[Finding]) -> None:
    """The GPU diagnosis: one line per finding, problems in red, notes dimmed."""
    console.print("[bold]GPU setup[/bold]")
    marks = {"ok": "[green]ok[/green]     ", "note": "[dim]note[/dim]   ", "problem": "[red]problem[/red]"}
    for finding in findings:
        console.print(f"  {marks[finding.level]} {escape(finding.line())}")
    console.print()


def _figures(values: Any) -> str:
    if not isinstance(values, dict):
        return str(values)
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())


@click.command()
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path),
              help="An .onnx model, a .plan TensorRT engine or a .pt checkpoint. Default: the shipped model.")
@click.option("--engine", type=click.Choice(["auto", "onnxruntime", "tensorrt", "torch"]), default="auto", show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "int8"]), default="auto", show_default=True,
              help="fp32, int8, or auto: the fastest variant that passed its parity gate.")
def info(model: Path | None, engine: str, device: str, precision: str) -> None:
    """Show the version, the model, the engines installed and which one is used here, and why."""
    from ..engines import EngineUnavailable, ModelError, choose_engine
    from ..engines.diagnose import diagnose, gather
    from ..engines.onnxruntime import cpu_threads

    console = Console(highlight=False, soft_wrap=True)
    console.print(f"[bold]vesselseg[/bold] {__version__} (Python {platform.python_version()}, {platform.system()} {platform.machine()})")
    gpus = gpu_names()
    console.print(f"device: {cpu_threads()} CPU cores available; NVIDIA GPU: {escape(', '.join(gpus)) if gpus else 'none found'}")
    backends = Table(title="Engines installed", box=box.SIMPLE, title_justify="left")
    backends.add_column("engine")
    backends.add_column("version")
    facts = gather()
    for name, distributions in BACKENDS.items():
        backends.add_row(name, escape(_described_version(name, distributions, facts)) or "[dim]not installed[/dim]")
    console.print(backends)
    _print_findings(console, diagnose(facts))
    try:
        selection = choose_engine(model, engine, device, precision=precision)
    except (ModelError, EngineUnavailable) as exc:
        Console(stderr=True, soft_wrap=True, highlight=False).print(f"[red]error:[/red] {escape(str(exc))}")
        raise SystemExit(2) from None
    chosen = selection.engine
    table = Table(title=f"--engine {engine} --device {device} --precision {precision}: what was considered, in order", box=box.SIMPLE, title_justify="left")
    for column in ("outcome", "engine", "device", "why"):
        table.add_column(column)
    for attempt in selection.attempts:
        style = "green" if attempt.outcome == "chosen" else "dim"
        table.add_row(f"[{style}]{attempt.outcome}[/{style}]", attempt.engine, attempt.device, escape(attempt.reason))
    console.print(table)
    console.print(f"uses: [bold]{chosen.name}[/bold] on [bold]{chosen.device}[/bold], "
                  f"[bold]{getattr(chosen, 'precision', 'fp32')}[/bold] ({escape(str(getattr(chosen, 'path', '')))})")
    meta = chosen.info.metadata
    model_table = Table(title="Model", box=box.SIMPLE, show_header=False, title_justify="left")
    model_table.add_column("field", style="bold")
    model_table.add_column("value")
    pre = chosen.info.preprocessing
    rows = [
        ("architecture", _figures(chosen.info.model_args)),
        ("preprocessing", f"{pre.channel} channel, CLAHE clip {pre.clahe_clip} tiles {pre.clahe_tiles}, rescaled to a FOV diameter of "
                          f"{pre.fov_diameter:g} px (unless within {pre.scale_tolerance:.0%})"),
        ("threshold", f"{chosen.info.threshold:.4f} (on the vessel probability)"),
        ("tiles", f"{chosen.info.fixed_tile[0]}x{chosen.info.fixed_tile[1]} only" if chosen.info.fixed_tile
                  else f"any size (runs at multiples of {chosen.info.tile_multiple})"),
        ("training data", "; ".join(meta.get("data", [])) or "not recorded"),
        ("validation metrics", _figures(meta.get("metrics", "not recorded"))),
        ("trained", f"epoch {meta.get('epoch', '?')}, step {meta.get('step', '?')}, saved {meta.get('created', '?')}"),
        ("made by", f"vesselseg {meta.get('version', meta.get('checkpoint_version', '?'))}"),
    ]
    for row in rows:
        model_table.add_row(row[0], escape(row[1]))
    console.print(model_table)
    chosen.close()
