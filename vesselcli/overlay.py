"""Overlays: the vessels tinted over the photograph, for a person to check at a glance.

Without ground truth every vessel pixel is tinted green. With ground truth the three kinds
of pixel get three colours: true positives green, false positives red (called vessel, not
annotated) and false negatives blue (annotated, missed). Pixels outside the field of view
are dimmed so the region that was measured is plain to see.
"""
from __future__ import annotations

import numpy as np

VESSEL = (0, 220, 0)
TRUE_POSITIVE = (0, 220, 0)
FALSE_POSITIVE = (255, 40, 40)
FALSE_NEGATIVE = (40, 120, 255)
ALPHA = 0.65  # weight of the tint over the photograph
OUTSIDE_DIM = 0.5  # brightness kept outside the field of view


def _tint(out: np.ndarray, where: np.ndarray, colour: tuple[int, int, int]) -> None:
    if where.any():
        pixels = out[where].astype(np.float32)
        out[where] = np.clip((1 - ALPHA) * pixels + ALPHA * np.asarray(colour, np.float32) + 0.5, 0, 255).astype(np.uint8)


def overlay(rgb: np.ndarray, mask: np.ndarray, fov: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    """``(H, W, 3) uint8 RGB`` photograph with ``(H, W) bool`` mask tinted -> ``(H, W, 3) uint8``.

    ``fov``: ``(H, W) bool``; ``truth``: optional ``(H, W) bool`` annotation (compared
    inside the FOV only, like every figure).
    """
    if rgb.shape[:2] != mask.shape or fov.shape != mask.shape:
        raise ValueError(f"overlay needs equal sizes, got image {rgb.shape[:2]}, mask {mask.shape}, FOV {fov.shape}")
    out = rgb.copy()
    outside = ~fov
    out[outside] = (out[outside].astype(np.float32) * OUTSIDE_DIM).astype(np.uint8)
    if truth is None:
        _tint(out, mask, VESSEL)
        return out
    if truth.shape != mask.shape:
        raise ValueError(f"overlay needs equal sizes, got mask {mask.shape} and truth {truth.shape}")
    truth = truth & fov
    _tint(out, mask & truth, TRUE_POSITIVE)
    _tint(out, mask & ~truth, FALSE_POSITIVE)
    _tint(out, ~mask & truth, FALSE_NEGATIVE)
    return out
