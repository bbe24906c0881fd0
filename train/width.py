"""Mean vessel width of a binary mask, for validating masks against annotations.

    mean width = vessel pixels / skeleton length (pixels)

The skeleton is Zhang-Suen thinning (8-connected, one pixel wide); its length is its pixel
count, so a straight horizontal line of width w and length L (L >> w) has mean width ~= w.
The same definition is applied to a mask and to its annotation, so their ratio compares
calibres whatever bias the definition has. Pure numpy; meant for validation, not the product.
"""
from __future__ import annotations

import numpy as np


def _neighbours(img: np.ndarray) -> list[np.ndarray]:
    """P2..P9 (clockwise from north) of every pixel of a zero-padded ``(H+2, W+2) uint8``."""
    return [
        img[:-2, 1:-1], img[:-2, 2:], img[1:-1, 2:], img[2:, 2:],
        img[2:, 1:-1], img[2:, :-2], img[1:-1, :-2], img[:-2, :-2],
    ]


def skeleton(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a ``(H, W) bool`` mask -> ``(H, W) bool`` one-pixel-wide skeleton."""
    img = np.pad(mask.astype(np.uint8), 1)
    while True:
        changed = False
        for step in (0, 1):
            p = _neighbours(img)
            centre = img[1:-1, 1:-1]
            count = sum(q.astype(np.int16) for q in p)
            seq = p + [p[0]]
            transitions = sum(((seq[i] == 0) & (seq[i + 1] == 1)).astype(np.int16) for i in range(8))
            p2, p4, p6, p8 = p[0], p[2], p[4], p[6]
            if step == 0:
                cond = (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
            else:
                cond = (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
            remove = (centre == 1) & (count >= 2) & (count <= 6) & (transitions == 1) & cond
            if remove.any():
                centre[remove] = 0
                changed = True
        if not changed:
            return img[1:-1, 1:-1].astype(bool)


def mean_width(mask: np.ndarray, region: np.ndarray | None = None) -> float:
    """Vessel pixels / skeleton pixels of ``(H, W) bool`` ``mask`` (inside ``region`` if given).

    The skeleton is taken of the whole mask, then both counts are restricted to ``region``.
    0.0 for an empty mask.
    """
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return 0.0
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = mask[y0:y1, x0:x1]
    sk = skeleton(crop)
    if region is not None:
        inside = region[y0:y1, x0:x1]
        crop, sk = crop & inside, sk & inside
    length = int(np.count_nonzero(sk))
    return float(np.count_nonzero(crop)) / length if length else 0.0
