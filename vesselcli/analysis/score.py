"""Scoring predicted masks against annotations: pair the files, load them, count, summarise.

The core of ``vesselseg score`` (the click layer is ``vesselcli.cli.score``):

1. ``pair_folders`` pairs every prediction with its annotation (and FOV mask) by the one rule
   of ``vesselcli.io.pairing``; what stays unpaired is listed, an ambiguous pairing is an error
   row, and nothing paired at all raises ``NothingPaired`` (a usage error).
2. ``score_pair`` reads one pair and ``score_arrays`` computes its figures inside the FOV
   (the whole image without one) with ``vesselcli.analysis.metrics``.
3. ``summarise`` gives the mean over scored pairs and the pooled figures (from summed counts).

Predictions are binary masks or probability maps, told apart by the values present
(``prediction_kind``): at most two distinct grey levels is a binary mask, read like an
annotation (``imageio.binarise``: ``> 0`` when the top value is 1, else above half range);
three or more is a probability map ``v / 255`` (8-bit) or ``v / 65535`` (16-bit), a vessel
where ``probability >= threshold``, and it also gets ROC AUC and the best-threshold F1.
Nothing is ever resized: two sizes that differ are an error row naming both.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from . import metrics
from .morphology import mean_width, width_against
from ..io.imageio import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, ImageReadError, binarise, read_grey, read_mask
from ..io.pairing import pair_files, pairing_key, stem_of

#: Count-based figures, in CSV order (names shared with ``segment``'s results.csv).
COUNT_METRICS = ("iou", "dice", "sensitivity", "specificity", "accuracy", "mcc")
#: Figures that only probability maps have.
PROBABILITY_METRICS = ("auc", "best_f1", "best_threshold")
#: Vessel calibre inside the FOV: the mask's mean width (segment's ``mean_width_px``), the
#: annotation's, and mask / annotation (1.0: as wide as drawn; above: thicker).
WIDTH_METRICS = ("mean_width_px", "gt_mean_width_px", "width_ratio")
#: One CSV row per pair, in this order.
COLUMNS = (
    "image", "annotation", "width", "height", "prediction", "fov_pixels", "tp", "fp", "fn", "tn",
    *COUNT_METRICS, *PROBABILITY_METRICS, *WIDTH_METRICS, "status", "error",
)


class NothingPaired(ValueError):
    """No prediction could be paired with an annotation; the message says what was found."""


@dataclass(frozen=True)
class ScoreConfig:
    """What to score: folders (or single files) and how to read them."""

    pred: Path
    gt: Path
    fov: Path | None = None
    threshold: float = 0.5
    pattern: str | None = None  # names a prediction's annotation, e.g. "{stem}_seg"
    fov_pattern: str | None = None  # names a prediction's FOV mask, e.g. "{stem}_mask"
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class Pair:
    """One prediction with its annotation and FOV; ``error`` set when pairing failed."""

    pred: Path
    gt: Path | None
    fov: Path | None = None
    error: str | None = None


@dataclass(frozen=True)
class Pairing:
    pairs: tuple[Pair, ...]
    unpaired_pred: tuple[Path, ...]  # predictions with no annotation
    unpaired_gt: tuple[Path, ...]  # annotations with no prediction


@dataclass(frozen=True)
class PairResult:
    """Figures of one pair; ``figures`` holds COUNT_METRICS (+ PROBABILITY_METRICS)."""

    image: str
    annotation: str
    width: int | None = None
    height: int | None = None
    prediction: str | None = None  # "binary" or "probability"
    counts: metrics.Counts | None = None
    figures: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def status(self) -> str:
        return "error" if self.error else "ok"


def list_images(path: Path) -> list[Path]:
    """Image files directly inside folder ``path`` (hidden files skipped), or ``[path]`` for a file."""
    if path.is_file():
        return [path]
    return sorted(
        p for p in path.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _names(paths: Iterable[Path], limit: int = 3) -> str:
    paths = list(paths)
    shown = ", ".join(p.name for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _no_images(role: str, folder: Path) -> NothingPaired:
    subfolders = sorted(p.name + "/" for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    hint = f"; it has subfolders ({', '.join(subfolders[:5])}): point {role} at the one holding the images" if subfolders else ""
    exts = ", ".join(sorted(IMAGE_EXTENSIONS))
    return NothingPaired(f"{role} folder {folder} holds no images ({exts}; subfolders are not searched){hint}")


def _nothing_paired(config: ScoreConfig, preds: list[Path], gts: list[Path]) -> str:
    found = f"none of the {len(preds)} predictions in {config.pred} pairs with one of the {len(gts)} annotations in {config.gt}"
    if config.pattern:
        wanted = config.pattern.format(stem=stem_of(preds[0]))
        return (f"{found}: with --pattern '{config.pattern}', '{preds[0].name}' looks for an annotation named "
                f"'{wanted}' (any extension) and the annotations are named like '{gts[0].name}'")
    return (
        f"{found}: '{preds[0].name}' has the pairing key '{pairing_key(preds[0])}', '{gts[0].name}' has "
        f"'{pairing_key(gts[0])}'. Files pair when their keys match (the name without extension, annotation "
        "suffix such as _manual1, _1stHO, .ah, _mask, and split suffix such as _test); otherwise name each "
        "prediction's annotation with --pattern, e.g. --pattern '{stem}_seg'"
    )


def pair_folders(config: ScoreConfig) -> Pairing:
    """Pair predictions with annotations and FOV masks (see the module docstring)."""
    preds, gts = list_images(config.pred), list_images(config.gt)
    if not preds:
        raise _no_images("PRED", config.pred)
    if not gts:
        raise _no_images("GT", config.gt)
    if config.pred.is_file() and config.gt.is_file():
        gt_of, unpaired_gt, errors = {config.pred: config.gt}, [], {}
    else:
        gt_of, unpaired_gt, errors = pair_files(preds, gts, config.pattern)
    if not gt_of and not errors:
        raise NothingPaired(_nothing_paired(config, preds, gts))
    # Two predictions paired with one annotation would be scored twice: an error, not a guess.
    by_gt: dict[Path, list[Path]] = {}
    for pred, gt in gt_of.items():
        by_gt.setdefault(gt, []).append(pred)
    for gt, group in by_gt.items():
        if len(group) > 1:
            for pred in group:
                errors[pred] = f"{_names(group, len(group))} all pair with {gt.name}; keep one prediction per annotation"
    fov_of, fov_errors = _pair_fov(config, [p for p in gt_of if p not in errors])
    pairs = []
    for pred in preds:
        if pred in gt_of or pred in errors:
            error = errors.get(pred) or fov_errors.get(pred)
            pairs.append(Pair(pred, gt_of.get(pred), fov_of.get(pred), error))
    unpaired_pred = tuple(p for p in preds if p not in gt_of and p not in errors)
    return Pairing(tuple(pairs), unpaired_pred, tuple(unpaired_gt))


def _pair_fov(config: ScoreConfig, preds: list[Path]) -> tuple[dict[Path, Path], dict[Path, str]]:
    """FOV mask of each prediction: one FOV file for all, or paired from a folder."""
    if config.fov is None:
        return {}, {}
    if config.fov.is_file():
        return {p: config.fov for p in preds}, {}
    fovs = list_images(config.fov)
    fov_of, _, errors = pair_files(preds, fovs, config.fov_pattern)
    for pred in preds:
        if pred not in fov_of and pred not in errors:
            errors[pred] = (
                f"no FOV mask in {config.fov} pairs with {pred.name} (pairing key '{pairing_key(pred)}'); "
                "add it, name it with --fov-pattern, or leave --fov out to score the whole image"
            )
    return fov_of, errors


def prediction_kind(grey: np.ndarray) -> str:
    """``"binary"`` when ``(H, W)`` uint8/uint16 ``grey`` has at most two distinct values, else ``"probability"``."""
    flat = grey.ravel()
    first = flat[0] if flat.size else 0
    other = flat[flat != first]
    if other.size == 0 or np.all(other == other[0]):
        return "binary"
    return "probability"


def probability_of(grey: np.ndarray) -> np.ndarray:
    """``(H, W)`` uint8 or uint16 -> ``(H, W)`` float64 in [0, 1] by the dtype's full range."""
    top = 65535.0 if grey.dtype == np.uint16 else 255.0
    return grey.astype(np.float64) / top


def score_arrays(
    pred_grey: np.ndarray, truth: np.ndarray, fov: np.ndarray | None, threshold: float = 0.5
) -> tuple[str, metrics.Counts, dict[str, float]]:
    """(kind, counts, figures) of one prediction against its annotation, inside ``fov``.

    ``pred_grey``: ``(H, W)`` uint8/uint16 as read; ``truth`` and ``fov``: ``(H, W)`` bool of the
    same shape (checked by the caller). ``figures`` has COUNT_METRICS, WIDTH_METRICS (None
    where a mask has no vessel) and, for probability maps, PROBABILITY_METRICS (``auc`` is NaN
    when the truth in the FOV is all one class).
    """
    kind = prediction_kind(pred_grey)
    if kind == "binary":
        mask = binarise(pred_grey)
        prob = None
    else:
        prob = probability_of(pred_grey)
        mask = prob >= threshold
    counts = metrics.confusion(mask, truth, fov)
    figures = {**metrics.summary(counts), **width_figures(mask, truth, fov)}
    if prob is not None:
        figures["auc"] = metrics.roc_auc(pred_grey, truth, fov)  # the integers: same order, faster
        figures["best_threshold"], figures["best_f1"] = metrics.best_threshold_f1(prob, truth, fov)
    return kind, counts, figures


def width_figures(mask: np.ndarray, truth: np.ndarray, fov: np.ndarray | None) -> dict[str, float | None]:
    """WIDTH_METRICS of a ``(H, W) bool`` mask and its annotation inside ``fov`` (None: everywhere)."""
    region = np.ones(mask.shape, bool) if fov is None else fov
    ours = mean_width(mask, region)
    return {"mean_width_px": ours, **width_against(ours, truth, region)}


def _read(reader, role: str, path: Path, config: ScoreConfig) -> np.ndarray:
    try:
        return reader(path, config.max_pixels)
    except ImageReadError as exc:
        raise ImageReadError(f"{role} {path.name}: {exc}") from None


def _size_problem(pair: Pair, shape: tuple[int, ...], truth: np.ndarray, fov: np.ndarray | None) -> str | None:
    """Why the pair cannot be scored as read (sizes differ, empty FOV), or None."""
    others = [("annotation", pair.gt, truth), ("FOV mask", pair.fov, fov)]
    for what, path, array in others:
        if array is not None and path is not None and array.shape != shape:
            return (
                f"prediction {pair.pred.name} is {shape[1]}x{shape[0]} but {what} {path.name} is "
                f"{array.shape[1]}x{array.shape[0]}; score never resizes: write predictions at the annotation's size"
            )
    if fov is not None and pair.fov is not None and not fov.any():
        return f"FOV mask {pair.fov.name} is empty (no pixel inside the field of view); check it or leave --fov out"
    return None


def score_pair(pair: Pair, config: ScoreConfig) -> PairResult:
    """Read and score one pair; any problem becomes an error result, never an exception."""
    image, annotation = pair.pred.name, pair.gt.name if pair.gt else ""
    if pair.error or pair.gt is None:
        return PairResult(image, annotation, error=pair.error or "no annotation paired")
    try:
        grey = _read(read_grey, "prediction", pair.pred, config)
        truth = _read(read_mask, "annotation", pair.gt, config)
        fov = _read(read_mask, "FOV mask", pair.fov, config) if pair.fov else None
    except ImageReadError as exc:
        return PairResult(image, annotation, error=str(exc))
    height, width = grey.shape
    problem = _size_problem(pair, grey.shape, truth, fov)
    if problem:
        return PairResult(image, annotation, width, height, error=problem)
    kind, counts, figures = score_arrays(grey, truth, fov, config.threshold)
    return PairResult(image, annotation, width, height, kind, counts, figures)


def score_all(pairing: Pairing, config: ScoreConfig) -> Iterator[PairResult]:
    """Score the pairs one by one, in order."""
    for pair in pairing.pairs:
        yield score_pair(pair, config)


@dataclass(frozen=True)
class Summary:
    """Means over scored pairs and figures from their pooled (summed) counts."""

    scored: int
    failed: int
    mean: dict[str, float | None]
    pooled: dict[str, float | int]

    @property
    def exit_code(self) -> int:
        """0 when every pair was scored, 1 when some failed."""
        return 1 if self.failed else 0


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else None


def summarise(results: Iterable[PairResult]) -> Summary:
    """Mean of each figure over scored pairs (NaN AUCs left out) and pooled count-based figures."""
    results = list(results)
    ok = [r for r in results if r.error is None and r.counts is not None]
    names = COUNT_METRICS + PROBABILITY_METRICS + WIDTH_METRICS
    mean = {name: _mean([r.figures[name] for r in ok if name in r.figures]) for name in names}
    total = sum((r.counts for r in ok), metrics.Counts(0, 0, 0, 0))
    pooled: dict[str, float | int] = {**metrics.summary(total), **total.__dict__}
    return Summary(len(ok), len(results) - len(ok), mean, pooled)


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


def csv_row(result: PairResult) -> dict[str, str]:
    """One CSV row (keys: COLUMNS); figures a pair does not have are empty cells."""
    counts = result.counts.__dict__ if result.counts else {}
    fov_pixels = result.counts.total if result.counts else None
    values = {
        "image": result.image, "annotation": result.annotation, "width": result.width, "height": result.height,
        "prediction": result.prediction, "fov_pixels": fov_pixels, **counts, **result.figures,
        "status": result.status, "error": " ".join(result.error.split()) if result.error else None,
    }
    return {name: _cell(values.get(name)) for name in COLUMNS}


def _json_value(value: object) -> object:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def as_json(config: ScoreConfig, pairing: Pairing, results: list[PairResult], summary: Summary) -> dict:
    """Machine-readable report: pairs (CSV fields, numbers as numbers, NaN as null), mean, pooled, unpaired."""
    pairs = []
    for r in results:
        row: dict[str, object] = {"image": r.image, "annotation": r.annotation, "width": r.width, "height": r.height,
                                  "prediction": r.prediction, "fov_pixels": r.counts.total if r.counts else None}
        row.update({k: (r.counts.__dict__[k] if r.counts else None) for k in ("tp", "fp", "fn", "tn")})
        row.update({k: _json_value(r.figures.get(k)) for k in COUNT_METRICS + PROBABILITY_METRICS + WIDTH_METRICS})
        row.update({"status": r.status, "error": r.error})
        pairs.append(row)
    return {
        "pred": str(config.pred), "gt": str(config.gt), "fov": str(config.fov) if config.fov else None,
        "threshold": config.threshold, "scored": summary.scored, "failed": summary.failed,
        "mean": summary.mean, "pooled": summary.pooled, "pairs": pairs,
        "unpaired": {"pred": [p.name for p in pairing.unpaired_pred], "gt": [p.name for p in pairing.unpaired_gt]},
    }
