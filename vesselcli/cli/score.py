"""``vesselseg score PRED GT``: figures of predicted masks against annotations.

A thin layer over ``vesselcli.analysis.score``: parse options into a ``ScoreConfig``, score pair by pair,
then print a table (or ``--json``) and write ``--out``. Exit code 0 when every pair was scored,
1 when some pairs failed (one line each on stderr), 2 for usage errors (nothing paired, bad option).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..io.imageio import write_atomic
from ..analysis.score import (
    COLUMNS, COUNT_METRICS, PROBABILITY_METRICS, NothingPaired, Pairing, PairResult, ScoreConfig, Summary,
    as_json, csv_row, pair_folders, score_all, summarise,
)
from .params import name_pattern

#: Names listed on the terminal per unpaired group before "and N more".
UNPAIRED_SHOWN = 20


@click.command()
@click.argument("pred", type=click.Path(exists=True, path_type=Path))
@click.argument("gt", type=click.Path(exists=True, path_type=Path))
@click.option("--fov", type=click.Path(exists=True, path_type=Path), metavar="DIR",
              help="FOV masks (folder, paired like GT; or one file for every pair). Default: the whole image.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write one CSV row per pair here.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True, metavar="T",
              help="Vessel where probability >= T (probability maps only; binary masks are used as they are).")
@click.option("--pattern", callback=name_pattern, metavar="PATTERN",
              help="Name of each prediction's annotation, without extension, e.g. '{stem}_seg'. Default: the pairing rule.")
@click.option("--fov-pattern", callback=name_pattern, metavar="PATTERN", help="Same as --pattern, for the FOV masks.")
@click.option("--json", "as_json_flag", is_flag=True, help="Print the report as JSON on stdout instead of the table.")
def score(pred: Path, gt: Path, fov: Path | None, out: Path | None, threshold: float,
          pattern: str | None, fov_pattern: str | None, as_json_flag: bool) -> None:
    """Score predicted masks in PRED against annotations in GT (folders or single files).

    Predictions pair with annotations by name (DRIVE, CHASE_DB1, STARE, HRF and same-stem names
    out of the box). Figures are inside the FOV: iou, dice, sensitivity, specificity, accuracy,
    mcc, the mean vessel width of prediction and annotation and their ratio, and for probability
    maps auc, best_f1 and best_threshold; then their mean over pairs and pooled figures over all
    pixels.

    A prediction with at most two grey levels is a binary mask; more is a probability map
    (value / 255, or / 65535 for 16-bit files). Nothing is resized. Exit code: 0 all pairs
    scored, 1 some pairs failed, 2 usage error (nothing paired, bad option).
    """
    config = ScoreConfig(pred, gt, fov, threshold, pattern, fov_pattern)
    try:
        pairing = pair_folders(config)
    except NothingPaired as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        raise click.UsageError(f"cannot list files: {exc}") from None
    results = _score_with_progress(pairing, config, quiet=as_json_flag)
    summary = summarise(results)
    if out is not None:
        _write_csv(out, results)
    if as_json_flag:
        click.echo(json.dumps(as_json(config, pairing, results, summary), indent=2))
    else:
        _print_table(results, summary)
    _report_unpaired(pairing)
    click.get_current_context().exit(summary.exit_code)


def _score_with_progress(pairing: Pairing, config: ScoreConfig, quiet: bool) -> list[PairResult]:
    """Score all pairs, one stderr line per failed pair, a progress bar when stderr is a terminal."""
    err = Console(stderr=True)
    results: list[PairResult] = []
    columns = (TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True, disable=quiet or not err.is_terminal) as progress:
        task = progress.add_task("score", total=len(pairing.pairs))
        for result in score_all(pairing, config):
            if result.error:  # printed above the progress bar when there is one
                err.print(f"error: {result.image}: {result.error}", markup=False, highlight=False, soft_wrap=True)
            results.append(result)
            progress.advance(task)
    return results


def _write_csv(out: Path, results: list[PairResult]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_row(r) for r in results)
    try:
        write_atomic(out, buffer.getvalue().encode())
    except OSError as exc:
        raise click.UsageError(f"cannot write --out {out}: {exc.strerror or exc}") from None


def _fmt(value: float | int | None) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:.4f}"


#: Table headers (the terminal is narrow; the CSV and JSON use the full column names).
HEADERS = {"iou": "IoU", "dice": "Dice", "sensitivity": "Sens", "specificity": "Spec", "accuracy": "Acc",
           "mcc": "MCC", "auc": "AUC", "best_f1": "best F1", "best_threshold": "at T", "width_ratio": "width"}


def _print_table(results: list[PairResult], summary: Summary) -> None:
    console = Console()
    if not console.is_terminal:  # a log or a pipe: no reason to fold the table into 80 columns
        console = Console(width=max(console.width, 160))
    names = COUNT_METRICS + PROBABILITY_METRICS + ("width_ratio",)  # the widths themselves: --out, --json
    shown = [n for n in names if n in COUNT_METRICS or any(r.figures.get(n) is not None for r in results)]
    image_width = min(24, max((len(r.image) for r in results), default=6))
    with_kind = image_width + 7 + 8 * len(shown) <= console.width
    if not with_kind:  # a narrow terminal: keep the names and figures, leave the rest to --out/--json
        shown = [n for n in shown if n != "best_threshold"]
    table = Table(title=f"{summary.scored} scored, {summary.failed} failed", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True,
                  caption="pooled: figures from the counts summed over all pairs; width: the mask's mean vessel width / the annotation's")
    table.add_column("image", overflow="fold", min_width=image_width)
    if with_kind:
        table.add_column("kind", no_wrap=True)
    for name in shown:
        table.add_column(HEADERS[name], justify="right", no_wrap=True, min_width=6)
    for r in results:
        kind = "prob" if r.prediction == "probability" else "bin"
        if r.error:
            kind, cells = "[red]error[/red]", ["[red]-[/red]"] * len(shown)
        else:
            cells = [_fmt(r.figures.get(n)) for n in shown]
        table.add_row(r.image, *([kind] if with_kind else []), *cells)
    table.add_section()
    for label, figures in (("mean", summary.mean), ("pooled", summary.pooled)):
        table.add_row(f"[bold]{label}[/bold]", *([""] if with_kind else []), *[_fmt(figures.get(n)) for n in shown])
    console.print(table)


def _report_unpaired(pairing: Pairing) -> None:
    for what, paths in (("prediction{} without an annotation", pairing.unpaired_pred),
                        ("annotation{} without a prediction", pairing.unpaired_gt)):
        if paths:
            what = what.format("" if len(paths) == 1 else "s")
            names = ", ".join(p.name for p in paths[:UNPAIRED_SHOWN])
            more = f" and {len(paths) - UNPAIRED_SHOWN} more (all in --json)" if len(paths) > UNPAIRED_SHOWN else ""
            click.echo(f"unpaired: {len(paths)} {what}: {names}{more}", err=True)
