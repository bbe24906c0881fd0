"""A run's bookkeeping, the same for the local pipeline, a shard and Ray: the locks, what is
already done (resume), the results file and, for a shard, its record in ``OUT/parts``.

``open_ledger`` is entered once per run around whatever segments the images::

    with open_ledger(config, items, positions, settings, engine, device, options) as ledger:
        ...  # segment ledger.todo, append each ImageResult to ledger.writer, add it to ledger.report

A whole run holds ``OUT/.vesselseg.lock`` exclusively and writes ``OUT/results.csv`` and
``OUT/run.json`` (``vesselcli.run.runrecord``), with ``--keep-identifiers`` ``OUT/identifiers.csv``
too; shard I of N holds that lock shared and
``OUT/parts/.lock-I-of-N`` exclusively, and writes ``OUT/parts/results-I-of-N.csv`` and
``OUT/parts/run-I-of-N.json`` (the same record, with the shard's images; see
``vesselcli.run.parts``), and ``OUT/parts/identifiers-I-of-N.csv``. A run with other settings than recorded is refused unless
``overwrite``, which redoes every image and first deletes the outputs an earlier run wrote for
them (``remove_earlier_outputs``). An image is done when its
mask exists and the results file has an ``ok`` row for it; the rows of images redone are
dropped first, so no image gets two rows (nor two identifier rows). When the run ends
(finished, stopped or interrupted, not on a full disk) the results file and the identifiers
file are rewritten in input order, so they are the same files whichever worker finished first.
"""
from __future__ import annotations

import os
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from .config import SegmentConfig
from ..io.discover import Item, OutputPaths, UnsafeNameError, linked_outputs
from ..io.lock import OutputLock
from .report import IDENTIFIER_COLUMNS, Report, ResultsWriter, read_rows, rewrite_in_order
from .runrecord import SettingsMismatchError, check_settings, differences, new_record, now, write_run
from .parts import PartPaths, read_manifest, write_manifest


@dataclass
class Ledger:
    """An open run: where results go, what is left to do and the tally so far."""

    paths: OutputPaths
    csv: Path
    todo: list[Item]
    report: Report
    writer: ResultsWriter
    identifiers: ResultsWriter | None = None  # with --keep-identifiers: append an image's row before its results row


def _is_done(item: Item, ok_names: set[str], paths: OutputPaths, dicom_seg: bool = False) -> bool:
    if dicom_seg and item.frame is not None and not paths.dicom_seg(item.key).is_file():
        return False
    mask = paths.mask(item.key)
    return item.name in ok_names and mask.is_file() and not mask.is_symlink()


#: Each per-image output: its folder in OUT and the ``OutputPaths`` method that names its file.
IMAGE_OUTPUTS = (("masks", "mask"), ("overlays", "overlay"), ("probabilities", "probability"), ("dicom-seg", "dicom_seg"))


def remove_stale_temporaries(out: Path) -> None:
    """Delete ``.tmp-*`` files a killed run left (the caller holds OUT exclusively: none is being written)."""
    folders = [(str(out), [], [e.name for e in os.scandir(out) if e.is_file()])]
    for folder in [*(name for name, _ in IMAGE_OUTPUTS), "parts"]:
        folders.extend(os.walk(out / folder))
    for root, _, files in folders:
        for name in files:
            if name.startswith(".tmp-"):
                try:
                    os.unlink(os.path.join(root, name))
                except OSError:
                    pass


def remove_earlier_outputs(paths: OutputPaths, items: Sequence[Item]) -> None:
    """Delete the mask, overlay, probability map and DICOM Segmentation an earlier run wrote for
    each of ``items`` (``--overwrite``: this run redoes them and writes what its own settings ask
    for, so an overlay or map of settings no longer in force, or a mask where the image now
    fails, does not outlive the row it belonged to). A kind whose folder is absent is skipped.
    Nothing is deleted through a symbolic link inside OUT, nor for a name that would leave OUT:
    the image's own write refuses those and makes its ``error`` row."""
    kinds = [getattr(paths, attribute) for folder, attribute in IMAGE_OUTPUTS if (paths.out / folder).is_dir()]
    for item in items:
        for where in kinds:
            try:
                path = where(item.key)
            except UnsafeNameError:
                continue
            if paths.through_link(path):
                continue
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def _check_part(part: PartPaths, record: Mapping[str, Any] | None, settings: Mapping[str, Any]) -> None:
    old = (record or {}).get("settings")
    changed = differences(old, settings) if isinstance(old, dict) else []
    if changed:
        shown = "; ".join(f"{name}: {before!r} -> {after!r}" for name, before, after in changed)
        raise SettingsMismatchError(
            f"shard {part.shard} in {part.out} was started with other settings ({shown}); rerun it with the "
            "same options, or pass --overwrite to redo this shard (and the others, so that merge accepts them)"
        )


def _open_identifiers(path: Path, redo: set[str], overwrite: bool) -> ResultsWriter:
    """The identifiers file, keeping an earlier run's rows but those of images redone (none with ``overwrite``)."""
    earlier = [] if overwrite else read_rows(path, IDENTIFIER_COLUMNS)
    return ResultsWriter(path, [r for r in earlier if r["image"] not in redo], IDENTIFIER_COLUMNS)


@contextmanager
def open_ledger(
    config: SegmentConfig,
    items: Sequence[Item],
    positions: Sequence[int] = (),
    settings: Mapping[str, Any] | None = None,
    engine: str = "",
    device: str = "",
    options: Mapping[str, Any] | None = None,
) -> Iterator[Ledger]:
    """Lock OUT, work out what to do, record the run and open the results file (module docstring).

    ``items``: the images of this run (of this shard) in input order; ``positions``: each
    one's place in the whole input listing (empty: 0, 1, ...); ``settings``: the flat dict of
    what shapes the outputs (``runrecord.output_settings``); ``engine``, ``device``,
    ``options``: recorded beside them. Raises ``LockedError``, ``SettingsMismatchError``,
    ``CsvMismatchError``, ``LinkedOutputError`` or ``OSError`` before any output is written.
    """
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    linked_outputs(out)  # before the lock: its file is one of them
    paths = OutputPaths(out)
    part = PartPaths(out, config.shard) if config.shard is not None else None
    settings = dict(settings or {})
    with ExitStack() as stack:
        stack.enter_context(OutputLock(paths.lock, shared=part is not None))
        if part is not None:
            stack.enter_context(OutputLock(part.lock))
        else:
            remove_stale_temporaries(out)
        csv_path = part.csv if part is not None else paths.csv
        rows = [] if config.overwrite else read_rows(csv_path)
        if not config.overwrite:
            if part is not None:
                _check_part(part, read_manifest(part.manifest), settings)
            # a shard checks OUT's record too: a whole run or a merge with other settings may have made it
            check_settings(out, settings, results_exist=paths.csv.is_file() and paths.csv.stat().st_size > 0)
        ok_names = {r["image"] for r in rows if r.get("status") == "ok"}
        todo = [i for i in items if config.overwrite or not _is_done(i, ok_names, paths, config.dicom_seg)]
        if config.overwrite:
            remove_earlier_outputs(paths, todo)
        redo = {i.name for i in todo}
        kept = list({r["image"]: r for r in rows if r["image"] not in redo}.values())
        report = Report(total=len(items), skipped=len(items) - len(todo))
        record = new_record(settings, engine, device, options or {})
        if part is not None:
            where = list(positions) if positions else list(range(len(items)))
            record.update(shard=str(part.shard), complete=False, images=[[p, i.name] for p, i in zip(where, items)])
        save = (lambda r: write_manifest(part.manifest, r)) if part is not None else (lambda r: write_run(out, r))
        started = time.monotonic()
        save(record)  # before any output: whatever is in OUT from now on was made with these settings
        # The writers close once, through their own stack: on leaving (before the files are
        # rewritten in input order), or with the lock's stack if opening the second one fails.
        writers = stack.enter_context(ExitStack())
        writer = ResultsWriter(csv_path, kept)
        writers.callback(writer.close)
        ids_path = part.identifiers if part is not None else paths.identifiers
        identifiers = _open_identifiers(ids_path, redo, config.overwrite) if config.keep_identifiers else None
        if identifiers is not None:
            writers.callback(identifiers.close)
        try:
            yield Ledger(paths, csv_path, todo, report, writer, identifiers)
        finally:
            writers.close()
            record.update(finished=now(), duration_s=round(time.monotonic() - started, 3),
                          counts={"done": report.done, "failed": report.failed, "skipped": report.skipped})
            if part is not None:
                record["complete"] = report.remaining == 0 and not report.fatal
            try:
                if not report.fatal:
                    rewrite_in_order(csv_path, [i.name for i in items])
                    if identifiers is not None:
                        rewrite_in_order(ids_path, [i.name for i in items], IDENTIFIER_COLUMNS)
                save(record)
            except OSError:
                pass  # a full disk: the record written at the start still holds the settings
