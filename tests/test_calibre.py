"""The calibre scale rule: vessel width from a mask, the factor it picks, and ``segment`` with it."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from segment_fakes import DarkIsVessel
from vesselcli import pipeline
from vesselcli.calibre import MAX_CHANGE, REFERENCE_WIDTH, calibre_factor, edge_width
from vesselcli.config import SegmentConfig
from vesselcli.imageio import read_grey


def ribbons(width: int, count: int = 4, length: int = 300) -> np.ndarray:
    mask = np.zeros((count * (width + 10) + 10, length + 20), bool)
    for i in range(count):
        top = 10 + i * (width + 10)
        mask[top : top + width, 10 : 10 + length] = True
    return mask


@pytest.mark.parametrize("width", [1, 2, 3, 5, 8])
def test_edge_width_of_ribbons_is_their_width(width: int) -> None:
    assert edge_width(ribbons(width)) == pytest.approx(width, rel=0.04)


def test_edge_width_of_an_empty_mask_is_zero() -> None:
    assert edge_width(np.zeros((10, 10), bool)) == 0.0


def test_calibre_factor_brings_the_width_to_the_reference_within_the_limits() -> None:
    thick = ribbons(round(2 * REFERENCE_WIDTH))
    width = edge_width(thick)
    assert calibre_factor(thick, 1.0) == pytest.approx(REFERENCE_WIDTH / width)  # about 0.5: shrink
    assert calibre_factor(thick, 0.2) == pytest.approx(0.2 * REFERENCE_WIDTH / width)  # scales with the look's factor
    assert calibre_factor(ribbons(1), 0.2) == pytest.approx(0.2 * REFERENCE_WIDTH / edge_width(ribbons(1)))  # thin: look closer
    assert calibre_factor(ribbons(1), 0.2) > 0.5
    assert calibre_factor(ribbons(40), 1.0) == pytest.approx(1.0 / MAX_CHANGE)  # never beyond the limit
    assert calibre_factor(np.zeros((10, 10), bool), 0.7) == 0.7  # nothing found: keep the scale


def _stripes(height: int, width: int, stripe: int) -> np.ndarray:
    """``(H, W, 3) uint8``: a lit disc with dark horizontal stripes ``stripe`` px wide."""
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - height / 2) ** 2 + (xx - width / 2) ** 2 <= (0.45 * min(height, width)) ** 2
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[disc] = (200, 110, 60)
    rgb[disc & (yy % (4 * stripe) < stripe)] = (120, 40, 20)
    return rgb


def test_segment_with_the_calibre_rule_looks_first_then_runs_at_the_vessels_scale(tmp_path: Path) -> None:
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_stripes(200, 200, 12)).save(src / "thick.png")  # 12 px vessels: far above the reference
    runs = {}
    for rule in ("fov", "calibre"):
        engine = DarkIsVessel(fov_diameter=180.0)  # the FOV rule leaves this image at its size
        cfg = SegmentConfig(inputs=(src,), out=tmp_path / rule, tile_size=64, tile_overlap=16, batch_size=1, scale_rule=rule)
        report = pipeline.run(cfg, pipeline.plan(cfg), engine)
        assert (report.done, report.failed) == (1, 0)
        runs[rule] = (engine.batches, read_grey(cfg.out / "masks" / "thick.png") > 0)
    fov_tiles, calibre_tiles = len(runs["fov"][0]), len(runs["calibre"][0])
    # calibre: the first look (as many tiles as the FOV rule's pass), then a pass at a smaller
    # scale (fewer tiles); without the rescale it would be twice the FOV rule's tiles.
    assert fov_tiles + 1 <= calibre_tiles < 2 * fov_tiles - 4
    fov_mask, calibre_mask = runs["fov"][1], runs["calibre"][1]
    assert calibre_mask.shape == (200, 200)
    agreement = 2 * np.count_nonzero(fov_mask & calibre_mask) / (np.count_nonzero(fov_mask) + np.count_nonzero(calibre_mask))
    assert agreement > 0.85  # the same stripes, found at about a third of the scale


def test_segment_with_the_calibre_rule_keeps_the_scale_when_vessels_already_fit(tmp_path: Path) -> None:
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_stripes(120, 120, 3)).save(src / "fine.png")  # 3 px vessels: about the reference
    engine = DarkIsVessel(fov_diameter=108.0)
    cfg = SegmentConfig(inputs=(src,), out=tmp_path / "out", tile_size=64, tile_overlap=16, batch_size=1, scale_rule="calibre")
    fov_only = DarkIsVessel(fov_diameter=108.0)
    cfg_fov = SegmentConfig(inputs=(src,), out=tmp_path / "fov", tile_size=64, tile_overlap=16, batch_size=1)
    pipeline.run(cfg, pipeline.plan(cfg), engine)
    pipeline.run(cfg_fov, pipeline.plan(cfg_fov), fov_only)
    assert len(engine.batches) == 2 * len(fov_only.batches)  # the first look, and the same pass again
    with open(cfg.out / "results.csv", newline="") as handle:
        assert [r["status"] for r in csv.DictReader(handle)] == ["ok"]


def test_an_unknown_scale_rule_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scale_rule must be one of fov, calibre"):
        SegmentConfig(inputs=(tmp_path,), out=tmp_path / "o", scale_rule="disc")


def test_the_scale_rule_is_a_setting_of_the_run(tmp_path: Path) -> None:
    from segment_fakes import write_fundus
    from vesselcli.runrecord import SettingsMismatchError

    write_fundus(tmp_path / "in" / "a.png")
    cfg = SegmentConfig(inputs=(tmp_path / "in",), out=tmp_path / "out", tile_size=64, tile_overlap=16, scale_rule="calibre")
    assert pipeline.run_settings(cfg, DarkIsVessel())["scale_rule"] == "calibre"
    pipeline.run(cfg, pipeline.plan(cfg), DarkIsVessel())
    again = SegmentConfig(inputs=(tmp_path / "in",), out=tmp_path / "out", tile_size=64, tile_overlap=16)
    with pytest.raises(SettingsMismatchError, match="scale_rule"):
        pipeline.run(again, pipeline.plan(again), DarkIsVessel())
