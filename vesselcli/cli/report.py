"""``vesselseg report OUT``: (re)build ``OUT/report.html`` from a run's outputs alone.

Exit code: 0 written, 2 no results.csv in OUT (or the page cannot be written).
"""
from __future__ import annotations

import time
from pathlib import Path

import click

from ..analysis.html_report import REPORT_NAME, ReportError, build_report


@click.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help=f"Where to write the page. Default: OUT/{REPORT_NAME}.")
def report(out: Path, output: Path | None) -> None:
    """Build OUT/report.html from OUT/results.csv, OUT/run.json and the overlays or masks.

    One self-contained page (inline CSS, SVG plots and thumbnails; no script, no network):
    the run's header, counts and failures, distributions with linked outliers, the worst
    cases first and a sample grid.
    """
    started = time.perf_counter()
    try:
        path = build_report(out, output)
    except ReportError as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        raise click.UsageError(f"cannot write the report: {exc.strerror or exc}; choose a writable --output") from None
    size = path.stat().st_size
    click.echo(f"{path} ({size / 1e6:.2f} MB, {time.perf_counter() - started:.1f} s)")
