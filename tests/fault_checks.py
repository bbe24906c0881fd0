"""Shared by the fault-injection tests: the model, a stand-in engine, running the CLI, checking its outputs.

``segment`` runs ``vesselseg segment`` in-process (an uncaught exception fails the test: a
user must never see a traceback); ``cli_command`` builds the same command for a subprocess,
where signals and a second process are involved. ``table`` reads results.csv and fails on a
torn or duplicated row; ``valid_mask`` fails on a mask that does not decode to 0/255 at the
expected size.
"""
from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from vesselcli.cli import main
from vesselcli.io.imageio import read_grey
from vesselcli.run.report import COLUMNS

ROOT = Path(__file__).resolve().parents[1]
CELLS = len(COLUMNS)


def segment(*args: object):
    """Run ``vesselseg segment`` in-process; an uncaught exception fails the test (no traceback allowed)."""
    return CliRunner().invoke(main, ["segment", *map(str, args)], catch_exceptions=False)


def table(out: Path) -> list[dict[str, str]]:
    """results.csv rows, after checking the file holds whole rows only."""
    text = (out / "results.csv").read_text(encoding="utf-8")
    assert text.endswith("\n"), "torn last row"
    lines = list(csv.reader(io.StringIO(text, newline="")))
    assert all(len(cells) == CELLS for cells in lines), "a row with the wrong number of cells"
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    names = [r["image"] for r in rows]
    assert len(set(names)) == len(names), "duplicated rows"
    return rows


def valid_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    mask = read_grey(path)
    assert mask.shape == shape and set(np.unique(mask)) <= {0, 255}, path
    return mask


def snapshot(folder: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every entry under ``folder`` outside ``skip``, links not followed."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        if Path(dirpath) == skip or skip in Path(dirpath).parents:
            continue
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if Path(path) != skip:
                st = os.lstat(path)
                seen[path] = (st.st_size, st.st_mtime_ns)
    return seen


def cli_command(inputs: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vesselcli", "segment", str(inputs), "--out", str(out), "--model", str(model),
            "--no-overlays", "-q", *extra]


def quiet_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def link_drive_images(folder: Path, drive: Path, count: int) -> list[str]:
    """Symlink the first ``count`` DRIVE test then training images into ``folder``; their names."""
    folder.mkdir(parents=True)
    sources = sorted((drive / "test" / "images").glob("*.tif")) + sorted((drive / "training" / "images").glob("*.tif"))
    for path in sources[:count]:
        os.symlink(path.resolve(), folder / path.name)
    return [p.name for p in sources[:count]]


def wait_for_rows(out: Path, rows: int, process: subprocess.Popen, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and process.poll() is None:
        csv_path = out / "results.csv"
        if csv_path.is_file() and csv_path.read_bytes().count(b"\n") >= rows + 1:
            return
        time.sleep(0.05)
    raise AssertionError(f"the run did not write {rows} rows (exit code {process.poll()})")
