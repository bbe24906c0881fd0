"""Thinning without scikit-image: by hand on small shapes, pixel for pixel against scikit-image."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from vesselcli.analysis.thinning import skeletonize
from vesselcli.io.imageio import read_mask


def _skimage_skeletonize():
    module = pytest.importorskip("skimage.morphology", reason="scikit-image is the reference: pip install '.[test]'")
    return module.skeletonize


def test_an_upright_ellipse_thins_to_its_vertical_axis() -> None:
    rows, cols = np.ogrid[0:9, 0:9]
    ellipse = (rows - 4) ** 2 / 3.0 + (cols - 4) ** 2 < 9  # 9 rows tall, 5 columns wide
    expected = np.zeros((9, 9), bool)
    expected[3:7, 4] = True
    assert np.array_equal(skeletonize(ellipse), expected)


def test_one_pixel_wide_lines_are_their_own_skeleton() -> None:
    mask = np.zeros((20, 30), bool)
    mask[5, 3:25] = True
    for i in range(10):
        mask[8 + i, 2 + i] = True
    assert np.array_equal(skeletonize(mask), mask)


def test_edges_of_the_image_count_as_background_and_nothing_changes_in_place() -> None:
    mask = np.ones((5, 12), np.uint8)
    before = mask.copy()
    skel = skeletonize(mask)
    assert skel.dtype == bool and skel.shape == mask.shape
    assert not skel[[0, 3, 4]].any() and not skel[:, [0, -1]].any()  # the image's edges are background
    assert skel[2, 2:9].all()  # the bar thins to about its middle row
    assert np.array_equal(mask, before)


def test_it_refuses_what_is_not_a_2d_mask() -> None:
    with pytest.raises(ValueError, match="2-D mask, got shape"):
        skeletonize(np.zeros((3, 4, 5), bool))


def test_random_masks_thin_exactly_as_scikit_image() -> None:
    reference = _skimage_skeletonize()
    rng = np.random.default_rng(16)
    for _ in range(300):
        height, width = (int(v) for v in rng.integers(1, 48, size=2))
        mask = rng.random((height, width)) < rng.uniform(0.1, 0.95)
        if rng.random() < 0.5:  # blobs and bars as well as speckle
            mask = np.kron(mask[: height // 3 + 1, : width // 3 + 1], np.ones((3, 3), bool))[:height, :width]
        assert np.array_equal(skeletonize(mask), reference(mask)), mask.astype(int)


def test_drive_and_chase_vessel_maps_thin_exactly_as_scikit_image(drive_root, chase_root) -> None:
    reference = _skimage_skeletonize()
    files = sorted((drive_root / "test" / "1st_manual").iterdir())[:10]
    files += sorted((chase_root / "1st_manual").glob("Image_1*_1stHO.png"))[:4]
    for path in files:
        mask = read_mask(path)
        assert np.array_equal(skeletonize(mask), reference(mask)), path.name


def test_measuring_morphology_imports_neither_scikit_image_nor_scipy() -> None:
    code = ("import sys, numpy as np; from vesselcli.analysis.morphology import morphology; "
            "m = np.zeros((64, 64), bool); m[20:24, 5:60] = True; morphology(m, np.ones_like(m)); "
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('skimage', 'scipy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
