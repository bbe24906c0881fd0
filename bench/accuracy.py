"""Accuracy of the product, measured by running it, beside the second human observer.

- ``product_accuracy``: runs ``vesselseg segment`` (the real command line, default options,
  the shipped model unless ``--model`` is given) with ``--gt`` (and ``--fov`` where a dataset
  provides FOV masks) on each public test set, and reads its ``results.csv``: per-image F1
  (= Dice), IoU, sensitivity, specificity, accuracy and AUC inside the field of view, averaged
  over the images, F1 and IoU with a 95% bootstrap interval over images
  (``metrics.bootstrap_interval``). On DRIVE-512 it also scores the written masks against the
  truth over the *whole* 512x512 image (the report's protocol) with ``vesselcli.analysis.metrics``.
  Each set runs again with ``--tta`` (``OPTION_RUNS``), whose figures carry the paired gain over
  the default run: the mean per-image difference, its interval, and on how many images it is
  positive.
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
#: Figures given with a 95% interval (``<name>_lo``, ``<name>_hi``) and, for an option run, a
#: paired gain over the default run (``<name>_gain``, ``_gain_lo``, ``_gain_hi``, ``_better``).
INTERVAL_FIGURES = ("f1", "iou", "iou_whole_image")
#: Option sets measured beside the default options, by name: their extra ``segment`` words.
OPTION_RUNS = {"--tta": ["--tta"]}


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


def per_image(path: Path) -> dict[str, dict[str, float]]:
    """Per image (its ``image`` cell), the metric columns of the ``ok`` rows of a ``results.csv``, by our names."""
    with open(path, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("status", "ok") == "ok"]
    if not rows:
        raise RuntimeError(f"{path} has no successful rows; see the segment run's stderr")
    return {r["image"]: {name: float(r[column]) for column, name in COLUMNS.items() if r.get(column) not in (None, "")} for r in rows}


def summarise(images: dict[str, dict[str, float]]) -> dict[str, float]:
    """Means over images of every figure, and the 95% interval of those in ``INTERVAL_FIGURES``."""
    figures: dict[str, float] = {"images": float(len(images))}
    names = dict.fromkeys(name for row in images.values() for name in row)
    for name in names:
        values = [row[name] for row in images.values() if name in row]
        figures[name] = float(np.nanmean(values))
        if name in INTERVAL_FIGURES:
            figures[f"{name}_lo"], figures[f"{name}_hi"] = metrics.bootstrap_interval(values)
    return figures


def paired_gain(base: dict[str, dict[str, float]], other: dict[str, dict[str, float]]) -> dict[str, float]:
    """``other`` minus ``base`` image by image (the images both have), for ``INTERVAL_FIGURES``:
    the mean difference, its 95% bootstrap interval and the number of images where it is positive."""
    gains: dict[str, float] = {}
    shared = sorted(set(base) & set(other))
    for name in INTERVAL_FIGURES:
        keys = [k for k in shared if name in base[k] and name in other[k]]
        if not keys:
            continue
        diff = np.array([other[k][name] - base[k][name] for k in keys])
        gains[f"{name}_gain"] = float(diff.mean())
        gains[f"{name}_gain_lo"], gains[f"{name}_gain_hi"] = metrics.bootstrap_interval(diff)
        gains[f"{name}_better"] = float((diff > 0).sum())
    return gains


def whole_image_ious(masks_dir: Path, truth_dir: Path, images: list[Path]) -> dict[str, float]:
    """Per image (its file name), IoU between the written mask and the truth over the whole image."""
    truths = {pairing_key(p): p for p in _files(truth_dir)}
    values = {}
    for image in images:
        pred = read_mask(masks_dir / f"{image.stem}.png")
        truth = read_mask(truths[pairing_key(image)])
        values[image.name] = metrics.iou(metrics.confusion(pred, truth))
    return values


def product_accuracy(data: Path, scratch: Path, model: Path | None, limit: int | None, cwd: Path,
                     shown: Shown) -> tuple[dict[str, dict[str, float]], dict[str, str], dict[str, dict[str, dict[str, float]]]]:
    """Figures per test set from the product's own runs, the command used for each (as
    ``shown``), and per option run of ``OPTION_RUNS`` its figures per test set, with paired gains."""
    results: dict[str, dict[str, float]] = {}
    commands: dict[str, str] = {}
    options: dict[str, dict[str, dict[str, float]]] = {name: {} for name in OPTION_RUNS}
    for test_set in accuracy_sets(data, limit):
        key = f"{test_set.name} test"
        extra = ["--gt", str(test_set.truth_dir)]
        if test_set.fov_dir is not None:
            extra += ["--fov", str(test_set.fov_dir)]
        runs: dict[str, dict[str, dict[str, float]]] = {}
        for name, words in {"": [], **OPTION_RUNS}.items():
            out = scratch / "accuracy" / (test_set.name + name)
            shutil.rmtree(out, ignore_errors=True)
            run = run_once(segment_command(test_set.images, out, model, extra + words), cwd=cwd)
            rows = per_image(out / "results.csv")
            if test_set.whole_image:
                for image, value in whole_image_ious(out / "masks", test_set.truth_dir, test_set.images).items():
                    rows[image]["iou_whole_image"] = value  # results.csv names a file given alone by its name
            runs[name] = rows
            figures = summarise(rows) | {"seconds": run.wall_s}
            if name:
                options[name][key] = figures | paired_gain(runs[""], rows)
            else:
                results[key] = figures
            shutil.rmtree(out, ignore_errors=True)
        commands[key] = _short_command(test_set, model, extra, shown)
    return results, commands, options


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
