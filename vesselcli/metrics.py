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


def roc_auc(prob: np.ndarray, truth: np.ndarray, fov: np.ndarray | None = None) -> float:
    """Area under the ROC curve of scores against truth (ties counted half).

    ``prob``: ``(H, W)`` float or integer scores (only their order matters, so an 8- or 16-bit
    map can be given as read); NaN when the truth is all one class. Computed exactly from the
    Mann-Whitney U statistic: by histograms for unsigned integers up to 16 bits (linear time,
    little memory: an 8-megapixel map in a fraction of a second), else by average ranks.
    """
    prob = np.asarray(prob)
    truth = np.asarray(truth, dtype=bool)
    prob, truth = _inside(prob, truth, fov)
    pos = int(truth.sum())
    neg = truth.size - pos
    if pos == 0 or neg == 0:
        return float("nan")
    if prob.dtype in (np.uint8, np.uint16):
        pos_hist = np.bincount(prob[truth], minlength=65536).astype(np.int64)
        neg_hist = np.bincount(prob[~truth], minlength=65536).astype(np.int64)
        neg_below = np.cumsum(neg_hist) - neg_hist
        # 2U in integers (exact): each positive beats the negatives below it, ties count half.
        return float(int((pos_hist * (2 * neg_below + neg_hist)).sum()) / (2.0 * pos * neg))
    order = np.argsort(prob, kind="mergesort")
    sorted_scores = prob[order]
    # Average ranks for ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    ranks_sorted = np.repeat(first + (counts + 1) / 2.0, counts)
    rank_sum = ranks_sorted[truth[order]].sum()
    u = rank_sum - pos * (pos + 1) / 2.0
    return float(u / (pos * float(neg)))


def best_threshold_f1(prob: np.ndarray, truth: np.ndarray, fov: np.ndarray | None = None, levels: int = 256) -> tuple[float, float]:
    """(threshold, F1) maximising F1 over the ``levels`` thresholds ``k / (levels - 1)``.

    ``prob``: ``(H, W)`` float probabilities in [0, 1] (values below 0 count as 0). A pixel is
    positive when ``prob >= threshold``, exactly: an 8-bit map ``v / 255`` scored at the
    threshold returned gives the F1 returned. Among equal F1s the lowest threshold wins. F1 is
    1.0 when prediction and truth are both empty (the ``dice`` convention).
    """
    prob = np.asarray(prob, dtype=np.float64)
    truth = np.asarray(truth, dtype=bool)
    prob, truth = _inside(prob, truth, fov)
    # bins[i] = the highest k with thresholds[k] <= prob[i]: the same float comparison as
    # ``prob >= threshold``, so no pixel lands half a bin off (rounding would).
    thresholds = np.arange(levels) / (levels - 1)
    bins = np.clip(np.searchsorted(thresholds, prob, side="right") - 1, 0, levels - 1)
    pos_hist = np.bincount(bins[truth], minlength=levels)
    all_hist = np.bincount(bins, minlength=levels)
    # Predicted positive at threshold level k: all bins >= k.
    tp = np.cumsum(pos_hist[::-1])[::-1]
    pred = np.cumsum(all_hist[::-1])[::-1]
    total_pos = truth.sum()
    f1 = np.where(pred + total_pos > 0, 2 * tp / np.maximum(pred + total_pos, 1), 1.0)
    k = int(np.argmax(f1))
    return k / (levels - 1), float(f1[k])


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
