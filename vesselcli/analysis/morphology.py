"""Vessel morphology from a binary mask: length, calibre, branching, tortuosity, fractal dimension.

Every figure is a pure function of a ``(H, W) bool`` vessel mask (and, for the fractal
dimension, the ``(H, W) bool`` field of view), with its exact definition in its docstring.
The skeleton is Zhang-Suen thinning with scikit-image's table (``vesselcli.analysis.thinning``,
pixel for pixel ``skimage.morphology.skeletonize``; one pixel wide, 8-connected); everything after it is defined here on the skeleton's pixel graph, in which
two skeleton pixels are neighbours when they touch by a side or a corner (8-connectivity):

- a pixel's *degree* is its number of skeleton neighbours;
- *junction* pixels have degree >= 3; touching junction pixels form one *junction cluster*
  (one branch point); *end* pixels have degree 1;
- a *segment* is a connected run of non-junction pixels (each has at most two neighbours,
  so a run is a simple path, or a closed loop); it joins the clusters and ends it touches.

Lengths step 1 between side neighbours and sqrt(2) between corner neighbours. Inside a
junction cluster only the shortest steps that connect it are counted (its minimum spanning
tree), so a clump of junction pixels adds its span, not every pair of its pixels: the
definition skan uses (``skan.csr.skeleton_to_csgraph``), with which the tests check it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .thinning import skeletonize

SQRT2 = math.sqrt(2.0)
MIN_TORTUOSITY_LENGTH = 10.0  # px: shorter segments are dominated by pixel steps, not by the vessel's course
_NEIGHBOURS = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], np.float32)
# The four "forward" neighbour directions (dy, dx, step length): each touching pair once.
_FORWARD = ((0, 1, 1.0), (1, 0, 1.0), (1, 1, SQRT2), (1, -1, SQRT2))


def skeleton(mask: np.ndarray) -> np.ndarray:
    """``(H, W) bool`` mask -> ``(H, W) bool`` skeleton, one pixel wide and 8-connected.

    Zhang and Suen's thinning with scikit-image's table (``thinning.skeletonize``, equal to
    ``skimage.morphology.skeletonize``): each 8-connected vessel keeps one connected centre line.
    """
    return skeletonize(mask)


def degrees(skel: np.ndarray) -> np.ndarray:
    """``(H, W) uint8``: the number of 8-neighbours of each skeleton pixel (0 off the skeleton)."""
    image = skel.astype(np.uint8)
    count = cv2.filter2D(image, -1, _NEIGHBOURS, borderType=cv2.BORDER_CONSTANT)
    return count * image


@dataclass(frozen=True)
class SkeletonGraph:
    """The skeleton's pixel graph, reduced to what the figures need.

    ``length``: total length in px (see the module docstring). ``branch_points``: junction
    clusters. ``end_points``: pixels of degree 1. ``segment_lengths`` / ``segment_chords``:
    ``(S,) float64`` per open segment, the path length between its two end pixels and the
    straight distance between them (closed loops have no ends and are left out of both).
    ``segments``: segments including closed loops.
    """

    length: float
    branch_points: int
    end_points: int
    segments: int
    segment_lengths: np.ndarray
    segment_chords: np.ndarray


def _cluster_span(junction: np.ndarray) -> tuple[int, float]:
    """(clusters, summed minimum spanning tree length) of the junction pixels.

    Steps are 1 or sqrt(2), so a cluster of k pixels made of c side-connected parts has a
    spanning tree of k - c side steps and c - 1 corner steps (Kruskal takes all side steps
    first); summed over clusters: (k - c4) + (c4 - c8) * sqrt(2).
    """
    image = junction.astype(np.uint8)
    c8 = cv2.connectedComponents(image, connectivity=8)[0] - 1
    c4 = cv2.connectedComponents(image, connectivity=4)[0] - 1
    k = int(np.count_nonzero(image))
    return c8, (k - c4) + (c4 - c8) * SQRT2


def skeleton_graph(skel: np.ndarray) -> SkeletonGraph:
    """Measure a ``(H, W) bool`` skeleton (one pixel wide, 8-connected); see ``SkeletonGraph``.

    Works on the list of skeleton pixels (flat indices into the image padded by one pixel),
    so the cost follows the skeleton's size, not the image's.
    """
    skel = np.asarray(skel, dtype=bool)
    degree = degrees(skel)
    junction = degree >= 3
    chain = skel & ~junction
    clusters, span = _cluster_span(junction)
    count, labels = cv2.connectedComponents(chain.astype(np.uint8), connectivity=8)
    width = skel.shape[1] + 2
    # Padded flat images: 0 off the skeleton, 1 on a segment (chain), 2 on a junction.
    kind = np.pad(chain.astype(np.uint8) + 2 * junction.astype(np.uint8), 1).ravel()
    label = np.pad(labels, 1).ravel()
    pixels = np.flatnonzero(kind == 1)
    segment = label[pixels]
    seg_inner = np.zeros(count, np.float64)  # steps inside each segment
    seg_length = np.zeros(count, np.float64)  # ... plus its steps onto the junctions it joins
    inner_degree = np.zeros(pixels.size, np.int64)
    for dy, dx, step in _FORWARD:
        for offset in (dy * width + dx, -(dy * width + dx)):
            other = kind[pixels + offset]
            inner_degree += other == 1
            if offset > 0:  # each pair of segment pixels once
                seg_inner += step * np.bincount(segment[other == 1], minlength=count)
            seg_length += step * np.bincount(segment[other == 2], minlength=count)
    seg_length += seg_inner
    length = float(seg_length[1:].sum()) + span
    # A segment's two ends are its pixels with fewer than two neighbours inside the segment.
    ends = inner_degree < 2
    end_labels = segment[ends]
    end_y, end_x = np.divmod(pixels[ends], width)
    order = np.argsort(end_labels, kind="stable")
    end_labels, end_y, end_x = end_labels[order], end_y[order], end_x[order]
    per_label = np.bincount(end_labels, minlength=count)
    first = (per_label[end_labels] == 2) & np.r_[True, end_labels[1:] != end_labels[:-1]]
    i = np.flatnonzero(first)  # open segments of two pixels or more: ends i and i + 1
    chords = np.hypot(end_y[i + 1] - end_y[i], end_x[i + 1] - end_x[i]).astype(np.float64)
    sizes = np.bincount(segment, minlength=count)
    segments = int(np.count_nonzero((sizes[1:] > 1) | (seg_length[1:] > 0)))
    return SkeletonGraph(
        length=length,
        branch_points=clusters,
        end_points=int(np.count_nonzero(degree == 1)),
        segments=segments,
        segment_lengths=seg_inner[end_labels[i]],
        segment_chords=chords,
    )


def tortuosity(lengths: np.ndarray, chords: np.ndarray, min_length: float = MIN_TORTUOSITY_LENGTH) -> float | None:
    """Length-weighted mean of path length / chord over segments at least ``min_length`` px long.

    ``lengths``, ``chords``: ``(S,) float64`` per open segment, measured between its two end
    pixels. sum(L_i * L_i / C_i) / sum(L_i) over segments with L_i >= ``min_length``; 1 for
    straight segments, pi / 2 for a half circle (times the 8-step bias, below). None when no
    segment is long enough. Steps of 1 and sqrt(2) overestimate a smooth curve's length by
    5.5% on average over directions (0 for axial and diagonal lines), so a digital half
    circle measures about 1.657.
    """
    keep = (lengths >= min_length) & (chords > 0)
    if not keep.any():
        return None
    l, c = lengths[keep], chords[keep]
    return float(np.sum(l * l / c) / np.sum(l))


def box_counts(mask: np.ndarray, fov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Box sizes ``(K,) int64`` and the number of boxes holding a vessel pixel ``(K,) int64``.

    The grid starts at the top-left corner of the FOV's bounding box; sizes are 2, 4, 8, ...
    up to a quarter of the bounding box's shorter side; only mask pixels inside the FOV count.
    Counting boxes of 2^k px is done by halving: each level ORs 2x2 blocks of the one below.
    """
    fov = np.asarray(fov, dtype=bool)
    x0, y0, w, h = cv2.boundingRect(fov.astype(np.uint8))
    largest = min(w, h) / 4
    level = (np.asarray(mask, dtype=bool) & fov)[y0:y0 + h, x0:x0 + w]
    sizes, counts = [], []
    size = 1
    while size * 2 <= largest:
        if level.shape[0] % 2 or level.shape[1] % 2:
            level = np.pad(level, ((0, level.shape[0] % 2), (0, level.shape[1] % 2)))
        level = level[0::2, 0::2] | level[1::2, 0::2] | level[0::2, 1::2] | level[1::2, 1::2]
        size *= 2
        sizes.append(size)
        counts.append(int(np.count_nonzero(level)))
    return np.asarray(sizes, np.int64), np.asarray(counts, np.int64)


def fractal_dimension(mask: np.ndarray, fov: np.ndarray) -> float | None:
    """Box-counting dimension of the vessels inside the FOV (``(H, W) bool`` each).

    With ``box_counts``' sizes s and counts N(s): the negative slope of the least-squares
    line through (log s, log N(s)). 2 for a filled square, 1 for a line, log 3 / log 2 for a
    Sierpinski triangle. None when there is no vessel pixel or fewer than two box sizes
    (an FOV under 16 px across).
    """
    sizes, counts = box_counts(mask, fov)
    if sizes.size < 2 or counts[0] == 0:
        return None
    slope = np.polyfit(np.log(sizes.astype(np.float64)), np.log(counts.astype(np.float64)), 1)[0]
    return float(-slope)


def _per_length(vessel_pixels: int, length: float) -> float | None:
    """Mean width: vessel pixels / skeleton length; None without a skeleton."""
    return float(vessel_pixels) / length if length > 0 else None


def mean_width(mask: np.ndarray, fov: np.ndarray) -> float | None:
    """Mean vessel width in pixels of a ``(H, W) bool`` mask inside its ``(H, W) bool`` FOV.

    Vessel pixels / skeleton length, both of the mask inside the FOV: ``morphology``'s
    ``mean_width_px``, alone. A straight bar w pixels wide measures about w. The one width
    rule of the project: training's validation compares a mask's with its annotation's.
    None for a mask without vessels.
    """
    mask = np.asarray(mask, dtype=bool) & np.asarray(fov, dtype=bool)
    return _per_length(np.count_nonzero(mask), skeleton_graph(skeleton(mask)).length)


def width_against(width: float | None, truth: np.ndarray, fov: np.ndarray) -> dict[str, float | None]:
    """A mask's ``mean_width`` (``width``) against its annotation's inside ``fov``:
    ``gt_mean_width_px`` (the annotation's) and ``width_ratio`` (mask / annotation: 1.0 as wide
    as drawn, above it thicker); None where either has no vessel."""
    theirs = mean_width(truth, fov)
    return {"gt_mean_width_px": theirs, "width_ratio": width_ratio(width, theirs)}


def width_ratio(width: float | None, truth_width: float | None) -> float | None:
    """Mask width / annotation width (both ``mean_width``); None where either has no vessel."""
    return width / truth_width if width and truth_width else None


def morphology(mask: np.ndarray, fov: np.ndarray, pixel_size_um: float | None = None) -> dict[str, float | None]:
    """Every morphology figure of one ``(H, W) bool`` mask inside its ``(H, W) bool`` FOV.

    Keys are ``vesselcli.run.report.MORPHOLOGY_COLUMNS``: ``vessel_length_px`` (skeleton
    length), ``mean_width_px`` (vessel pixels / length), ``branch_points``, ``end_points``,
    ``segments``, ``tortuosity``, ``fractal_dimension``; with ``pixel_size_um`` (micrometres
    per pixel) also ``vessel_length_mm`` and ``mean_width_um``, else None. The mask is taken
    inside the FOV. None marks a figure the image has not got (no vessel: no width).
    """
    mask = np.asarray(mask, dtype=bool) & np.asarray(fov, dtype=bool)
    graph = skeleton_graph(skeleton(mask))
    width = _per_length(np.count_nonzero(mask), graph.length)
    figures: dict[str, float | None] = {
        "vessel_length_px": graph.length,
        "mean_width_px": width,
        "branch_points": graph.branch_points,
        "end_points": graph.end_points,
        "segments": graph.segments,
        "tortuosity": tortuosity(graph.segment_lengths, graph.segment_chords),
        "fractal_dimension": fractal_dimension(mask, fov),
        "vessel_length_mm": None,
        "mean_width_um": None,
    }
    if pixel_size_um is not None:
        figures["vessel_length_mm"] = graph.length * pixel_size_um / 1000.0
        figures["mean_width_um"] = None if width is None else width * pixel_size_um
    return figures
