"""``--save-probabilities``: 0 outside the FOV, and ``level / 255 >= threshold`` gives exactly the mask."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from vesselcli.cli import main
from vesselcli.imaging.fov import detect_fov
from vesselcli.io.imageio import read_grey, read_image, read_mask
from vesselcli.run.stages import first_vessel_level, probability_levels


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@settings(max_examples=300, deadline=None)
@given(threshold=st.floats(1e-6, 1 - 1e-6), seed=st.integers(0, 2**32 - 1))
def test_the_saved_levels_rethresholded_give_the_mask_exactly(threshold: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # probabilities crowded around the threshold (where rounding to 1/255 would cross it), and anywhere
    near = threshold + rng.uniform(-2 / 255, 2 / 255, size=(40, 50))
    probability = np.clip(np.where(rng.random((40, 50)) < 0.7, near, rng.random((40, 50))), 0, 1).astype(np.float32)
    probability[0, :3] = np.float32(threshold)  # exactly at the threshold: a vessel
    fov = rng.random((40, 50)) < 0.8
    mask = (probability >= threshold) & fov
    levels = probability_levels(probability, mask, fov, threshold)
    assert levels.dtype == np.uint8
    assert np.array_equal(levels.astype(np.float64) / 255 >= threshold, mask)
    assert not levels[~fov].any()
    rounded = np.floor(probability.astype(np.float64) * 255 + 0.5)
    assert np.abs(levels[fov] - rounded[fov]).max(initial=0) <= 1  # still the probability, to a level


@pytest.mark.parametrize("threshold", [1e-9, 0.5, 0.49803921568627450, 100 / 255, 0.999, 1 - 1e-9])
def test_the_first_vessel_level_is_the_lowest_at_or_above_the_threshold(threshold: float) -> None:
    level = first_vessel_level(threshold)
    assert 1 <= level <= 255 and level / 255 >= threshold and (level - 1) / 255 < threshold


def _check_outputs(out: Path, name: str, fov: np.ndarray) -> float:
    threshold = json.loads((out / "run.json").read_text())["settings"]["threshold"]
    mask = read_grey(out / "masks" / f"{name}.png") > 0
    levels = read_grey(out / "probabilities" / f"{name}.png")
    assert levels.dtype == np.uint8 and levels.shape == mask.shape == fov.shape
    assert np.array_equal(levels.astype(np.float64) / 255 >= threshold, mask)  # the README's rule
    assert not levels[~fov].any() and levels[fov].any()
    assert len(np.unique(levels)) > 100  # a probability map, not a second mask
    return threshold


def _same_scores(out: Path, truth: Path, threshold: float, *fov: object) -> None:
    """score of the maps at the threshold = score of the masks, with and without the FOV."""
    for extra in ((), fov):
        figures = []
        for folder in ("masks", "probabilities"):
            result = invoke("score", out / folder, truth, "--threshold", threshold, "--json", *extra)
            assert result.exit_code == 0, result.output
            report = json.loads(result.stdout)
            figures.append([(p["tp"], p["fp"], p["fn"], p["tn"]) for p in report["pairs"]])
        assert figures[0] == figures[1]


@pytest.mark.data
def test_drive_probabilities_rethresholded_are_the_mask(tmp_path: Path, drive_root: Path, model_file: Path) -> None:
    image = drive_root / "test" / "images" / "01_test.tif"
    out = tmp_path / "out"
    result = invoke("segment", image, "--out", out, "--model", model_file, "--save-probabilities", "--no-overlays", "-q")
    assert result.exit_code == 0, result.output
    threshold = _check_outputs(out, "01_test", detect_fov(read_image(image)))  # the FOV segment detected
    _same_scores(out, drive_root / "test" / "1st_manual", threshold, "--fov", drive_root / "test" / "mask")
    # Must show: the same OUT with other options is refused (exit 2, the message); the same options resume
    result = invoke("segment", image, "--out", out, "--model", model_file, "--no-overlays", "--threshold", 0.9)
    assert result.exit_code == 2 and f"threshold: {threshold} -> 0.9" in result.output
    assert "probabilities: true -> false" in result.output and "--overwrite" in result.output
    result = invoke("segment", image, "--out", out, "--model", model_file, "--save-probabilities", "--no-overlays")
    assert result.exit_code == 0 and "skipping 1 image(s) already done" in result.output


@pytest.mark.data
def test_chase_probabilities_rethresholded_are_the_mask(tmp_path: Path, chase_root: Path, model_file: Path) -> None:
    image = chase_root / "images" / "Image_11L.jpg"
    out = tmp_path / "out"
    result = invoke("segment", image, "--out", out, "--model", model_file, "--fov", chase_root / "fov",
                    "--save-probabilities", "--no-overlays", "-q")
    assert result.exit_code == 0, result.output
    threshold = _check_outputs(out, "Image_11L", read_mask(chase_root / "fov" / "Image_11L_mask.gif"))
    _same_scores(out, chase_root / "1st_manual", threshold, "--fov", chase_root / "fov")
