"""Segmentation metrics as pure functions over confusion counts.

One module shared by ``segment``, ``score`` and training, so every figure the project
publishes is computed the same way. ``confusion`` counts pixels (inside a FOV when given);
the metric functions take the counts. Conventions for empty cases are fixed here and
documented in the README: a ratio whose denominator is zero is 1.0 when its numerator is also
zero by agreement (both prediction and truth empty), else 0.0; MCC with a zero denominator is 0.
"""
from __future__ import annotations

from dataclasses import astuple, dataclass

import numpy as np


@dataclass(frozen=True)
class Counts:
    """Pixel confusion counts: true/false positives/negatives."""

    tp: int
    fp: int
    fn: int
    tn: int

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(*(a + b for a, b in zip(astuple(self), astuple(other))))

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.fn + self.tn


def confusion(pred: np.ndarray, truth: np.ndarray, fov: np.ndarray | None = None) -> Counts:
    """Counts for ``(H, W) bool`` prediction and truth, inside ``fov`` when given."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction is {pred.shape[1]}x{pred.shape[0]} but truth is {truth.shape[1]}x{truth.shape[0]}")
    pred = pred.astype(bool)
    truth = truth.astype(bool)
    if fov is not None:
        if fov.shape != pred.shape:
            raise ValueError(f"FOV is {fov.shape[1]}x{fov.shape[0]} but prediction is {pred.shape[1]}x{pred.shape[0]}")
        fov = fov.astype(bool)
        pred = pred[fov]
        truth = truth[fov]
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(~pred & truth))
    tn = int(pred.size - tp - fp - fn)
    return Counts(tp, fp, fn, tn)


def _ratio(num: float, den: float) -> float:
    if den == 0:
        return 1.0 if num == 0 else 0.0
    return float(num) / float(den)


def iou(c: Counts) -> float:
    """tp / (tp + fp + fn); 1.0 when prediction and truth are both empty."""
    return _ratio(c.tp, c.tp + c.fp + c.fn)


def dice(c: Counts) -> float:
    """2 tp / (2 tp + fp + fn), the F1 score; 1.0 when both are empty."""
    return _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn)


def sensitivity(c: Counts) -> float:
    """tp / (tp + fn), recall; 1.0 when the truth has no vessel."""
    return _ratio(c.tp, c.tp + c.fn)


def specificity(c: Counts) -> float:
    """tn / (tn + fp); 1.0 when everything is vessel in truth."""
    return _ratio(c.tn, c.tn + c.fp)


def accuracy(c: Counts) -> float:
    """(tp + tn) / all; 1.0 for an empty FOV."""
    return _ratio(c.tp + c.tn, c.total)


def precision(c: Counts) -> float:
    """tp / (tp + fp); 1.0 when nothing is predicted."""
    return _ratio(c.tp, c.tp + c.fp)


def mcc(c: Counts) -> float:
    """Matthews correlation coefficient; 0.0 when any marginal is empty."""
    den = float(c.tp + c.fp) * float(c.tp + c.fn) * float(c.tn + c.fp) * float(c.tn + c.fn)
    if den == 0:
        return 0.0
    return float((float(c.tp) * c.tn - float(c.fp) * c.fn) / np.sqrt(den))


def _inside(prob: np.ndarray, truth: np.ndarray, fov: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Flattened scores and truth, restricted to the FOV when one is given."""
    if fov is not None:
        inside = fov.astype(bool)
        return prob[inside], truth[inside]
    return prob.ravel(), truth.ravel()


#: Float maps with more scored pixels than this get their AUC from 65,536 bins (see ``roc_auc``).
EXACT_AUC_LIMIT = 1 << 22
AUC_BINS = 65536
_BLOCK = 1 << 18  # pixels binned at a time: temporaries stay a few MiB whatever the map's size


def roc_auc(prob: np.ndarray, truth: np.ndarray, fov: np.ndarray | None = None) -> float:
    """Area under the ROC curve of scores against truth (ties counted half).

    ``prob``: ``(H, W)`` float or integer scores (only their order matters, so an 8- or 16-bit
    map can be given as read); NaN when the truth is all one class. From the Mann-Whitney U
    statistic:

    - unsigned integers up to 16 bits: exactly, by histograms (linear time, little memory);
    - floats with up to ``EXACT_AUC_LIMIT`` (4,194,304) scored pixels (a 5-megapixel
      photograph's FOV): exactly, by average ranks;
    - larger float maps: by histograms of ``AUC_BINS`` equal bins over [0, 1] (over the map's
      own range when it leaves [0, 1]), a block of rows at a time, so a 64-megapixel map needs
      a few MiB instead of gigabytes for sorting. Scores in one bin count as ties, so the
      result is within ``auc_bin_error`` of the exact one: the positive-negative pairs that
      share a bin, counted half, over all pairs, which is at most half the largest share of
      one class in one bin. On the shipped model's map of a 64-megapixel photograph (HRF
      01_h scaled 2.8x, ``python -m bench.large_inputs``) the bound is 8.1e-5 and the
      difference from the exact AUC 3.1e-7.
    """
    prob = np.asarray(prob)
    truth = np.asarray(truth, dtype=bool)
    if np.issubdtype(prob.dtype, np.floating) and _scored(prob, fov) > EXACT_AUC_LIMIT:
        pos_hist, neg_hist = _binned(prob, truth, fov)
        return histogram_auc(pos_hist, neg_hist)
    prob, truth = _inside(prob, truth, fov)
    pos = int(truth.sum())
    neg = truth.size - pos
    if pos == 0 or neg == 0:
        return float("nan")
    if prob.dtype in (np.uint8, np.uint16):
        pos_hist = np.bincount(prob[truth], minlength=65536).astype(np.int64)
        neg_hist = np.bincount(prob[~truth], minlength=65536).astype(np.int64)
        return histogram_auc(pos_hist, neg_hist)
    return _auc_by_ranks(prob, truth)


def _scored(prob: np.ndarray, fov: np.ndarray | None) -> int:
    return prob.size if fov is None else int(np.count_nonzero(fov))


def _binned(prob: np.ndarray, truth: np.ndarray, fov: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(positives, negatives) per bin of ``AUC_BINS`` equal bins, block by block over the rows."""
    flat_prob = prob.reshape(-1)
    flat_truth = truth.reshape(-1)
    flat_fov = None if fov is None else np.asarray(fov, dtype=bool).reshape(-1)
    low, high = float(np.min(prob)), float(np.max(prob))
    if low >= 0.0 and high <= 1.0:
        low, high = 0.0, 1.0  # probabilities: fixed bins k / 65535
    scale = (AUC_BINS - 1) / (high - low) if high > low else 0.0
    pos_hist = np.zeros(AUC_BINS, np.int64)
    all_hist = np.zeros(AUC_BINS, np.int64)
    for start in range(0, flat_prob.size, _BLOCK):
        block = slice(start, start + _BLOCK)
        values, labels = flat_prob[block], flat_truth[block]
        if flat_fov is not None:
            inside = flat_fov[block]
            values, labels = values[inside], labels[inside]
        bins = np.clip((values.astype(np.float64) - low) * scale + 0.5, 0, AUC_BINS - 1).astype(np.int64)
        pos_hist += np.bincount(bins[labels], minlength=AUC_BINS)
        all_hist += np.bincount(bins, minlength=AUC_BINS)
    return pos_hist, all_hist - pos_hist


def auc_bin_error(prob: np.ndarray, truth: np.ndarray, fov: np.ndarray | None = None) -> float:
    """The most the binned AUC of a float map can differ from the exact one: positive-negative
    pairs sharing a bin, counted half, over all pairs (``sum pos_b x neg_b / (2 P N)``)."""
    pos_hist, neg_hist = _binned(np.asarray(prob), np.asarray(truth, dtype=bool), fov)
    pos, neg = int(pos_hist.sum()), int(neg_hist.sum())
    if pos == 0 or neg == 0:
        return 0.0
    return float(int((pos_hist * neg_hist).sum()) / (2.0 * pos * neg))


def _auc_by_ranks(prob: np.ndarray, truth: np.ndarray) -> float:
    """Exact AUC of flat scores by average ranks (sorts: about 56 bytes a pixel at its peak)."""
    pos = int(truth.sum())
    neg = truth.size - pos
    order = np.argsort(prob, kind="mergesort")
    sorted_scores = prob[order]
    # Average ranks for ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    ranks_sorted = np.repeat(first + (counts + 1) / 2.0, counts)
    rank_sum = ranks_sorted[truth[order]].sum()
    u = rank_sum - pos * (pos + 1) / 2.0
    return float(u / (pos * float(neg)))


THRESHOLD_LEVELS = 256  # thresholds k / 255: an 8-bit map's levels, shared by score and training
AUC_LEVELS = 65536  # thresholds j / 65535 (a 16-bit map's levels; holds every k / 255 exactly)


def level_threshold(level: int, levels: int = THRESHOLD_LEVELS) -> float:
    """The threshold of level ``level``: ``level / (levels - 1)``, a float in [0, 1]."""
    return level / (levels - 1)


def level_histograms(
    prob: np.ndarray, truth: np.ndarray, fov: np.ndarray | None = None, levels: int = THRESHOLD_LEVELS
) -> tuple[np.ndarray, np.ndarray]:
    """Vessel and background pixel counts per threshold level: two ``(levels,) int64`` arrays.

    ``prob``: ``(H, W)`` float probabilities in [0, 1] (values below 0 count as 0); ``truth``
    ``(H, W)`` bool; only pixels inside ``fov`` when given. A pixel lands in level ``k``, the
    highest with ``level_threshold(k) <= prob``: the same float comparison as ``prob >=
    threshold``, so a pixel counted positive at a level is a vessel when that level's threshold
    is applied (rounding ``prob * 255`` would put some pixels half a level too high).
    Histograms of several images (or ranks) add up to the histogram of all their pixels.
    """
    prob = np.asarray(prob, dtype=np.float64)
    truth = np.asarray(truth, dtype=bool)
    prob, truth = _inside(prob, truth, fov)
    thresholds = np.arange(levels) / (levels - 1)
    bins = np.clip(np.searchsorted(thresholds, prob, side="right") - 1, 0, levels - 1)
    pos_hist = np.bincount(bins[truth], minlength=levels).astype(np.int64)
    neg_hist = np.bincount(bins[~truth], minlength=levels).astype(np.int64)
    return pos_hist, neg_hist


def merge_levels(hist: np.ndarray, levels: int) -> np.ndarray:
    """A ``level_histograms`` histogram re-binned to ``levels`` coarser levels, exactly.

    Needs ``len(hist) - 1`` to be a multiple of ``levels - 1`` (65535 = 257 x 255): coarse
    level ``k`` is then fine levels ``k * f`` to ``(k + 1) * f - 1``, and its threshold
    ``k / (levels - 1)`` is the very float ``k * f / (len(hist) - 1)``, so the merged counts are
    those ``level_histograms(..., levels)`` would give.
    """
    hist = np.asarray(hist)
    factor, rest = divmod(len(hist) - 1, levels - 1)
    if rest or factor < 1:
        raise ValueError(f"cannot merge {len(hist)} levels into {levels}: {len(hist) - 1} is not a multiple of {levels - 1}")
    merged = hist[: (levels - 1) * factor].reshape(levels - 1, factor).sum(axis=1)
    return np.concatenate([merged, hist[(levels - 1) * factor :].sum(keepdims=True)])


def counts_at_level(pos_hist: np.ndarray, neg_hist: np.ndarray, level: int) -> Counts:
    """Confusion counts when the pixels of levels ``>= level`` are called vessel."""
    tp, fp = int(pos_hist[level:].sum()), int(neg_hist[level:].sum())
    return Counts(tp=tp, fp=fp, fn=int(pos_hist.sum()) - tp, tn=int(neg_hist.sum()) - fp)


def best_level_f1(pos_hist: np.ndarray, neg_hist: np.ndarray) -> tuple[int, float]:
    """(level, F1) maximising F1 over the levels of ``level_histograms``; lowest level on ties.

    F1 is 1.0 when prediction and truth are both empty (the ``dice`` convention).
    """
    pos_hist = np.asarray(pos_hist, dtype=np.int64)
    neg_hist = np.asarray(neg_hist, dtype=np.int64)
    # Predicted positive at level k: all levels >= k.
    tp = np.cumsum(pos_hist[::-1])[::-1]
    pred = np.cumsum((pos_hist + neg_hist)[::-1])[::-1]
    total_pos = int(pos_hist.sum())
    f1 = np.where(pred + total_pos > 0, 2 * tp / np.maximum(pred + total_pos, 1), 1.0)
    k = int(np.argmax(f1))
    return k, float(f1[k])


def histogram_auc(pos_hist: np.ndarray, neg_hist: np.ndarray) -> float:
    """ROC AUC of scores given as histograms over ordered levels (ties within a level count half).

    Exact for integer maps (one level per grey value); for float maps binned by
    ``level_histograms`` it is the AUC of the map quantised to those levels. NaN when either
    class is empty.
    """
    pos_hist = np.asarray(pos_hist, dtype=np.int64)
    neg_hist = np.asarray(neg_hist, dtype=np.int64)
    pos, neg = int(pos_hist.sum()), int(neg_hist.sum())
    if pos == 0 or neg == 0:
        return float("nan")
    neg_below = np.cumsum(neg_hist) - neg_hist
    # 2U in integers (exact): each positive beats the negatives below it, ties count half.
    return float(int((pos_hist * (2 * neg_below + neg_hist)).sum()) / (2.0 * pos * neg))


def best_threshold_f1(prob: np.ndarray, truth: np.ndarray, fov: np.ndarray | None = None, levels: int = THRESHOLD_LEVELS) -> tuple[float, float]:
    """(threshold, F1) maximising F1 over the ``levels`` thresholds ``k / (levels - 1)``.

    ``prob``: ``(H, W)`` float probabilities in [0, 1] (values below 0 count as 0). A pixel is
    positive when ``prob >= threshold``, exactly: an 8-bit map ``v / 255`` scored at the
    threshold returned gives the F1 returned. Among equal F1s the lowest threshold wins. F1 is
    1.0 when prediction and truth are both empty (the ``dice`` convention).
    """
    level, f1 = best_level_f1(*level_histograms(prob, truth, fov, levels))
    return level_threshold(level, levels), f1


def summary(c: Counts) -> dict[str, float]:
    """All count-based metrics, keyed by the CSV column names."""
    return {
        "iou": iou(c),
        "dice": dice(c),
        "sensitivity": sensitivity(c),
        "specificity": specificity(c),
        "accuracy": accuracy(c),
        "mcc": mcc(c),
    }


#: Resamples of the images in ``bootstrap_interval``: the project's protocol for every test figure.
BOOTSTRAP_DRAWS = 2000


def bootstrap_interval(values, draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean over images: ``draws`` resamples of the
    images with replacement (seeded, so a rerun prints the same interval). For a paired
    comparison of two runs on the same images, pass the per-image differences."""
    v = np.asarray(values, dtype=np.float64)
    picks = np.random.default_rng(seed).integers(0, v.size, size=(draws, v.size))
    means = v[picks].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))
