"""Accuracy of the product, measured by running it, beside the second human observer.

- ``product_accuracy``: runs ``vesselseg segment`` (the real command line, default options,
  the shipped model unless ``--model`` is given) with ``--gt`` (and ``--fov`` where a dataset
  provides FOV masks) on each public test set, and reads its ``results.csv``: per-image F1
  (= Dice), IoU, sensitivity, specificity, accuracy and AUC inside the field of view, averaged
  over the images. On DRIVE-512 it also scores the written masks against the truth over the
  *whole* 512x512 image (the report's protocol) with ``vesselcli.analysis.metrics``.
- ``second_observer``: DRIVE's second manual annotation scored against the first inside the
  FOV masks with the same metrics module: the level of human agreement.
"""
from __future__ import annotations

import csv
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from vesselcli.analysis import metrics
from vesselcli.io.imageio import read_mask
from vesselcli.io.pairing import pairing_key
from vesselcli.io.protocols import EvaluationSet, evaluation_sets

from .commands import Shown
from .measure import run_once

#: results.csv columns -> our names, in table order.
COLUMNS = {"dice": "f1", "iou": "iou", "auc": "auc", "sensitivity": "se", "specificity": "sp", "accuracy": "acc"}


def accuracy_sets(data: Path, limit: int | None = None) -> list[EvaluationSet]:
    """The protocols' test sets (``vesselcli.io.protocols``), as present, each cut to ``limit`` images."""
    sets = evaluation_sets(data)
    if limit is not None:
        sets = [replace(s, images=s.images[:limit]) for s in sets]
    return sets


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def segment_command(images: list[Path], out: Path, model: Path | None, extra: list[str]) -> list[str]:
    """The ``vesselseg segment`` command line (run as ``python -m vesselcli``)."""
    command = [sys.executable, "-m", "vesselcli", "segment", *map(str, images), "--out", str(out), "-q"]
    if model is not None:
        command += ["--model", str(model)]
    return command + extra


def mean_of_csv(path: Path) -> dict[str, float]:
    """Means of the metric columns over the ``ok`` rows of a ``results.csv``."""
    with open(path, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("status", "ok") == "ok"]
    if not rows:
        raise RuntimeError(f"{path} has no successful rows; see the segment run's stderr")
    figures: dict[str, float] = {"images": float(len(rows))}
    for column, name in COLUMNS.items():
        values = [float(r[column]) for r in rows if r.get(column) not in (None, "")]
        if values:
            figures[name] = float(np.nanmean(values))
    return figures


def whole_image_iou(masks_dir: Path, truth_dir: Path, images: list[Path]) -> float:
    """Mean over images of IoU between written masks and truth over the whole image."""
    truths = {pairing_key(p): p for p in _files(truth_dir)}
    values = []
    for image in images:
        pred = read_mask(masks_dir / f"{image.stem}.png")
        truth = read_mask(truths[pairing_key(image)])
        values.append(metrics.iou(metrics.confusion(pred, truth)))
    return float(np.mean(values))


def product_accuracy(data: Path, scratch: Path, model: Path | None, limit: int | None, cwd: Path, shown: Shown) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Figures per test set from the product's own runs, and the command used for each (as ``shown``)."""
    results: dict[str, dict[str, float]] = {}
    commands: dict[str, str] = {}
    for test_set in accuracy_sets(data, limit):
        out = scratch / "accuracy" / test_set.name
        shutil.rmtree(out, ignore_errors=True)
        extra = ["--gt", str(test_set.truth_dir)]
        if test_set.fov_dir is not None:
            extra += ["--fov", str(test_set.fov_dir)]
        command = segment_command(test_set.images, out, model, extra)
        run = run_once(command, cwd=cwd)
        figures = mean_of_csv(out / "results.csv")
        figures["seconds"] = run.wall_s
        if test_set.whole_image:
            figures["iou_whole_image"] = whole_image_iou(out / "masks", test_set.truth_dir, test_set.images)
        results[f"{test_set.name} test"] = figures
        commands[f"{test_set.name} test"] = _short_command(test_set, model, extra, shown)
        shutil.rmtree(out, ignore_errors=True)
    return results, commands


def _short_command(test_set: EvaluationSet, model: Path | None, extra: list[str], shown: Shown) -> str:
    """A readable form of the command: the image folder instead of a list of files."""
    folder = test_set.images[0].parent if test_set.images else Path("?")
    images = shown.path(str(folder))
    if len(test_set.images) != len(_files(folder)):
        images += "/" + (test_set.images[0].name if len(test_set.images) == 1 else "{" + ",".join(p.name for p in test_set.images) + "}")
    words = ["--model", str(model)] if model is not None else []
    return f"vesselseg segment {images} --out OUT {shown.command(words + extra)}".replace("  ", " ").rstrip()


def second_observer(data: Path, limit: int | None = None) -> dict[str, float]:
    """DRIVE 2nd_manual against 1st_manual inside the FOV masks, mean over the test images."""
    drive = data / "DRIVE" / "test"
    firsts = {pairing_key(p): p for p in _files(drive / "1st_manual")}
    fovs = {pairing_key(p): p for p in _files(drive / "mask")}
    seconds = _files(drive / "2nd_manual")[:limit]
    rows = []
    for second in seconds:
        key = pairing_key(second)
        c = metrics.confusion(read_mask(second), read_mask(firsts[key]), read_mask(fovs[key]))
        rows.append({"f1": metrics.dice(c), "iou": metrics.iou(c), "se": metrics.sensitivity(c), "sp": metrics.specificity(c), "acc": metrics.accuracy(c)})
    figures = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    figures["images"] = float(len(rows))
    return figures
