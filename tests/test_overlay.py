"""Overlays: the lookup-table implementation gives, pixel for pixel, the documented float32 formula."""
from __future__ import annotations

import numpy as np
import pytest

from vesselcli.overlay import (
    ALPHA,
    FALSE_NEGATIVE,
    FALSE_POSITIVE,
    OUTSIDE_DIM,
    TRUE_POSITIVE,
    VESSEL,
    overlay,
    tint_table,
)


def tinted_by_formula(pixels: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """``(N, 3) uint8`` -> round((1 - ALPHA) p + ALPHA colour) in float32, clipped: the overlay's definition."""
    return np.clip((1 - ALPHA) * pixels.astype(np.float32) + ALPHA * np.asarray(colour, np.float32) + 0.5,
                   0, 255).astype(np.uint8)


def overlay_by_formula(rgb, mask, fov, truth=None) -> np.ndarray:
    out = rgb.copy()
    out[~fov] = (out[~fov].astype(np.float32) * OUTSIDE_DIM).astype(np.uint8)
    if truth is None:
        out[mask] = tinted_by_formula(out[mask], VESSEL)
        return out
    truth = truth & fov
    for where, colour in ((mask & truth, TRUE_POSITIVE), (mask & ~truth, FALSE_POSITIVE), (~mask & truth, FALSE_NEGATIVE)):
        out[where] = tinted_by_formula(out[where], colour)
    return out


@pytest.mark.parametrize("with_truth", [False, True])
@pytest.mark.parametrize("shape", [(1, 1), (37, 53), (240, 320)])
def test_overlay_matches_its_formula_on_every_level(shape, with_truth) -> None:
    rng = np.random.default_rng(shape[0] * 7 + with_truth)
    rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    rgb.reshape(-1, 3)[:256] = np.arange(256, dtype=np.uint8)[: rgb.reshape(-1, 3)[:256].shape[0], None]  # 0..255 all seen
    fov = rng.random(shape) < 0.7
    mask = rng.random(shape) < 0.3  # some vessel pixels outside the FOV too: dimmed, then tinted
    truth = rng.random(shape) < 0.3 if with_truth else None
    out = overlay(rgb, mask, fov, truth)
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    np.testing.assert_array_equal(out, overlay_by_formula(rgb, mask, fov, truth))
    assert not np.shares_memory(out, rgb)


def test_tint_table_holds_the_formula_for_every_level() -> None:
    levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    for colour in (VESSEL, FALSE_POSITIVE, FALSE_NEGATIVE, (255, 255, 255), (0, 0, 0)):
        np.testing.assert_array_equal(tint_table(colour)[:, 0, :], tinted_by_formula(levels, colour))


def test_overlay_of_a_non_contiguous_photograph_and_masks() -> None:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)[:, ::2]  # a view with strides
    fov = (rng.random((40, 60)) < 0.8)[:, ::2]
    mask = (rng.random((40, 60)) < 0.3)[:, ::2]
    np.testing.assert_array_equal(overlay(rgb, mask, fov), overlay_by_formula(rgb, mask, fov))
