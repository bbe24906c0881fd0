"""A run's bookkeeping, the same for the local pipeline, a shard and Ray: the locks, what is
already done (resume), the results file and, for a shard, its record in ``OUT/parts``.

``open_ledger`` is entered once per run around whatever segments the images::

    with open_ledger(config, items, positions, settings) as ledger:
        ...  # segment ledger.todo, append each ImageResult to ledger.writer, add it to ledger.report

A whole run holds ``OUT/.vesselseg.lock`` exclusively and writes ``OUT/results.csv``; shard
I of N holds that lock shared and ``OUT/parts/.lock-I-of-N`` exclusively, and writes
``OUT/parts/results-I-of-N.csv`` and ``OUT/parts/run-I-of-N.json``. An image is done when its
mask exists and the results file has an ``ok`` row for it; the rows of images redone are
dropped first, so no image gets two rows. When the run ends (finished, stopped or
interrupted, not on a full disk) the results file is rewritten in input order, so it is the
same file whichever worker finished first.
"""
from __future__ import annotations

import os
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from .. import __version__
from ..config import SegmentConfig
from ..discover import Item, OutputPaths
from ..lock import OutputLock
from ..report import Report, ResultsWriter, columns, read_rows, rewrite_in_order
from .parts import PartPaths, read_manifest, write_manifest


class SettingsChangedError(ValueError):
    """A shard resumed with other settings than it started with; the message lists them."""


@dataclass
class Ledger:
    """An open run: where results go, what is left to do and the tally so far."""

    paths: OutputPaths
    csv: Path
    todo: list[Item]
    report: Report
    writer: ResultsWriter


def _is_done(item: Item, ok_names: set[str], paths: OutputPaths) -> bool:
    return item.name in ok_names and paths.mask(item.key).is_file()


def remove_stale_temporaries(out: Path) -> None:
    """Delete ``.tmp-*`` files a killed run left (the caller holds OUT exclusively: none is being written)."""
    folders = [(str(out), [], [e.name for e in os.scandir(out) if e.is_file()])]
    for folder in ("masks", "overlays", "probabilities", "parts"):
        folders.extend(os.walk(out / folder))
    for root, _, files in folders:
        for name in files:
            if name.startswith(".tmp-"):
                try:
                    os.unlink(os.path.join(root, name))
                except OSError:
                    pass


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _check_settings(part: PartPaths, record: Mapping[str, Any] | None, settings: Mapping[str, Any]) -> None:
    if record is None:
        return
    old = record.get("settings") or {}
    changed = [k for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k)]
    if changed:
        shown = "; ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in changed)
        raise SettingsChangedError(
            f"shard {part.shard} in {part.out} was started with other settings ({shown}); rerun it with the "
            "same options, or pass --overwrite to redo this shard (then redo the others too so that merge accepts them)"
        )


@contextmanager
def open_ledger(
    config: SegmentConfig,
    items: Sequence[Item],
    positions: Sequence[int] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> Iterator[Ledger]:
    """Lock OUT, work out what to do and open the results file (see the module docstring).

    ``items``: the images of this run (of this shard) in input order; ``positions``: each
    one's place in the whole input listing (default 0, 1, ...); ``settings``: the flat dict
    of what shapes the outputs, recorded for a shard. Raises ``LockedError``,
    ``CsvMismatchError``, ``SettingsChangedError`` or ``OSError`` before anything is written.
    """
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = OutputPaths(out)
    part = PartPaths(out, config.shard) if config.shard is not None else None
    settings = dict(settings or {})
    with ExitStack() as stack:
        stack.enter_context(OutputLock(paths.lock, shared=part is not None))
        if part is not None:
            stack.enter_context(OutputLock(part.lock))
            if not config.overwrite:
                _check_settings(part, read_manifest(part.manifest), settings)
        else:
            remove_stale_temporaries(out)
        csv_path = part.csv if part is not None else paths.csv
        header = columns(config.gt_dir is not None)
        rows = [] if config.overwrite else read_rows(csv_path, header)
        ok_names = {r["image"] for r in rows if r.get("status") == "ok"}
        todo = [i for i in items if config.overwrite or not _is_done(i, ok_names, paths)]
        redo = {i.name for i in todo}
        kept = list({r["image"]: r for r in rows if r["image"] not in redo}.values())
        report = Report(total=len(items), skipped=len(items) - len(todo))
        record: dict[str, Any] = {}
        if part is not None:
            where = list(positions) if positions is not None else list(range(len(items)))
            record = {"shard": str(part.shard), "version": __version__, "settings": settings,
                      "images": [[p, i.name] for p, i in zip(where, items)], "complete": False,
                      "started": _now(), "finished": None}
            write_manifest(part.manifest, record)
        writer = ResultsWriter(csv_path, header, kept)
        try:
            yield Ledger(paths, csv_path, todo, report, writer)
        finally:
            writer.close()
            if not report.fatal:
                rewrite_in_order(csv_path, header, [i.name for i in items])
            if part is not None:
                record.update(complete=report.remaining == 0 and not report.fatal, finished=_now(),
                              counts={"done": report.done, "failed": report.failed, "skipped": report.skipped})
                write_manifest(part.manifest, record)
