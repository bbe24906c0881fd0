"""Photometric augmentation matching real clinic variation (pure numpy / OpenCV).

Geometric augmentation (scale, rotation, flips) happens in ``data.PatchDataset``.
"""
from __future__ import annotations

import cv2
import numpy as np


def photometric(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(H, W, 3) uint8 RGB`` -> same, with random brightness, contrast, gamma, colour, blur."""
    x = rgb.astype(np.float32) / 255.0
    # Per-channel gain: white balance and camera colour differences.
    x *= rng.uniform(0.85, 1.15, size=3).astype(np.float32)
    # Brightness and contrast about the mean.
    mean = x.mean()
    x = (x - mean) * rng.uniform(0.7, 1.3) + mean * rng.uniform(0.7, 1.3)
    x = np.clip(x, 0.0, 1.0)
    # Gamma: under- and over-exposed photographs.
    x = x ** np.float32(np.exp(rng.uniform(np.log(0.7), np.log(1.4))))
    out = (x * 255.0 + 0.5).astype(np.uint8)
    if rng.random() < 0.3:  # defocus or motion softness
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=rng.uniform(0.3, 1.2))
    if rng.random() < 0.2:  # sensor noise
        noise = rng.normal(0, rng.uniform(1, 6), size=out.shape).astype(np.float32)
        out = np.clip(out.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return out
