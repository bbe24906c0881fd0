"""The calibre scale rule: choose the processing scale from the vessels the image shows.

The FOV rule (``preprocess.scale_factor``) assumes every camera puts the same retina across
its field of view. Where that fails (photographs without a dark border, whose "FOV" is the
whole frame; cameras whose vessels are thinner relative to the disc), the vessels reach the
network at a calibre it was not trained on. This rule takes a first look at the FOV rule's
scale, measures the mean calibre of the vessels found there, and rescales so that calibre
matches what the model's masks show at its trained scale (``REFERENCE_WIDTH``).

Pure functions over numpy arrays: no engine, no files.
"""
from __future__ import annotations

import numpy as np

#: Mean edge width (``edge_width``) of the shipped model's masks on the DRIVE validation images
#: (seed-0 split: 23, 25, 27, 40) at the model's scale, where the FOV rule is right. Measured
#: with ``python -m train.scales vesselcli/models/default.pt --reference`` (2.786).
REFERENCE_WIDTH = 2.79

#: The calibre rule moves at most this factor away from the FOV rule's scale either way.
MAX_CHANGE = 3.0


def edge_width(mask: np.ndarray) -> float:
    """Mean width in pixels of the structures in a ``(H, W) bool`` mask: 2 x area / edges.

    ``edges`` counts 4-neighbour (vessel, background) pixel pairs, the image border counting
    as background. A ribbon of width w and length L (L >> w) has area wL and about 2L edges,
    so its width is w; a one-pixel line gives 1. 0.0 for an empty mask.
    """
    area = int(np.count_nonzero(mask))
    if area == 0:
        return 0.0
    m = np.pad(mask, 1)
    edges = int(np.count_nonzero(m[1:, :] != m[:-1, :])) + int(np.count_nonzero(m[:, 1:] != m[:, :-1]))
    return 2.0 * area / edges


def calibre_factor(mask: np.ndarray, factor: float, reference: float = REFERENCE_WIDTH, max_change: float = MAX_CHANGE) -> float:
    """The processing factor that gives the vessels the reference calibre.

    ``mask``: ``(h, w) bool`` vessels found at processing ``factor`` (inside the FOV). Their
    calibre at original size is ``edge_width(mask) / factor``; the answer brings it to
    ``reference`` pixels, kept within ``max_change`` of ``factor`` either way. An image with no
    vessels found keeps ``factor``.
    """
    width = edge_width(mask)
    if width <= 0.0:
        return factor
    wanted = factor * reference / width
    return float(min(max(wanted, factor / max_change), factor * max_change))


def next_factor(mask: np.ndarray, factor: float, tolerance: float, reference: float = REFERENCE_WIDTH) -> float | None:
    """``calibre_factor``, or None when it is within ``tolerance`` (relative) of ``factor``:
    the look was already at the vessels' scale and need not be redone."""
    wanted = calibre_factor(mask, factor, reference)
    return None if abs(wanted / factor - 1.0) <= tolerance else wanted
