"""Huge photographs and maps: FOV detection at reduced resolution and binned AUC, within stated tolerances.

Memory is checked with ``tracemalloc`` (it sees numpy's and OpenCV's arrays), never time: speed
is measured by ``python -m bench.large_inputs``.
"""
from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest

from segment_fakes import fundus
from vesselcli.analysis import metrics
from vesselcli.imaging.fov import _detect, detect_fov, reduction_factor
from vesselcli.io.imageio import read_image


def _peak_bytes(call) -> tuple[object, int]:  # noqa: ANN001
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _within_edge(reduced: np.ndarray, full: np.ndarray, k: int) -> None:
    """Every pixel the two FOVs disagree on lies within 1.5 ``k`` pixels of the full-resolution edge
    (the stated tolerance; measured at most 4.4 pixels for ``k`` = 4)."""
    edge = full.astype(np.uint8) - cv2.erode(full.astype(np.uint8), np.ones((3, 3), np.uint8))
    distance = cv2.distanceTransform(1 - edge, cv2.DIST_L2, 5)
    disagree = reduced ^ full
    assert float(distance[disagree].max(initial=0)) <= 1.5 * k
    assert (reduced & full).sum() / (reduced | full).sum() > 0.998


def test_a_large_photograph_is_searched_small_with_one_byte_a_pixel_at_full_size() -> None:
    rgb = fundus(1801, 2503, seed=2)  # not a multiple of the factor: the border rows are filled in too
    k = reduction_factor(1801, 2503)
    small = cv2.resize(rgb[: 600 * k, : 834 * k], (834, 600), interpolation=cv2.INTER_AREA)
    _, search = _peak_bytes(lambda: _detect(small))  # what the search at reduced size needs
    fov, peak = _peak_bytes(lambda: detect_fov(rgb))
    assert fov.dtype == bool and fov.shape == (1801, 2503) and k == 3
    assert peak < search + 1.5 * fov.size  # the answer, 1 byte a pixel; float32 work at full size took 5
    _within_edge(fov, _detect(rgb), k)


@pytest.mark.data
@pytest.mark.parametrize("name", ["01_h.jpg", "01_dr.JPG"])
def test_hrf_fov_at_reduced_resolution_stays_within_its_factor_of_full_resolution(hrf_root, name: str) -> None:
    rgb = read_image(hrf_root / "images" / name)
    k = reduction_factor(*rgb.shape[:2])
    assert k == 4
    _within_edge(detect_fov(rgb), _detect(rgb), k)


def _maps(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.random((300, 200)) < 0.15
    # crowded near 0, as a sigmoid's background is: many scores share a bin
    prob = np.clip(truth * 0.5 * rng.random((300, 200)) + rng.random((300, 200)) ** 6, 0, 1).astype(np.float32)
    fov = rng.random((300, 200)) < 0.8
    return prob, truth, fov


@pytest.mark.parametrize("seed", range(4))
def test_the_binned_auc_of_a_large_map_is_within_its_stated_bound(monkeypatch, seed: int) -> None:
    prob, truth, fov = _maps(seed)
    exact = metrics.roc_auc(prob, truth, fov)  # small: ranks
    monkeypatch.setattr(metrics, "EXACT_AUC_LIMIT", 0)  # as if it were a 64-megapixel map
    bound = metrics.auc_bin_error(prob, truth, fov)
    assert 0 < bound < 1e-3
    assert abs(metrics.roc_auc(prob, truth, fov) - exact) <= bound + 1e-12
    logits = np.log(prob + 1e-6) - np.log1p(1e-6 - prob)  # scores outside [0, 1]: bins over their range
    assert abs(metrics.roc_auc(logits, truth, fov) - exact) <= metrics.auc_bin_error(logits, truth, fov) + 1e-12
    assert np.isnan(metrics.roc_auc(prob, np.zeros_like(truth), fov))


def test_binned_auc_is_exact_when_no_bin_holds_both_classes(monkeypatch) -> None:
    prob = (np.arange(6000, dtype=np.float32) / 5999).reshape(60, 100)
    truth = (np.arange(6000) % 7 == 0).reshape(60, 100)
    exact = metrics.roc_auc(prob, truth)
    monkeypatch.setattr(metrics, "EXACT_AUC_LIMIT", 0)
    assert metrics.auc_bin_error(prob, truth) == 0 and metrics.roc_auc(prob, truth) == pytest.approx(exact, abs=1e-12)


def test_auc_of_a_map_above_the_limit_needs_a_few_bytes_a_pixel_not_a_sort() -> None:
    rng = np.random.default_rng(0)
    shape = (2400, 2000)  # 4.8 megapixels, above EXACT_AUC_LIMIT
    prob = rng.random(shape, dtype=np.float32)
    truth = rng.random(shape) < 0.1 + 0.3 * prob
    fov = np.ones(shape, bool)
    fov[:100] = False
    auc, peak = _peak_bytes(lambda: metrics.roc_auc(prob, truth, fov))
    assert peak < 4 * prob.size  # sorting took 56 bytes a pixel
    assert 0.5 < auc < 1
