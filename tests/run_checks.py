"""Checks shared by the scale-out tests: two output folders hold the same outputs.

"The same" is what the issue demands of a shard or Ray run against a one-process run: every
mask byte for byte, the same overlays present, and results.csv with the same rows in the same
order, cell for cell except ``seconds`` (wall time differs from run to run).
"""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

#: DRIVE test images split 2 + 2 by shard_of(name, 2), so both shards of 2 have work.
DRIVE_FOUR = ("01_test.tif", "02_test.tif", "04_test.tif", "06_test.tif")


def copy_drive(drive_root: Path, dest: Path, names: tuple[str, ...] = DRIVE_FOUR) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(drive_root / "test" / "images" / name, dest / name)
    return dest


def rows_without_seconds(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_same_outputs(one: Path, other: Path) -> None:
    masks = files(one / "masks")
    assert masks, f"no masks in {one}"
    assert files(other / "masks") == masks, "masks differ"
    assert set(files(other / "overlays")) == set(files(one / "overlays"))
    expected = rows_without_seconds(one / "results.csv")
    assert rows_without_seconds(other / "results.csv") == expected
    assert not [p for p in other.rglob(".tmp-*")], "temporary files left"
