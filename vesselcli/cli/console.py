"""Where ``segment``'s lines go: rich's console and progress bar, or, with ``--quiet``, plain
lines on stderr without importing rich.

A quiet run shows no bar and no summary, so it has no use for rich, whose import took about
20 ms of every run's start-up on a 2-core machine (a loaded one: 23 ms, median of 6).
"""
from __future__ import annotations

import sys
from typing import Any, Protocol


class Lines(Protocol):
    """What the commands print warnings and errors to: rich's ``Console`` or ``PlainLines``."""

    is_terminal: bool

    def print(self, text: str = "", markup: bool = False) -> None: ...


class PlainLines:
    """Lines on stderr as given, flushed one by one: rich's ``Console.print`` with markup off, minus rich."""

    is_terminal = False

    def print(self, text: str = "", markup: bool = False) -> None:  # noqa: ARG002 - rich's signature
        sys.stderr.write(f"{text}\n")
        sys.stderr.flush()


class NoProgress:
    """A progress bar that shows nothing (``--quiet``); its ``console`` still prints lines."""

    def __init__(self, console: Lines) -> None:
        self.console = console

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def update(self, *args: Any, **kwargs: Any) -> None:
        pass

    def advance(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def error_console(quiet: bool) -> Lines:
    """Where warnings and errors go: rich's stderr console, or ``PlainLines`` when ``quiet``."""
    if quiet:
        return PlainLines()
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def progress_bar(err: Lines, quiet: bool) -> Any:
    """A transient bar on ``err`` (images done, rate, ETA) when it is a terminal; ``NoProgress`` when ``quiet``."""
    if quiet:
        return NoProgress(err)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Images per second so far."""

        def render(self, task) -> Text:  # noqa: ANN001 - rich's Task
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.2f} img/s" if speed else "- img/s", style="progress.data.speed")

    columns = (TextColumn("segmenting"), BarColumn(), MofNCompleteColumn(), RateColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    return Progress(*columns, console=err, transient=True, disable=not err.is_terminal)
