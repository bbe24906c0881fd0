"""The calibre scale rule: choose the processing scale from what the photograph shows.

The FOV rule (``preprocess.scale_factor``) assumes every camera puts the same retina across
its field of view, at a resolution where shrinking to the model's scale loses nothing. Two
cases break it, and this rule mends each with a check chosen on validation images
(``python -m train.scales``; README, "Scale rules"):

- High-resolution photographs (HRF, 3504x2336): shrunk 6x, their thin vessels vanish and the
  rest come back too thick. Rule: never shrink a photograph more than ``1 / MIN_FACTOR``.
- Photographs without a dark border (crops, ultra-wide-field): the "FOV" is the whole frame and
  its diameter says nothing about the vessels. Rule: a first look at the FOV rule's scale; when
  the vessels found there are wider than any the model draws at its own scale (outside
  ``WIDTH_BAND``), rescale so their width becomes ``REFERENCE_WIDTH``. Inside the band the
  first look is the answer (no second pass).

Widths are ``edge_width`` of the thresholded mask at the processing scale. Pure functions over
numpy arrays: no engine, no files.
"""
from __future__ import annotations

import numpy as np

#: Mean edge width of the shipped model's masks on the DRIVE validation images (seed-0 split:
#: 23, 25, 27, 40) at the model's scale, where the FOV rule is right:
#: ``python -m train.scales vesselcli/models/default.pt --reference`` (2.786).
REFERENCE_WIDTH = 2.79

#: Mask widths at the FOV rule's scale that need no rescaling: the shipped model draws 2.46-3.03
#: px on the DRIVE validation images and 3.27-3.55 px on the CHASE_DB1 ones, where the FOV rule
#: is right; borderless crops of CHASE_DB1 (processed 1.7x too large) give 4.57-5.28 px.
WIDTH_BAND = (2.2, 4.0)

#: The least processing factor: a photograph is never shrunk more than 2x. On the HRF
#: validation photographs (FOV rule: 0.166) F1 rises from 0.726 to 0.821 at 0.5; DRIVE and
#: CHASE_DB1 (factors 1.0 and 0.59) are not affected; 0.5 keeps 3504x2336 under 2 s.
MIN_FACTOR = 0.5

#: A rescale moves at most this factor away from the first look either way.
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


def first_factor(fov_factor: float) -> tuple[float, bool]:
    """(factor of the first pass, whether it is a first look to check) from the FOV rule's factor.

    A photograph the FOV rule would shrink more than ``1 / MIN_FACTOR`` runs at ``MIN_FACTOR``
    and is not checked (its vessels are drawn at the model's width whatever their scale, so
    the check would tell nothing); any other is a first look at the FOV rule's factor.
    """
    if fov_factor < MIN_FACTOR:
        return MIN_FACTOR, False
    return fov_factor, True


def calibre_factor(mask: np.ndarray, factor: float, reference: float = REFERENCE_WIDTH, max_change: float = MAX_CHANGE) -> float:
    """The processing factor that gives the vessels the reference calibre.

    ``mask``: ``(h, w) bool`` vessels found at processing ``factor`` (inside the FOV). Their
    calibre at original size is ``edge_width(mask) / factor``; the answer brings it to
    ``reference`` pixels, kept within ``max_change`` of ``factor`` either way and not below
    ``MIN_FACTOR``. An image with no vessels found keeps ``factor``.
    """
    width = edge_width(mask)
    if width <= 0.0:
        return factor
    wanted = factor * reference / width
    wanted = min(max(wanted, factor / max_change), factor * max_change)
    return float(max(wanted, min(MIN_FACTOR, factor)))


def next_factor(mask: np.ndarray, factor: float, band: tuple[float, float] = WIDTH_BAND) -> float | None:
    """After a first look at ``factor``: None when the vessels' width is inside ``band`` (or no
    vessels were found), so the look is the answer; else ``calibre_factor``."""
    width = edge_width(mask)
    if width == 0.0 or band[0] <= width <= band[1]:
        return None
    return calibre_factor(mask, factor)
