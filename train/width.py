"""Mean vessel width of a binary mask, for validating masks against annotations.

    mean width = vessel pixels / skeleton length (pixels)

The skeleton is Zhang-Suen thinning (8-connected, one pixel wide); its length is its pixel
count, so a straight horizontal line of width w and length L (L >> w) has mean width ~= w.
The same definition is applied to a mask and to its annotation, so their ratio compares
calibres whatever bias the definition has. Pure numpy; meant for validation, not the product.
"""
from __future__ import annotations

import numpy as np


#: Flat-index offsets of P2..P9 (clockwise from north) in an array of row length ``w``.
def _offsets(w: int) -> np.ndarray:
    return np.array([-w, -w + 1, 1, w + 1, w, w - 1, -1, -w - 1])


def skeleton(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a ``(H, W) bool`` mask -> ``(H, W) bool`` one-pixel-wide skeleton.

    Each sub-iteration tests only candidate pixels (those that were not removable yet, plus the
    neighbours of pixels just removed), the rest cannot have changed: the same answer as testing
    every pixel, in time that grows with the vessels rather than the photograph.
    """
    img = np.pad(mask.astype(np.uint8), 1)
    flat = img.ravel()
    offsets = _offsets(img.shape[1])
    foreground = np.flatnonzero(flat)
    candidates = foreground[(flat[foreground[:, None] + offsets] == 0).any(axis=1)]
    marked = np.zeros(flat.size, dtype=bool)
    step, idle = 0, 0
    while idle < 2 and candidates.size:
        p = flat[candidates[:, None] + offsets].astype(np.int8)  # (n, 8): P2..P9
        count = p.sum(axis=1)
        transitions = ((p == 0) & (np.roll(p, -1, axis=1) == 1)).sum(axis=1)
        p2, p4, p6, p8 = p[:, 0], p[:, 2], p[:, 4], p[:, 6]
        if step == 0:
            cond = (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
        else:
            cond = (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
        remove = (count >= 2) & (count <= 6) & (transitions == 1) & cond
        removed = candidates[remove]
        flat[removed] = 0
        idle = idle + 1 if removed.size == 0 else 0
        marked[candidates[~remove & (count < 8)]] = True  # interior pixels wait for a neighbour to go
        marked[(removed[:, None] + offsets).ravel()] = True
        marked &= flat.astype(bool)
        candidates = np.flatnonzero(marked)
        marked[candidates] = False
        step ^= 1
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
