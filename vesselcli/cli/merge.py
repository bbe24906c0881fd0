"""``vesselseg merge OUT``: join the parts of ``segment --shard I/N`` runs into one result.

Checks that every shard is there and complete, that no image is in two shards and that all
ran with the same settings, then writes ``OUT/results.csv`` (input order), ``OUT/run.json``
and ``OUT/report.html`` and prints the run's summary. Exit code: 0 merged and every image done;
1 merged but some images failed (their rows say why), or not merged (one line per problem
on stderr, nothing written); 2 usage error.
"""
from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from ..io.lock import LockedError
from ..run.merge import MergeError, merge as merge_parts
from .segment import print_summary, write_report


@click.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-q", "--quiet", is_flag=True, help="No summary; problems still go to stderr.")
def merge(out: Path, quiet: bool) -> None:
    """Merge the shards in OUT/parts (from `segment --shard I/N`) into OUT/results.csv and OUT/run.json."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        report, shards = merge_parts(out)
    except (MergeError, LockedError) as exc:
        for line in str(exc).splitlines():
            err.print(f"error: {line}", markup=False)
        err.print(f"nothing merged: {out / 'results.csv'} was not written", markup=False)
        click.get_current_context().exit(1)
    write_report(out, err, quiet)
    if not quiet:
        print_summary(report, bool(report.ious), 0.0, [("results", str(out / "results.csv")), ("shards", str(shards))],
                      title="vesselseg merge")
    if report.failed:
        err.print(f"{report.failed} image(s) failed (see the error column of {out / 'results.csv'})", markup=False)
    click.get_current_context().exit(report.exit_code)
