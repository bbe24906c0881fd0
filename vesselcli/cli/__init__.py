"""The ``vesselseg`` command line: a thin click layer over the pipeline modules.

Each command lives in its own module and only parses options into a frozen config, calls
the library and maps its report to an exit code: 0 all done, 1 some items failed,
2 usage errors (click's own convention).
"""
from __future__ import annotations

import click

from .. import __version__
from .export import export
from .info import info
from .report import report
from .merge import merge
from .score import score
from .segment import segment


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="vesselseg")
def main() -> None:
    """Retinal vessel segmentation for folders of fundus photographs."""


main.add_command(segment)
main.add_command(score)
main.add_command(export)
main.add_command(info)
main.add_command(report)
main.add_command(merge)
