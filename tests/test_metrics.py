"""The shared metrics: hand-computed cases, the empty-case conventions, AUC and best-F1 vs brute force."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vesselcli.analysis import metrics
from vesselcli.analysis.metrics import Counts

# A 3x4 case counted by hand: tp at (0,0),(0,1),(1,1); fp at (0,2); fn at (1,0),(2,3); the rest tn.
PRED = np.array([[1, 1, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)
TRUTH = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1]], dtype=bool)


def test_confusion_counts_a_hand_made_case() -> None:
    assert metrics.confusion(PRED, TRUTH) == Counts(tp=3, fp=1, fn=2, tn=6)


def test_figures_of_the_hand_made_case() -> None:
    c = metrics.confusion(PRED, TRUTH)
    assert metrics.iou(c) == pytest.approx(3 / 6)
    assert metrics.dice(c) == pytest.approx(6 / 9)
    assert metrics.sensitivity(c) == pytest.approx(3 / 5)
    assert metrics.specificity(c) == pytest.approx(6 / 7)
    assert metrics.accuracy(c) == pytest.approx(9 / 12)
    assert metrics.precision(c) == pytest.approx(3 / 4)
    # (3*6 - 1*2) / sqrt(4 * 5 * 7 * 8)
    assert metrics.mcc(c) == pytest.approx(16 / math.sqrt(1120))


def test_summary_uses_the_csv_column_names_and_plain_floats() -> None:
    figures = metrics.summary(metrics.confusion(PRED, TRUTH))
    assert list(figures) == ["iou", "dice", "sensitivity", "specificity", "accuracy", "mcc"]
    assert all(type(v) is float for v in figures.values())


def test_dice_is_f1_of_precision_and_recall() -> None:
    c = Counts(tp=17, fp=5, fn=9, tn=100)
    p, r = metrics.precision(c), metrics.sensitivity(c)
    assert metrics.dice(c) == pytest.approx(2 * p * r / (p + r))
    assert metrics.iou(c) == pytest.approx(metrics.dice(c) / (2 - metrics.dice(c)))


def test_empty_prediction() -> None:
    c = metrics.confusion(np.zeros((4, 4), bool), np.eye(4, dtype=bool))
    assert c == Counts(tp=0, fp=0, fn=4, tn=12)
    assert metrics.iou(c) == 0.0 and metrics.dice(c) == 0.0 and metrics.sensitivity(c) == 0.0
    assert metrics.specificity(c) == 1.0
    assert metrics.precision(c) == 1.0  # nothing predicted, nothing wrongly predicted
    assert metrics.mcc(c) == 0.0
    assert metrics.accuracy(c) == pytest.approx(12 / 16)


def test_empty_truth() -> None:
    c = metrics.confusion(np.eye(4, dtype=bool), np.zeros((4, 4), bool))
    assert c == Counts(tp=0, fp=4, fn=0, tn=12)
    assert metrics.iou(c) == 0.0 and metrics.dice(c) == 0.0
    assert metrics.sensitivity(c) == 1.0  # no vessel to miss
    assert metrics.specificity(c) == pytest.approx(12 / 16)
    assert metrics.mcc(c) == 0.0


def test_both_empty_is_full_agreement() -> None:
    c = metrics.confusion(np.zeros((3, 5), bool), np.zeros((3, 5), bool))
    assert c == Counts(0, 0, 0, 15)
    assert metrics.summary(c) == {"iou": 1.0, "dice": 1.0, "sensitivity": 1.0, "specificity": 1.0, "accuracy": 1.0, "mcc": 0.0}


def test_all_vessel() -> None:
    ones = np.ones((3, 5), bool)
    c = metrics.confusion(ones, ones)
    assert c == Counts(15, 0, 0, 0)
    assert metrics.iou(c) == metrics.dice(c) == metrics.sensitivity(c) == metrics.accuracy(c) == 1.0
    assert metrics.specificity(c) == 1.0  # no background to get wrong
    # Everything predicted on a half-vessel truth: sensitivity 1, specificity 0.
    half = np.zeros((3, 5), bool)
    half[:, :2] = True
    c = metrics.confusion(ones, half)
    assert (metrics.sensitivity(c), metrics.specificity(c)) == (1.0, 0.0)
    assert metrics.dice(c) == pytest.approx(12 / 21)  # tp 6, fp 9


def test_fov_restricts_every_count() -> None:
    fov = np.zeros_like(PRED)
    fov[:2] = True  # the last row (with the fn at (2,3)) is outside
    c = metrics.confusion(PRED, TRUTH, fov)
    assert c == Counts(tp=3, fp=1, fn=1, tn=3)
    assert c.total == int(fov.sum())
    # Anything outside the FOV, however wrong, changes nothing.
    wild = PRED.copy()
    wild[2] = True
    assert metrics.confusion(wild, TRUTH, fov) == c
    assert metrics.confusion(PRED, TRUTH, np.ones_like(PRED)) == metrics.confusion(PRED, TRUTH)


def test_empty_fov_counts_nothing() -> None:
    c = metrics.confusion(PRED, TRUTH, np.zeros_like(PRED))
    assert c == Counts(0, 0, 0, 0)
    assert metrics.accuracy(c) == 1.0


def test_shape_mismatches_name_both_sizes() -> None:
    with pytest.raises(ValueError, match="4x3.*5x3"):
        metrics.confusion(PRED, np.zeros((3, 5), bool))
    with pytest.raises(ValueError, match="2x2.*4x3"):
        metrics.confusion(PRED, TRUTH, np.ones((2, 2), bool))


def test_counts_add() -> None:
    assert Counts(1, 2, 3, 4) + Counts(10, 20, 30, 40) == Counts(11, 22, 33, 44)
    assert Counts(1, 2, 3, 4).total == 10


# --- ROC AUC ----------------------------------------------------------------------------


def brute_force_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """P(score of a vessel pixel > score of a background pixel) + half the ties, over all pairs."""
    pos, neg = scores[truth], scores[~truth]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_of_a_hand_made_case() -> None:
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    truth = np.array([False, False, True, True])
    # Positive 0.35 beats 0.1 but not 0.4; 0.8 beats both: 3 of 4 pairs.
    assert metrics.roc_auc(scores, truth) == pytest.approx(0.75)
    assert metrics.roc_auc(-scores, truth) == pytest.approx(0.25)
    assert metrics.roc_auc(np.full(4, 0.5), truth) == pytest.approx(0.5)  # all tied


@settings(max_examples=60, deadline=None)
@given(
    scores=arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 7)), elements=st.integers(0, 5)),
    data=st.data(),
)
def test_auc_matches_brute_force_with_ties(scores: np.ndarray, data: st.DataObject) -> None:
    # Scores drawn from 6 levels: ties are the rule, not the exception.
    truth = data.draw(arrays(bool, scores.shape))
    if truth.all() or not truth.any():
        assert math.isnan(metrics.roc_auc(scores, truth))
        return
    assert metrics.roc_auc(scores, truth) == pytest.approx(brute_force_auc(scores.ravel(), truth.ravel()), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_brute_force_inside_a_fov(seed: int) -> None:
    rng = np.random.default_rng(seed)
    prob = rng.random((9, 11)).round(2)
    truth = rng.random((9, 11)) < 0.3
    fov = rng.random((9, 11)) < 0.7
    expected = brute_force_auc(prob[fov], truth[fov])
    assert metrics.roc_auc(prob, truth, fov) == pytest.approx(expected, abs=1e-12)
    # Scores outside the FOV do not matter.
    assert metrics.roc_auc(np.where(fov, prob, 99.0), truth, fov) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("dtype, top", [(np.uint8, 255), (np.uint16, 65535)])
def test_auc_of_integer_maps_equals_auc_of_their_probabilities(dtype: type, top: int) -> None:
    # Integers take the histogram path, floats the rank path: the same figure either way.
    rng = np.random.default_rng(3)
    truth = rng.random((40, 30)) < 0.2
    grey = np.clip(truth * top * 0.3 + rng.random((40, 30)) * top * 0.7, 0, top).astype(dtype)
    grey[:5] = grey[0, 0]  # plenty of ties
    fov = rng.random((40, 30)) < 0.9
    assert metrics.roc_auc(grey, truth, fov) == pytest.approx(metrics.roc_auc(grey / top, truth, fov), abs=1e-12)
    assert metrics.roc_auc(grey, truth, fov) == pytest.approx(brute_force_auc(grey[fov], truth[fov]), abs=1e-12)


def test_auc_is_nan_when_truth_is_one_class() -> None:
    assert math.isnan(metrics.roc_auc(np.random.default_rng(0).random((4, 4)), np.zeros((4, 4), bool)))
    assert math.isnan(metrics.roc_auc(np.random.default_rng(0).random((4, 4)), np.ones((4, 4), bool)))


# --- best-threshold F1 ------------------------------------------------------------------


def brute_force_best_f1(prob: np.ndarray, truth: np.ndarray, levels: int = 256) -> tuple[float, float]:
    """Try every threshold k/(levels-1) with ``prob >= t``; keep the first best."""
    best = (-1.0, -1.0)
    for k in range(levels):
        t = k / (levels - 1)
        f1 = metrics.dice(metrics.confusion(prob >= t, truth))
        if f1 > best[1]:
            best = (t, f1)
    return best


@settings(max_examples=40, deadline=None)
@given(
    grid=arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 6))),
    data=st.data(),
)
def test_best_f1_matches_brute_force_on_8_bit_maps(grid: np.ndarray, data: st.DataObject) -> None:
    prob = grid / 255.0  # what score reads from an 8-bit probability map
    truth = data.draw(arrays(bool, grid.shape))
    threshold, f1 = metrics.best_threshold_f1(prob, truth)
    assert (threshold, f1) == pytest.approx(brute_force_best_f1(prob, truth), abs=1e-12)
    # The promise: scoring at the returned threshold gives the returned F1.
    assert metrics.dice(metrics.confusion(prob >= threshold, truth)) == pytest.approx(f1, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_best_f1_matches_brute_force_off_the_grid_and_inside_a_fov(seed: int) -> None:
    # Continuous probabilities (a 16-bit map, a float model output) fall between thresholds.
    rng = np.random.default_rng(seed)
    truth = rng.random((12, 10)) < 0.25
    prob = np.clip(truth * 0.3 + rng.random((12, 10)) * 0.7, 0, 1)
    fov = rng.random((12, 10)) < 0.8
    threshold, f1 = metrics.best_threshold_f1(prob, truth, fov)
    assert (threshold, f1) == pytest.approx(brute_force_best_f1(prob[fov], truth[fov]), abs=1e-12)
    assert metrics.dice(metrics.confusion(prob >= threshold, truth, fov)) == pytest.approx(f1, abs=1e-12)


def test_best_f1_edge_cases() -> None:
    truth = np.array([[True, False], [False, False]])
    # Perfectly separable: F1 1.0 at the lowest threshold that drops the background (0.2 = 51/255
    # is still a vessel at 51/255: ``>=``).
    assert metrics.best_threshold_f1(np.array([[0.9, 0.2], [0.2, 0.0]]), truth) == (52 / 255, 1.0)
    # No vessel anywhere: the highest threshold still calls prob 1.0 a vessel, lower ones more;
    # an all-zero map at threshold > 0 predicts nothing, which agrees with an empty truth.
    none = np.zeros((2, 2), bool)
    assert metrics.best_threshold_f1(np.zeros((2, 2)), none) == (1 / 255, 1.0)
    # Everything a vessel: threshold 0 calls everything a vessel.
    assert metrics.best_threshold_f1(np.full((2, 2), 0.3), np.ones((2, 2), bool)) == (0.0, 1.0)


def test_merged_16_bit_histograms_are_the_8_bit_ones() -> None:
    rng = np.random.default_rng(3)
    # Random floats, and every k / 255 exactly: the values where a rounding slip would show.
    prob = np.concatenate([rng.random(5000), np.arange(256) / 255, np.nextafter(np.arange(1, 256) / 255, 0)])
    truth = rng.random(prob.size) < 0.3
    fine = metrics.level_histograms(prob, truth, levels=metrics.AUC_LEVELS)
    coarse = metrics.level_histograms(prob, truth, levels=256)
    for f, c in zip(fine, coarse):
        assert np.array_equal(metrics.merge_levels(f, 256), c)
    assert metrics.histogram_auc(*fine) == pytest.approx(metrics.roc_auc(prob, truth), abs=1e-4)
    with pytest.raises(ValueError, match="not a multiple"):
        metrics.merge_levels(fine[0], 100)
