"""What each shard leaves in ``OUT/parts/``, and reading it back.

Shard I of N writes, beside the shared ``OUT/masks`` (and overlays, probabilities):

- ``parts/results-I-of-N.csv``: its rows, in the one ``results.csv`` schema, flushed as they
  go and put in input order when the shard ends; resuming the shard reads it as a whole run
  reads ``results.csv``.
- ``parts/run-I-of-N.json``: ``{"shard": "I/N", "settings": {...}, "images": [[position,
  name], ...], "complete": bool, "counts": {...}, "started", "finished", "version"}``.
  ``settings`` is the flat dict of what shapes outputs (as in ``OUT/run.json``); ``images``
  lists the shard's images with their position in the whole input listing (so the merged
  file can be in input order); ``complete`` is true once every listed image has its row.
- ``parts/identifiers-I-of-N.csv``: with ``--keep-identifiers`` only, its DICOM images'
  patient identifiers, in the one ``identifiers.csv`` schema, kept as a whole run keeps them.
- ``parts/.lock-I-of-N``: the shard's lock (the same shard cannot run twice at once).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io.imageio import write_atomic
from .runrecord import NotAJsonObject, read_json_object
from .shards import Shard

PARTS = "parts"
_MANIFEST = re.compile(r"run-(\d+)-of-(\d+)\.json")


@dataclass(frozen=True)
class PartPaths:
    """The files of one shard under the output folder ``out``."""

    out: Path
    shard: Shard

    @property
    def folder(self) -> Path:
        return Path(self.out) / PARTS

    @property
    def csv(self) -> Path:
        return self.folder / f"results-{self.shard.tag}.csv"

    @property
    def identifiers(self) -> Path:
        return self.folder / f"identifiers-{self.shard.tag}.csv"

    @property
    def manifest(self) -> Path:
        return self.folder / f"run-{self.shard.tag}.json"

    @property
    def lock(self) -> Path:
        return self.folder / f".lock-{self.shard.tag}"


class PartError(ValueError):
    """A part file that is not what a shard writes; the message names it."""


def write_manifest(path: Path, record: dict[str, Any]) -> None:
    """Write a shard's record atomically (a crash leaves the old one or the new one)."""
    write_atomic(path, (json.dumps(record, indent=1, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace"))


def read_manifest(path: Path) -> dict[str, Any] | None:
    """A shard's record as written, None when there is none; ``PartError`` when damaged."""
    try:
        return read_json_object(path)
    except NotAJsonObject:
        raise PartError(f"{path} is not a shard record (not a JSON object); delete it and rerun that shard") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PartError(f"cannot read {path}: {exc}") from None


def find_manifests(out: Path) -> dict[Shard, Path]:
    """Every ``parts/run-I-of-N.json`` under ``out``, by shard (any N)."""
    folder = Path(out) / PARTS
    found: dict[Shard, Path] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir()):
        match = _MANIFEST.fullmatch(path.name)
        if match:
            index, count = int(match.group(1)), int(match.group(2))
            if count >= 1 and 0 <= index < count:
                found[Shard(index, count)] = path
    return found
