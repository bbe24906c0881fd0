"""Field of view (FOV): the lit disc of a fundus photograph, found from the pixels alone.

Pure functions over numpy arrays. The FOV is what every figure is measured inside, and its
diameter is what brings photographs from any camera to the model's scale.
"""
from __future__ import annotations

import cv2
import numpy as np


WORK_SIDE = 1024  # larger photographs are searched for their disc at about this size


def detect_fov(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3) uint8 RGB`` -> ``(H, W) bool`` field of view.

    The disc is brighter than the black surround in the red channel (the brightest channel of a
    fundus photograph). The threshold is relative to the image's own brightness, so dark and
    over-exposed photographs both work; the largest connected region is kept and its holes
    filled, so dark lesions or the optic-disc rim never punch holes into it. A photograph with
    no dark surround at all (cropped inside the disc) gives an all-true FOV.

    Photographs larger than 1.5 x ``WORK_SIDE`` are searched at about that size: averaged
    down by a whole factor ``k`` (``reduction_factor``), the disc found there, scaled back up
    as 8-bit levels and cut at half in place, so the only full-size array is the answer (one
    byte a pixel). The edge stays within ``k`` pixels of a full-resolution search (tested on
    HRF photographs). Measured at 64 megapixels: see ``bench/large_inputs.py``.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"detect_fov expects (H, W, 3) RGB, got shape {rgb.shape}")
    height, width = rgb.shape[:2]
    k = reduction_factor(height, width)
    if k == 1:
        return _detect(rgb)
    # A whole factor on a crop to its multiple: OpenCV's fast area averaging, no resampling grid.
    rows, cols = max(1, height // k), max(1, width // k)
    small = cv2.resize(rgb[: rows * k, : cols * k], (cols, rows), interpolation=cv2.INTER_AREA)
    region = _detect(small).astype(np.uint8) * np.uint8(255)
    big = np.empty((height, width), np.uint8)  # the only full-size array: it becomes the answer
    cropped = big[: rows * k, : cols * k]
    scaled = cv2.resize(region, (cols * k, rows * k), dst=cropped, interpolation=cv2.INTER_LINEAR)
    if not np.shares_memory(scaled, big):  # OpenCV wrote elsewhere after all
        cropped[...] = scaled
    big[rows * k :, :] = big[rows * k - 1 : rows * k, :]  # the rows and columns the crop left:
    big[:, cols * k :] = big[:, cols * k - 1 : cols * k]  # as their neighbours
    cv2.threshold(big, 127, 1, cv2.THRESH_BINARY, dst=big)  # in place: 0/1 bytes are a valid bool array
    return big.view(bool)


def reduction_factor(height: int, width: int) -> int:
    """The whole factor ``detect_fov`` averages a photograph down by: 1 up to 1.5 x ``WORK_SIDE``
    on the longer side, else the one bringing it to at most ``WORK_SIDE``."""
    longer = max(height, width)
    if longer <= 1.5 * WORK_SIDE:
        return 1
    return -(-longer // WORK_SIDE)


def _detect(rgb: np.ndarray) -> np.ndarray:
    height, width = rgb.shape[:2]
    signal = cv2.GaussianBlur(brightness(rgb), (0, 0), sigmaX=max(1.0, min(height, width) / 200))
    dark, bright = (float(v) for v in np.percentile(signal, [1, 99]))  # one partial sort for both
    if bright - dark < 8 or min(height, width) < 16:
        return np.ones((height, width), dtype=bool)
    threshold = dark + max(4.0, 0.12 * (bright - dark))
    lit = (signal > threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(lit, connectivity=8)
    if count <= 1:
        return np.ones((height, width), dtype=bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = (labels == largest).astype(np.uint8)
    # Fill holes: flood the background from the border; what stays unreached is inside.
    region = _fill_holes(region)
    # Trim the soft rim, where the lens vignettes and the model has seen nothing useful.
    rim = max(1, round(min(height, width) / 300))
    region = cv2.erode(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rim + 1, 2 * rim + 1)))
    if region.sum() < 0.05 * height * width:
        return np.ones((height, width), dtype=bool)
    return region.astype(bool)


def brightness(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3) uint8 RGB`` -> ``(H, W) float32``: the larger of red and the channels' mean.

    Bit for bit ``np.maximum(red, rgb.astype(np.float32).mean(axis=2))``, in integers first:
    the mean is the float32 quotient of the exact sum r + g + b by 3, and red is 3r / 3
    exactly, so max(r, (r+g+b)/3) = max(3r, r+g+b) / 3 with one rounding. A tenth of the
    time of the float32 mean over a (H, W, 3) copy (0.8 against 9.8 ms for DRIVE and
    CHASE_DB1 photographs).
    """
    red = rgb[..., 0].astype(np.uint16)
    total = red + rgb[..., 1] + rgb[..., 2]
    return np.maximum(red * np.uint16(3), total).astype(np.float32) / np.float32(3)


def _fill_holes(region: np.ndarray) -> np.ndarray:
    padded = np.pad(region, 1)
    flood = padded.copy()
    mask = np.zeros((flood.shape[0] + 2, flood.shape[1] + 2), np.uint8)
    cv2.floodFill(flood, mask, (0, 0), 1)
    holes = (flood == 0)[1:-1, 1:-1]
    return (region.astype(bool) | holes).astype(np.uint8)


def fov_diameter(fov: np.ndarray) -> float:
    """Diameter in pixels of the FOV disc: the larger extent of its bounding box.

    Cameras crop the disc at the top and bottom (or the sides), never both ways, so the larger
    extent is the diameter even for cropped discs. An empty FOV gives the image's larger side.
    """
    rows = np.flatnonzero(fov.any(axis=1))
    cols = np.flatnonzero(fov.any(axis=0))
    if rows.size == 0:
        return float(max(fov.shape))
    return float(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))
