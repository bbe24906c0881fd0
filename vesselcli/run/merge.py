"""``vesselseg merge OUT``: the shards' parts -> one ``OUT/results.csv`` and ``OUT/run.json``.

Checks before anything is written (each failure is one line naming the shard and the fix):

- every shard record in ``OUT/parts`` has the same shard count N, and all N are there;
- every shard is complete: it ended with a row for each image it listed, and no other rows;
- no image twice: each image is listed by one shard only, the one its name hashes to;
- the same run settings (``vesselcli.run.runrecord``: the model's SHA-256, threshold, scale,
  tiling, annotations, outputs ...; a model at another path with the same bytes is the same),
  ``--keep-identifiers`` among them: all shards kept the identifiers or none did;
- with ``--keep-identifiers``, each shard's identifiers part is there and names only its own images.

Then the rows go into ``OUT/results.csv`` in the order of the whole input listing (the order
a one-process run writes), the identifiers parts' rows into ``OUT/identifiers.csv`` in the
same order (the file a one-process run writes), and ``OUT/run.json`` records the settings,
the counts and the shards' start and end. The merge holds ``OUT``'s lock exclusively, so it cannot run while a
shard still writes (nor a shard start while it merges), and it deletes temporary files that
killed shards left.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import __version__
from ..io.discover import OutputPaths
from ..io.lock import OutputLock
from .report import IDENTIFIER_COLUMNS, CsvMismatchError, Report, read_rows, write_rows
from .runrecord import differences, now, write_run
from .ledger import remove_stale_temporaries
from .parts import PartError, PartPaths, find_manifests, read_manifest
from .shards import Shard, shard_of

_SHOWN = 5  # problems of one kind listed before "and N more"


class MergeError(ValueError):
    """The parts cannot be merged; the message has one line per problem."""


@dataclass(frozen=True)
class Part:
    """One shard's record and rows as found in ``OUT/parts``."""

    shard: Shard
    record: dict[str, Any]
    rows: list[dict[str, str]]
    identifiers: list[dict[str, str]] | None = None  # its identifiers part's rows; None: no such file

    @property
    def keeps_identifiers(self) -> bool:
        """Whether the shard ran with ``--keep-identifiers`` (as its record says)."""
        return bool((self.record.get("settings") or {}).get("identifiers"))


def read_part(out: Path, shard: Shard) -> Part:
    """The record and rows of ``shard`` (no rows when its results file is missing)."""
    paths = PartPaths(out, shard)
    record = read_manifest(paths.manifest) or {}
    try:
        rows = read_rows(paths.csv)
        identifiers = read_rows(paths.identifiers, IDENTIFIER_COLUMNS) if paths.identifiers.is_file() else None
    except CsvMismatchError as exc:
        raise PartError(str(exc)) from None
    return Part(shard, record, rows, identifiers)


def _listed(more: list[str]) -> list[str]:
    if len(more) <= _SHOWN:
        return more
    return more[:_SHOWN] + [f"... and {len(more) - _SHOWN} more"]


def check_parts(parts: list[Part], count: int) -> list[str]:
    """Every problem that stops a merge of these parts of ``count`` shards, one line each."""
    problems: list[str] = []
    present = {p.shard.index for p in parts}
    for index in range(count):
        if index not in present:
            problems.append(f"shard {index}/{count} is missing (no parts/run-{index}-of-{count}.json): run "
                            f"`vesselseg segment ... --shard {index}/{count}` into this folder")
    owners: dict[str, list[Shard]] = defaultdict(list)
    strays: list[str] = []
    for part in parts:
        listed = [name for _, name in part.record.get("images", [])]
        for name in listed:
            owners[name].append(part.shard)
            home = shard_of(name, count)
            if home != part.shard.index:
                strays.append(f"image {name} is listed by shard {part.shard} but belongs to shard {home}/{count}: "
                              f"that part comes from another run or was copied; redo shard {part.shard} with --overwrite")
        rowed = [r["image"] for r in part.rows]
        missing = set(listed) - set(rowed)
        extra = set(rowed) - set(listed)
        if not part.record.get("complete") or missing:
            detail = f"{len(missing)} of its {len(listed)} images have no row" if missing else "it did not finish"
            problems.append(f"shard {part.shard} is not complete ({detail}; it was stopped, stopped early or is "
                            f"still running): rerun the same command with --shard {part.shard}")
        if extra:
            problems.append(f"shard {part.shard} has rows for {len(extra)} image(s) it does not list "
                            f"({', '.join(sorted(extra)[:3])}); redo it with --overwrite")
        if len(rowed) != len(set(rowed)):
            problems.append(f"shard {part.shard} has an image twice in its results file; redo it with --overwrite")
    twice = [f"image {name} is in shards {' and '.join(str(s) for s in shards)}: a shard was duplicated or the "
             "parts come from different runs; delete the wrong part and redo that shard"
             for name, shards in owners.items() if len(shards) > 1]
    problems += _listed(twice) + _listed(strays)
    problems += _differing_settings(parts)
    problems += _identifier_problems(parts)
    return problems


def _identifier_problems(parts: list[Part]) -> list[str]:
    """Identifiers parts missing or naming images their shard has no ``ok`` row for (with
    ``--keep-identifiers``; shards that differ in it are other settings, see ``_differing_settings``)."""
    found = []
    for part in parts:
        if not part.keeps_identifiers:
            continue
        name = PartPaths(Path(), part.shard).identifiers.name  # the file's name depends on the shard alone
        if part.identifiers is None:
            found.append(f"shard {part.shard} ran with --keep-identifiers but parts/{name} is missing; redo shard "
                         f"{part.shard} with --keep-identifiers --overwrite")
            continue
        ok = {r["image"] for r in part.rows if r.get("status") == "ok"}
        stray = sorted({r["image"] for r in part.identifiers} - ok)
        if stray:
            found.append(f"shard {part.shard}'s parts/{name} names {len(stray)} image(s) without an ok row "
                         f"({', '.join(stray[:3])}); redo shard {part.shard} with --keep-identifiers --overwrite")
    return found


def _differing_settings(parts: list[Part]) -> list[str]:
    if not parts:
        return []
    first = parts[0]
    base = first.record.get("settings") or {}
    found = []
    for part in parts[1:]:
        # the model may lie at another path on another node: the same bytes are the same model
        changed = differences(base, part.record.get("settings") or {})
        if changed:
            shown = "; ".join(f"{name}: {before!r} vs {after!r}" for name, before, after in changed)
            found.append(f"shard {part.shard} ran with other settings than shard {first.shard} ({shown}); "
                         f"redo shard {part.shard} with the same options and --overwrite")
    return found


def report_of(rows: list[dict[str, str]]) -> Report:
    """The tally of a results file's rows (done, failed, mean density, IoU, Dice and width ratio)."""
    report = Report(total=len(rows))
    for row in rows:
        report.count(row.get("status") == "ok", *(float(row[c]) if row.get(c) else None
                                                    for c in ("vessel_density", "iou", "dice", "width_ratio")))
    return report


def merge(out: Path) -> tuple[Report, int]:
    """Check the parts and write ``OUT/results.csv``, ``OUT/run.json`` (and ``OUT/identifiers.csv``
    when the shards kept identifiers); (merged tally, shard count).

    Raises ``MergeError`` (nothing written) when the parts cannot be merged, ``LockedError``
    when a shard (or another run) still holds ``out``.
    """
    out = Path(out)
    paths = OutputPaths(out)
    with OutputLock(paths.lock):
        found = find_manifests(out)
        if not found:
            raise MergeError(f"no shard records in {out / 'parts'}: run `vesselseg segment ... --out {out} --shard I/N` "
                             "for every I first")
        counts = sorted({s.count for s in found})
        if len(counts) > 1:
            by = "; ".join(f"{n}: {', '.join(str(s) for s in sorted(found, key=lambda s: s.index) if s.count == n)}"
                           for n in counts)
            raise MergeError(f"{out / 'parts'} holds shards of different counts ({by}); keep only the parts of one "
                             "run (delete the others) and merge again")
        count = counts[0]
        try:
            parts = [read_part(out, s) for s in sorted(found, key=lambda s: s.index)]
        except PartError as exc:
            raise MergeError(str(exc)) from None
        problems = check_parts(parts, count)
        if problems:
            raise MergeError("\n".join(problems))
        rows = _in_input_order(parts, [p.rows for p in parts])
        write_rows(paths.csv, rows)
        if parts[0].keeps_identifiers:  # then every part does: checked above
            write_rows(paths.identifiers, _in_input_order(parts, [p.identifiers or [] for p in parts]),
                       IDENTIFIER_COLUMNS)
        report = report_of(rows)
        _write_run_record(out, parts, report)
        remove_stale_temporaries(out)
    return report, count


def _in_input_order(parts: list[Part], tables: list[list[dict[str, str]]]) -> list[dict[str, str]]:
    """The rows of ``tables`` (one per part, rows keyed by ``image``) in the whole input listing's order."""
    place: dict[str, int] = {}
    for part in parts:
        place.update({name: position for position, name in part.record.get("images", [])})
    rows = [row for table in tables for row in table]
    rows.sort(key=lambda row: place[row["image"]])
    return rows


def _write_run_record(out: Path, parts: list[Part], report: Report) -> None:
    """``OUT/run.json``: shard 0's record (settings, engine, options) with the whole run's times and counts."""
    started = [p.record["started"] for p in parts if p.record.get("started")]
    finished = [p.record["finished"] for p in parts if p.record.get("finished")]
    record = {k: v for k, v in parts[0].record.items() if k not in ("shard", "images", "complete")}
    record.update(
        version=__version__,
        started=min(started) if started else None,
        finished=max(finished) if finished else None,
        duration_s=_seconds_between(min(started), max(finished)) if started and finished else None,
        counts={"done": report.done, "failed": report.failed, "skipped": 0},
        shards=len(parts),
        machines=sorted({str((p.record.get("machine") or {}).get("hostname", "")) for p in parts} - {""}),
        merged=now(),
    )
    write_run(out, record)


def _seconds_between(start: str, end: str) -> float:
    def parse(text: str) -> datetime:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")

    return round((parse(end) - parse(start)).total_seconds(), 3)
