"""Sliding-window geometry: exact reconstruction with identity-like predictors, blending checked
against answers computed by hand with a position-dependent predictor, full batches across
images, per-batch failures, flips; resizing round trips."""
from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vesselcli.imaging.preprocess import Preprocessing, prepare, resize_image, resize_mask, scale_factor, scaled_shape
from vesselcli.imaging.tiling import (
    TileSpec, blend_weights, flip_averaged, sliding_window, stream_tiled, tile_count, tile_origins, tile_shape,
    tile_shapes, tile_side,
)


def plus_one(batch: np.ndarray) -> np.ndarray:
    return batch + 1.0


def first_channel_times_two(batch: np.ndarray) -> np.ndarray:
    return batch[:, :1] * 2.0


def random_image(channels: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(channels, height, width)).astype(np.float32)


# Image sizes around the tile size (smaller, equal, one more, several tiles, non-square),
# tile sizes, overlaps and both blend modes, as in MONAI's sliding-window tests.
CASES = [
    ((1, 1, 1), 8, 0, 1, "gaussian"),
    ((1, 5, 7), 16, 4, 2, "gaussian"),
    ((1, 16, 16), 16, 0, 1, "constant"),
    ((1, 17, 16), 16, 8, 3, "gaussian"),
    ((3, 31, 65), 16, 15, 4, "gaussian"),
    ((2, 64, 40), 32, 8, 2, "constant"),
    ((1, 100, 9), 24, 12, 5, "gaussian"),
    ((1, 584, 565), 592, 64, 2, "gaussian"),
    ((1, 584, 565), 256, 32, 4, "gaussian"),
    ((1, 823, 549), 592, 64, 2, "gaussian"),
]


@pytest.mark.parametrize(("shape", "tile", "overlap", "batch", "blend"), CASES)
def test_identity_like_predictor_is_reconstructed_exactly(shape, tile, overlap, batch, blend) -> None:
    image = random_image(*shape)
    out = sliding_window(image, plus_one, TileSpec(tile, overlap, batch, blend))
    assert out.dtype == np.float32 and out.shape == image.shape
    assert np.array_equal(out, image + 1.0)


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 90), width=st.integers(1, 90), tile=st.integers(1, 40),
    overlap_fraction=st.floats(0.0, 0.95), batch=st.integers(1, 6), blend=st.sampled_from(["gaussian", "constant"]),
)
def test_reconstruction_is_exact_for_any_geometry(height, width, tile, overlap_fraction, batch, blend) -> None:
    overlap = min(tile - 1, int(tile * overlap_fraction))
    image = random_image(2, height, width, seed=height * 100 + width)
    out = sliding_window(image, first_channel_times_two, TileSpec(tile, overlap, batch, blend))
    assert out.shape == (1, height, width)
    assert np.array_equal(out, image[:1] * 2.0)


def where_in_the_tile(batch: np.ndarray) -> np.ndarray:
    """A position-dependent predictor: channel 0 the row, channel 1 the column inside each tile.

    Overlapping tiles disagree about every pixel they share, so only the right weights at
    the right places give the blended answer below (an identity is rebuilt by any weights).
    """
    n, _, t, _ = batch.shape
    rows, cols = np.mgrid[0:t, 0:t].astype(np.float32)
    return np.broadcast_to(np.stack([rows, cols]), (n, 2, t, t)).copy()


def gaussian_1d(tile: int) -> np.ndarray:
    """The documented blend weight along one axis: exp(-x^2 / 2 sigma^2), sigma = tile / 8, x from the centre."""
    x = np.arange(tile) - (tile - 1) / 2
    return np.exp(-0.5 * (x / (tile / 8)) ** 2)


def blended_position(length: int, origins: list[int], weight: np.ndarray) -> np.ndarray:
    """Per pixel of one axis: the weighted mean, over the tiles covering it, of its position in each."""
    tile = len(weight)
    out = np.zeros(length)
    for p in range(length):
        inside = [p - o for o in origins if o <= p < o + tile]
        out[p] = sum(weight[i] * i for i in inside) / sum(weight[i] for i in inside)
    return out


def test_constant_blending_averages_overlapping_tiles() -> None:
    # 12 columns, tiles of 8 overlapping by 4: origins 0 and 4. Columns 4-7 lie in both tiles,
    # at positions 4-7 in the first and 0-3 in the second: their mean, by hand.
    out = sliding_window(np.zeros((1, 1, 12), np.float32), where_in_the_tile, TileSpec(8, 4, 1, "constant"))
    assert out[1, 0].tolist() == [0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7]
    assert out[0, 0].tolist() == [0] * 12  # one row, padded to a tile: row 0 of each tile


@pytest.mark.parametrize(("shape", "tile", "overlap", "batch"), [
    ((12, 12), 8, 4, 1), ((1, 12), 8, 4, 2), ((30, 21), 8, 3, 5), ((5, 7), 8, 2, 1), ((64, 100), 32, 8, 3),
])
def test_gaussian_blending_weights_each_tile_by_its_distance_from_the_centre(shape, tile, overlap, batch) -> None:
    h, w = shape
    out = sliding_window(np.zeros((1, h, w), np.float32), where_in_the_tile, TileSpec(tile, overlap, batch, "gaussian"))
    g = gaussian_1d(tile)
    # The weight is separable (row weight x column weight); for the column channel the row
    # weights of the tiles stacked above each other factor out, and the other way round.
    rows = blended_position(max(h, tile), tile_origins(max(h, tile), tile, overlap), g)[:h]
    cols = blended_position(max(w, tile), tile_origins(max(w, tile), tile, overlap), g)[:w]
    np.testing.assert_allclose(out[0], np.broadcast_to(rows[:, None], shape), atol=1e-5)
    np.testing.assert_allclose(out[1], np.broadcast_to(cols[None, :], shape), atol=1e-5)
    if overlap and w > tile:  # where tiles overlap the answer is not any single tile's
        assert not np.allclose(cols, np.arange(w) - np.array([max(o for o in tile_origins(w, tile, overlap) if o <= p) for p in range(w)]))


@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 5000), tile=st.integers(1, 700), overlap_fraction=st.floats(0.0, 0.99))
def test_tile_origins_cover_the_axis_with_the_overlap_asked(length, tile, overlap_fraction) -> None:
    overlap = min(tile - 1, int(tile * overlap_fraction))
    origins = tile_origins(length, tile, overlap)
    assert origins[0] == 0
    assert origins == sorted(set(origins))
    if length <= tile:
        assert origins == [0]
        return
    assert origins[-1] + tile == length
    gaps = np.diff(origins)
    assert (tile - gaps >= overlap).all()  # neighbours overlap by at least the overlap asked
    # and no more tiles than needed: one fewer could not cover the axis at this overlap
    assert (len(origins) - 2) * (tile - overlap) + tile < length


def test_tile_origins_of_a_drive_image() -> None:
    assert tile_origins(584, 592, 64) == [0]
    assert tile_origins(823, 592, 64) == [0, 231]
    assert tile_origins(565, 320, 56) == [0, 245]


@pytest.mark.parametrize(("spec", "message"), [
    (dict(size=0, overlap=0, batch=1), "tile size"),
    (dict(size=16, overlap=16, batch=1), "overlap"),
    (dict(size=16, overlap=-1, batch=1), "overlap"),
    (dict(size=16, overlap=0, batch=0), "batch"),
    (dict(size=16, overlap=0, batch=1, blend="cubic"), "blend"),
])
def test_bad_tile_specs_name_the_constraint_and_the_value(spec, message) -> None:
    with pytest.raises(ValueError, match=message):
        TileSpec(**spec)


def test_blend_weights_are_positive_and_peak_in_the_centre() -> None:
    w = blend_weights(64)
    assert w.min() > 0 and w.max() == 1.0
    assert w[31:33, 31:33].min() == w.max()
    assert w[0, 0] < w[0, 32] < w[32, 32]


def test_tiles_of_several_images_share_full_batches_and_come_back_in_order() -> None:
    spec = TileSpec(16, 4, 5)
    images = [random_image(1, h, w, seed=i) for i, (h, w) in enumerate([(10, 10), (30, 20), (16, 16), (40, 45), (3, 50)])]
    batch_sizes: list[int] = []

    def predictor(batch: np.ndarray) -> np.ndarray:
        batch_sizes.append(batch.shape[0])
        return batch + 1.0

    results = list(stream_tiled(enumerate(images), predictor, spec))
    assert [key for key, _, _ in results] == list(range(len(images)))
    for (key, out, error), image in zip(results, images):
        assert error is None and np.array_equal(out, image + 1.0)
    total = sum(tile_count(i.shape[1:], spec) for i in images)
    assert sum(batch_sizes) == total
    assert all(n == spec.batch for n in batch_sizes[:-1])  # only the last batch may be partial
    assert len(batch_sizes) == -(-total // spec.batch)


def test_a_failing_batch_fails_only_the_images_in_it() -> None:
    spec = TileSpec(8, 0, 2)
    images = [random_image(1, 8, 8, seed=i) for i in range(5)]  # one tile each: batches {0,1} {2,3} {4}
    calls = {"n": 0}

    def predictor(batch: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("device lost")
        return batch * 3.0

    results = {key: (out, error) for key, out, error in stream_tiled(enumerate(images), predictor, spec)}
    assert sorted(results) == [0, 1, 2, 3, 4]
    for key in (2, 3):
        assert isinstance(results[key][1], RuntimeError) and results[key][0] is None
    for key in (0, 1, 4):
        assert results[key][1] is None and np.array_equal(results[key][0], images[key] * 3.0)


def test_a_predictor_returning_the_wrong_shape_is_reported_not_blended() -> None:
    out = list(stream_tiled([("a", random_image(1, 8, 8))], lambda b: b[:, :, :4], TileSpec(8, 0, 1)))
    assert out[0][1] is None and "expected (1, K, 8, 8)" in str(out[0][2])


def test_flip_averaging_keeps_a_flip_equivariant_predictor_and_averages_others() -> None:
    image = random_image(1, 20, 30)
    spec = TileSpec(16, 4, 3)
    assert np.array_equal(sliding_window(image, flip_averaged(plus_one), spec), image + 1.0)

    def left_edge(batch: np.ndarray) -> np.ndarray:  # 1 on each tile's left column only
        out = np.zeros_like(batch)
        out[..., 0] = 1.0
        return out

    averaged = flip_averaged(left_edge)(np.zeros((1, 1, 4, 4), np.float32))
    assert np.allclose(averaged[0, 0, :, 0], 0.5) and np.allclose(averaged[0, 0, :, -1], 0.5)
    assert np.allclose(averaged[0, 0, :, 1:-1], 0.0)


# -- resizing (vesselcli.imaging.preprocess), as segment uses it: to model scale and back ----------------

@settings(max_examples=80, deadline=None)
@given(height=st.integers(1, 700), width=st.integers(1, 700), factor=st.floats(0.1, 8.0))
def test_resizing_to_a_scale_and_back_restores_the_shape(height, width, factor) -> None:
    shape = scaled_shape((height, width), factor)
    small = resize_image(np.zeros((height, width), np.float32), shape)
    assert small.shape == shape
    assert resize_image(small, (height, width)).shape == (height, width)
    assert resize_mask(resize_mask(np.ones((height, width), bool), shape), (height, width)).all()


@pytest.mark.parametrize("factor", [0.25, 0.5, 2.0, 3.0])
def test_resizing_a_smooth_image_there_and_back_keeps_its_values(factor) -> None:
    y, x = np.mgrid[0:240, 0:320].astype(np.float32)
    smooth = 0.5 + 0.4 * np.sin(x / 37.0) * np.cos(y / 23.0)
    back = resize_image(resize_image(smooth, scaled_shape(smooth.shape, factor)), smooth.shape)
    assert np.abs(back - smooth)[8:-8, 8:-8].max() < 0.02


def test_prepare_brings_any_camera_to_the_model_fov_diameter() -> None:
    pre = Preprocessing(fov_diameter=540.0)
    for size in (300, 540, 2000):
        rgb = np.zeros((size, size + size // 3, 3), np.uint8)
        fov = np.zeros(rgb.shape[:2], bool)
        yy, xx = np.ogrid[: rgb.shape[0], : rgb.shape[1]]
        fov[(yy - size / 2) ** 2 + (xx - rgb.shape[1] / 2) ** 2 <= (size / 2 - 1) ** 2] = True
        x, small_fov = prepare(rgb, fov, pre)
        assert x.shape[1:] == small_fov.shape
        rows = np.flatnonzero(small_fov.any(axis=1))
        diameter = rows[-1] - rows[0] + 1
        expected = size * scale_factor(fov, pre) if scale_factor(fov, pre) != 1.0 else size
        assert abs(diameter - expected) <= 3
        assert abs(diameter - 540) <= 540 * pre.scale_tolerance + 3


# --- Images that fit one tile run at their own size (TileSpec.multiple) -----------------------

def row_ramp_plus(batch: np.ndarray) -> np.ndarray:
    """Output depends on the pixel's row inside the tile: wrong geometry gives wrong values."""
    rows = np.arange(batch.shape[2], dtype=np.float32)[None, None, :, None]
    return batch + rows


def test_an_image_that_fits_a_tile_runs_at_its_own_size_rounded_to_the_multiple() -> None:
    image = random_image(1, 584, 565)
    seen: list[tuple[int, ...]] = []

    def predictor(batch: np.ndarray) -> np.ndarray:
        seen.append(batch.shape)
        return row_ramp_plus(batch)

    out = sliding_window(image, predictor, TileSpec(592, 64, 2, multiple=8))
    assert seen == [(1, 1, 584, 568)]  # not the 592x592 square: 6% fewer pixels through the network
    np.testing.assert_allclose(out, image + np.arange(584, dtype=np.float32)[None, :, None], rtol=0, atol=1e-5)


def test_tile_shapes_count_the_pixels_the_network_sees() -> None:
    spec = TileSpec(592, 64, 2, multiple=8)
    assert tile_shapes((584, 565), spec) == [(584, 568)]
    assert tile_shapes((584, 565), TileSpec(592, 64, 2)) == [(592, 592)]  # fixed-size engines: square tiles
    # Larger images: the fewest tiles along each axis, each as short as they allow: 823 rows need
    # 2 tiles of at least (823 + 64) / 2 = 443.5 -> 448 rows, where 592x592 squares fed 1.4x the pixels.
    assert tile_shapes((823, 549), spec) == [(448, 552)] * 2
    assert tile_count((823, 549), spec) == 2
    assert tile_shapes((823, 549), TileSpec(592, 64, 2)) == [(592, 592)] * 2
    # The calibre rule's 3504x2336 photograph (FOV box 1168x1632 at factor 0.5), segment's default tiling:
    assert tile_shapes((1168, 1632), TileSpec(1024, 64, 2, multiple=8)) == [(616, 848)] * 4


@settings(max_examples=300, deadline=None)
@given(length=st.integers(1, 6000), size_in_multiples=st.integers(1, 128), multiple=st.sampled_from([1, 8, 16, 32]),
       overlap_fraction=st.floats(0.0, 0.95))
def test_tiles_shaped_to_the_image_are_the_fewest_and_shortest_that_cover_it(length, size_in_multiples, multiple,
                                                                             overlap_fraction) -> None:
    size = size_in_multiples * multiple
    overlap = min(size - 1, int(size * overlap_fraction))
    spec = TileSpec(size, overlap, 1, multiple=multiple)
    side = tile_side(length, spec)
    assert side % multiple == 0 and side <= size
    padded = max(length, side)
    if padded == side:  # one tile: the axis rounded up to the multiple
        assert side == -(-length // multiple) * multiple
        return
    origins = tile_origins(padded, side, overlap)
    fewest = len(tile_origins(length, size, overlap))  # square tiles of the full size
    assert len(origins) == fewest
    assert origins[0] == 0 and origins[-1] + side == length
    assert all(b - a <= side - overlap for a, b in pairwise(origins))  # the overlap asked, at least
    if side - multiple > overlap:  # one multiple shorter and the same count would not cover the axis
        shorter = side - multiple
        assert (fewest - 1) * (shorter - overlap) + shorter < length


def where_in_the_tile_2d(batch: np.ndarray) -> np.ndarray:
    """``where_in_the_tile`` for tiles of any (h, w): channel 0 the row, channel 1 the column."""
    n, _, h, w = batch.shape
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.broadcast_to(np.stack([rows, cols]), (n, 2, h, w)).copy()


@pytest.mark.parametrize(("shape", "size", "overlap"), [((40, 100), 32, 8), ((100, 9), 24, 4), ((60, 70), 48, 16)])
def test_tiles_shaped_to_the_image_blend_with_each_axis_own_gaussian(shape, size, overlap) -> None:
    h, w = shape
    spec = TileSpec(size, overlap, 3, "gaussian", multiple=8)
    th, tw = tile_shape(shape, spec)
    assert (th, tw) != (size, size)  # not squares: the case this test is for
    out = sliding_window(np.zeros((1, h, w), np.float32), where_in_the_tile_2d, spec)
    ph, pw = max(h, th), max(w, tw)
    rows = blended_position(ph, tile_origins(ph, th, overlap if ph > th else 0), gaussian_1d(th))[:h]
    cols = blended_position(pw, tile_origins(pw, tw, overlap if pw > tw else 0), gaussian_1d(tw))[:w]
    np.testing.assert_allclose(out[0], np.broadcast_to(rows[:, None], shape), atol=1e-5)
    np.testing.assert_allclose(out[1], np.broadcast_to(cols[None, :], shape), atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(height=st.integers(1, 90), width=st.integers(1, 90), size_in_multiples=st.integers(1, 6),
       multiple=st.sampled_from([1, 4, 8]), overlap_fraction=st.floats(0.0, 0.95), batch=st.integers(1, 4))
def test_reconstruction_is_exact_with_tiles_shaped_to_the_image(height, width, size_in_multiples, multiple,
                                                               overlap_fraction, batch) -> None:
    size = size_in_multiples * multiple
    overlap = min(size - 1, int(size * overlap_fraction))
    image = random_image(1, height, width, seed=height * 100 + width)
    out = sliding_window(image, plus_one, TileSpec(size, overlap, batch, multiple=multiple))
    assert np.array_equal(out, image + 1.0)


def test_batches_hold_one_tile_shape_and_every_image_comes_back_in_order() -> None:
    images = [("a", random_image(1, 20, 30, 1)), ("b", random_image(1, 20, 30, 2)),
              ("c", random_image(1, 21, 30, 3)), ("d", random_image(1, 40, 45, 4)), ("e", random_image(1, 20, 30, 5))]
    shapes: list[tuple[int, ...]] = []

    def predictor(batch: np.ndarray) -> np.ndarray:
        shapes.append(batch.shape)
        return batch * 2.0

    spec = TileSpec(32, 8, 3, blend="constant", multiple=8)
    results = list(stream_tiled(images, predictor, spec))
    assert [key for key, _, _ in results] == ["a", "b", "c", "d", "e"]
    for (key, image), (_, out, error) in zip(images, results):
        assert error is None
        np.testing.assert_allclose(out, image * 2.0, rtol=0, atol=1e-5)
    # a, b and c (21 rows, rounded to 24) share a batch; d (40x45) is cut into four 24x32 tiles
    # (the fewest of at most 32, as short as they allow), the same shape, so they and e follow.
    assert shapes == [(3, 1, 24, 32), (3, 1, 24, 32), (2, 1, 24, 32)]


def test_a_negative_multiple_is_refused() -> None:
    with pytest.raises(ValueError, match="multiple"):
        TileSpec(32, 8, 1, multiple=-1)
