"""Overlays: tint and dimming by hand, and pixel for pixel against the per-pixel float rule."""
from __future__ import annotations

import numpy as np
import pytest

from vesselcli.analysis.overlay import ALPHA, FALSE_NEGATIVE, FALSE_POSITIVE, OUTSIDE_DIM, TRUE_POSITIVE, VESSEL, overlay


def per_pixel(rgb: np.ndarray, mask: np.ndarray, fov: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    """The overlay's definition, computed on the selected pixels in float32."""
    out = rgb.copy()
    out[~fov] = (out[~fov].astype(np.float32) * OUTSIDE_DIM).astype(np.uint8)

    def tint(where: np.ndarray, colour: tuple[int, int, int]) -> None:
        pixels = out[where].astype(np.float32)
        out[where] = np.clip((1 - ALPHA) * pixels + ALPHA * np.asarray(colour, np.float32) + 0.5, 0, 255).astype(np.uint8)

    if truth is None:
        tint(mask, VESSEL)
    else:
        truth = truth & fov
        tint(mask & truth, TRUE_POSITIVE)
        tint(mask & ~truth, FALSE_POSITIVE)
        tint(~mask & truth, FALSE_NEGATIVE)
    return out


def test_a_vessel_pixel_is_tinted_green_and_outside_the_fov_is_halved() -> None:
    rgb = np.full((2, 2, 3), 100, np.uint8)
    rgb[1, 1] = 201
    mask = np.array([[True, False], [False, False]])
    fov = np.array([[True, True], [True, False]])
    out = overlay(rgb, mask, fov)
    assert out[0, 0].tolist() == [35, 178, 35]  # 0.35 x 100 + 0.65 x (0, 220, 0), rounded
    assert out[0, 1].tolist() == [100, 100, 100]
    assert out[1, 1].tolist() == [100, 100, 100]  # 201 / 2, rounded down


@pytest.mark.parametrize("with_truth", [False, True])
def test_the_overlay_is_the_per_pixel_rule_exactly(with_truth: bool) -> None:
    rng = np.random.default_rng(7)
    for _ in range(5):
        shape = tuple(int(v) for v in rng.integers(1, 90, size=2))
        rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        rgb[0, 0] = (0, 255, 255)  # the extremes of the levels
        mask, fov, truth = (rng.random(shape) < p for p in (0.3, 0.7, 0.3))
        truth = truth if with_truth else None
        before = rgb.copy()
        assert np.array_equal(overlay(rgb, mask, fov, truth), per_pixel(rgb, mask, fov, truth))
        assert np.array_equal(rgb, before)  # the photograph is left alone


def test_sizes_must_agree() -> None:
    with pytest.raises(ValueError, match="equal sizes"):
        overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), bool), np.ones((4, 4), bool))
