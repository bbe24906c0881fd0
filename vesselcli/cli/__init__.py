"""The ``vesselseg`` command line: a thin click layer over the pipeline modules.

Each command lives in its own module and only parses options into a frozen config, calls
the library and maps its report to an exit code: 0 all done, 1 some items failed,
2 usage errors (click's own convention).

A command's module is imported when that command runs (``LazyGroup``), so ``segment`` does
not pay for what ``info``, ``score``, ``export``, ``report`` and ``merge`` import
(``importlib.metadata``, the metrics tables, ...); ``vesselseg --help`` imports them all.
"""
from __future__ import annotations

import importlib
import os

# Before anything imports numpy: its OpenBLAS starts a thread pool of one thread per core at
# import, which no command uses (their only BLAS call is a least-squares line through about
# eight points per image). On a 2-core machine that pool cost 45 ms of every command's start-up
# (importing numpy: 100 -> 56 ms) and more with more cores. A value the user set is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import click  # noqa: E402 - after the environment is set

from .. import __version__  # noqa: E402

#: Command name -> module under ``vesselcli.cli`` holding a click command of that name.
COMMANDS = {"segment": "segment", "score": "score", "export": "export", "info": "info", "report": "report",
            "merge": "merge"}


class LazyGroup(click.Group):
    """A click group whose commands are imported from ``COMMANDS`` when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module = importlib.import_module(f"{__name__}.{COMMANDS[cmd_name]}")
            self.add_command(getattr(module, cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="vesselseg")
def main() -> None:
    """Retinal vessel segmentation for folders of fundus photographs."""
