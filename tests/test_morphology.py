"""Vessel morphology: synthetic shapes whose answers are known by hand, and skan on DRIVE annotations."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from vesselcli.analysis.morphology import (
    box_counts, fractal_dimension, mean_width, morphology, skeleton, skeleton_graph, tortuosity,
)

SQRT2 = math.sqrt(2.0)


def blank(size: int = 256) -> np.ndarray:
    return np.zeros((size, size), bool)


def full(size: int = 256) -> np.ndarray:
    return np.ones((size, size), bool)


def test_a_one_pixel_line_has_its_length_two_ends_one_segment_and_no_branch() -> None:
    mask = blank()
    mask[100, 20:220] = True  # 200 pixels: 199 steps
    figures = morphology(mask, full())
    assert figures["vessel_length_px"] == pytest.approx(199.0)
    assert (figures["end_points"], figures["branch_points"], figures["segments"]) == (2, 0, 1)
    assert figures["tortuosity"] == pytest.approx(1.0)
    assert figures["mean_width_px"] == pytest.approx(200 / 199)


def test_a_diagonal_line_steps_sqrt2_and_is_straight() -> None:
    mask = blank()
    for i in range(150):
        mask[50 + i, 30 + i] = True
    figures = morphology(mask, full())
    assert figures["vessel_length_px"] == pytest.approx(149 * SQRT2)
    assert figures["tortuosity"] == pytest.approx(1.0)


def test_a_thick_bar_measures_its_centre_line_and_its_width() -> None:
    mask = blank()
    mask[98:105, 20:220] = True  # 7 px wide, 200 long: the skeleton loses about half a width at each end
    figures = morphology(mask, full())
    assert 190 <= figures["vessel_length_px"] <= 200
    assert figures["mean_width_px"] == pytest.approx(7.0, rel=0.04)
    assert figures["tortuosity"] == pytest.approx(1.0, abs=0.01)  # thinning bends the last pixels


def test_pixel_size_gives_millimetres_and_micrometres() -> None:
    mask = blank()
    mask[100, 20:220] = True
    figures = morphology(mask, full(), pixel_size_um=10.0)
    assert figures["vessel_length_mm"] == pytest.approx(1.99)
    assert figures["mean_width_um"] == pytest.approx(10 * 200 / 199)
    assert morphology(mask, full())["vessel_length_mm"] is None


def test_a_half_circle_has_tortuosity_pi_over_2_times_the_8_step_bias() -> None:
    mask = np.zeros((400, 400), np.uint8)
    cv2.ellipse(mask, (200, 200), (150, 150), 0, 0, 180, 1, thickness=1)  # 8-connected arc
    figures = morphology(mask.astype(bool), np.ones_like(mask, bool))
    # Steps of 1 and sqrt(2) overestimate a curve by the mean of cos(t) + (sqrt(2) - 1) sin(t)
    # over 0..45 degrees: (sin 45 + (sqrt(2) - 1)(1 - cos 45)) / (pi / 4) = 1.0552.
    bias = (math.sin(math.pi / 4) + (SQRT2 - 1) * (1 - math.cos(math.pi / 4))) / (math.pi / 4)
    assert figures["tortuosity"] == pytest.approx(math.pi / 2 * bias, rel=0.01)
    assert (figures["end_points"], figures["segments"]) == (2, 1)


def test_tortuosity_weights_by_length_and_ignores_short_segments() -> None:
    lengths = np.array([20.0, 30.0, 5.0])
    chords = np.array([10.0, 30.0, 1.0])
    assert tortuosity(lengths, chords) == pytest.approx((20 * 2 + 30 * 1) / 50)
    assert tortuosity(np.array([9.0]), np.array([3.0])) is None


def y_shape(thickness: int) -> np.ndarray:
    mask = np.zeros((300, 300), np.uint8)
    centre = (150, 150)
    for end in ((150, 20), (40, 260), (260, 260)):
        cv2.line(mask, centre, end, 1, thickness=thickness)
    return mask.astype(bool)


@pytest.mark.parametrize("thickness", [1, 5])
def test_a_y_has_one_branch_point_three_ends_and_three_segments(thickness: int) -> None:
    figures = morphology(y_shape(thickness), np.ones((300, 300), bool))
    assert (figures["branch_points"], figures["end_points"], figures["segments"]) == (1, 3, 3)
    arms = 130 + 2 * math.hypot(110, 110)
    assert figures["vessel_length_px"] == pytest.approx(arms, rel=0.08)


def test_a_cross_of_two_lines_is_one_branch_point_with_four_ends() -> None:
    mask = blank()
    mask[128, 28:228] = True
    mask[28:228, 128] = True
    figures = morphology(mask, full())
    assert (figures["branch_points"], figures["end_points"], figures["segments"]) == (1, 4, 4)
    assert figures["vessel_length_px"] == pytest.approx(2 * 199.0)


def test_a_closed_loop_is_one_segment_without_ends_or_tortuosity() -> None:
    mask = np.zeros((200, 200), np.uint8)
    cv2.circle(mask, (100, 100), 60, 1, thickness=1)
    figures = morphology(mask.astype(bool), np.ones((200, 200), bool))
    assert (figures["segments"], figures["end_points"], figures["branch_points"]) == (1, 0, 0)
    assert figures["tortuosity"] is None
    assert figures["vessel_length_px"] == pytest.approx(2 * math.pi * 60 * 1.0552, rel=0.03)


def test_mean_width_is_vessel_pixels_over_skeleton_length_on_shapes_of_known_width() -> None:
    for width in (1, 3, 6, 11):
        mask = np.zeros((80, 400), bool)
        mask[30 : 30 + width, 20:380] = True
        assert mean_width(mask, np.ones_like(mask)) == pytest.approx(width, rel=0.04)
    ring = np.zeros((200, 200), np.uint8)
    cv2.circle(ring, (100, 100), 70, 1, 5)  # a closed ring keeps its skeleton: no end to erode
    # area / centre line; 8-connected steps make a curve's length about 5% long (see tortuosity)
    assert mean_width(ring.astype(bool), full(200)) == pytest.approx(ring.sum() / (2 * np.pi * 70) / 1.05, rel=0.02)
    half = np.zeros((80, 400), bool)
    half[:, :200] = True  # only the mask inside the FOV: a shorter bar, the same width
    assert mean_width(mask, half) == pytest.approx(11, rel=0.06)
    assert mean_width(blank(), full()) is None


@pytest.mark.data
def test_mean_width_is_the_morphology_column_on_a_drive_annotation(drive_root) -> None:
    from vesselcli.io.imageio import read_mask

    truth = read_mask(drive_root / "test" / "1st_manual" / "01_manual1.gif")
    fov = read_mask(drive_root / "test" / "mask" / "01_test_mask.gif")
    width = mean_width(truth, fov)
    assert width == morphology(truth, fov)["mean_width_px"]
    assert 2.0 < width < 4.0  # DRIVE's annotated vessels: about 2.7 px on average


def test_no_vessel_gives_zero_length_and_empty_ratios() -> None:
    figures = morphology(blank(), full())
    assert figures["vessel_length_px"] == 0 and figures["segments"] == 0
    assert figures["mean_width_px"] is None and figures["tortuosity"] is None
    assert figures["fractal_dimension"] is None


def test_only_the_mask_inside_the_fov_is_measured() -> None:
    mask = blank()
    mask[100, 20:220] = True
    fov = full()
    fov[:, 120:] = False
    assert morphology(mask, fov)["vessel_length_px"] == pytest.approx(99.0)


def test_a_filled_square_has_dimension_2_and_a_line_dimension_1() -> None:
    assert fractal_dimension(full(1024), full(1024)) == pytest.approx(2.0, abs=1e-9)
    line = blank(1024)
    line[300, :] = True
    assert fractal_dimension(line, full(1024)) == pytest.approx(1.0, abs=0.05)


def sierpinski(size: int) -> np.ndarray:
    """Pascal's triangle modulo 2: cell (i, j) is odd exactly when j & ~i == 0 (Lucas)."""
    i = np.arange(size)[:, None]
    j = np.arange(size)[None, :]
    return (j & ~i) == 0


def test_a_sierpinski_triangle_has_dimension_log3_over_log2() -> None:
    mask = sierpinski(1024)
    sizes, counts = box_counts(mask, full(1024))
    assert sizes.tolist() == [2, 4, 8, 16, 32, 64, 128, 256]  # up to a quarter of 1024
    assert counts.tolist() == [3 ** (10 - k) for k in range(1, 9)]
    assert fractal_dimension(mask, full(1024)) == pytest.approx(math.log(3) / math.log(2), abs=0.05)


def test_box_counting_starts_at_the_fov_corner_and_stops_at_a_quarter_of_its_side() -> None:
    fov = blank(256)
    fov[10:110, 30:230] = True  # 100 x 200: boxes up to 25 px
    mask = fov.copy()
    sizes, counts = box_counts(mask, fov)
    assert sizes.tolist() == [2, 4, 8, 16]
    assert counts.tolist() == [50 * 100, 25 * 50, 13 * 25, 7 * 13]


def test_the_skeleton_is_one_pixel_wide() -> None:
    skel = skeleton(y_shape(9))
    # no 2x2 block of skeleton pixels anywhere
    blocks = skel[:-1, :-1] & skel[1:, :-1] & skel[:-1, 1:] & skel[1:, 1:]
    assert not blocks.any() and skel.any()


@pytest.mark.data
def test_length_segments_and_ends_match_skan_on_drive_annotations(drive_root) -> None:
    skan = pytest.importorskip("skan", reason="skan is the reference for the cross-check: pip install '.[test]'")
    from scipy.sparse import csgraph
    from vesselcli.io.imageio import read_mask

    for path in sorted((drive_root / "test" / "1st_manual").glob("*.gif"))[:5]:
        skel = skeleton(read_mask(path))
        ours = skeleton_graph(skel)
        theirs = skan.Skeleton(skel)
        assert ours.length == pytest.approx(theirs.path_lengths().sum(), rel=1e-9), path.name
        # skan's branches, less those made only of junction pixels (skan splits a junction
        # cluster into branches of its own; we count the cluster once).
        rows, cols = theirs.coordinates[:, 0].astype(int), theirs.coordinates[:, 1].astype(int)
        raw, _ = skan.csr.pixel_graph(skel, connectivity=2)
        degree = np.diff(raw.indptr)
        junction = degree >= 3
        branches = sum(not junction[theirs.path(i)].all() for i in range(theirs.n_paths))
        assert ours.segments == branches, path.name
        assert ours.end_points == int(np.count_nonzero(degree == 1)), path.name
        # branch points: connected groups of junction pixels in skan's pixel graph
        sub = raw[junction][:, junction]
        assert ours.branch_points == csgraph.connected_components(sub, directed=False)[0], path.name
        assert skel[rows, cols].all()
