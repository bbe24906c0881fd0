"""The calibre scale rule: vessel width from a mask, the factor it picks, and ``segment`` with it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segment_fakes import DarkIsVessel
from vesselcli.run import pipeline
from vesselcli.imaging.calibre import MAX_CHANGE, MIN_FACTOR, REFERENCE_WIDTH, WIDTH_BAND, calibre_factor, edge_width, first_factor, next_factor
from vesselcli.run.config import SegmentConfig
from vesselcli.io.imageio import read_grey


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
    four = ribbons(4)
    assert calibre_factor(four, 1.0) == pytest.approx(REFERENCE_WIDTH / edge_width(four))  # about 0.7: shrink
    assert calibre_factor(ribbons(1), 0.6) == pytest.approx(0.6 * REFERENCE_WIDTH / edge_width(ribbons(1)))  # thin: enlarge
    assert calibre_factor(ribbons(12), 1.0) == MIN_FACTOR  # never shrunk more than 1 / MIN_FACTOR
    assert calibre_factor(ribbons(1), 1.0, reference=10.0) == pytest.approx(MAX_CHANGE)  # never beyond the limit
    assert calibre_factor(np.zeros((10, 10), bool), 0.7) == 0.7  # nothing found: keep the scale


def test_next_factor_keeps_widths_inside_the_band_and_rescales_the_others() -> None:
    assert WIDTH_BAND[0] <= REFERENCE_WIDTH <= WIDTH_BAND[1]
    assert next_factor(ribbons(3), 1.0) is None
    assert next_factor(np.zeros((10, 10), bool), 1.0) is None
    assert next_factor(ribbons(5), 1.0) == pytest.approx(REFERENCE_WIDTH / edge_width(ribbons(5)))  # about 0.58
    assert next_factor(ribbons(1), 0.8) == pytest.approx(0.8 * REFERENCE_WIDTH / edge_width(ribbons(1)))


def test_first_factor_floors_the_shrink_and_only_checks_unfloored_looks() -> None:
    assert first_factor(0.166) == (MIN_FACTOR, False)  # a 3504x2336 photograph: run at 0.5, no check
    assert first_factor(0.59) == (0.59, True)
    assert first_factor(1.8) == (1.8, True)


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


def test_segment_with_the_calibre_rule_keeps_the_first_look_when_vessels_already_fit(tmp_path: Path) -> None:
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_stripes(120, 120, 3)).save(src / "fine.png")  # 3 px vessels: inside the band
    masks = {}
    for rule in ("fov", "calibre"):
        engine = DarkIsVessel(fov_diameter=108.0)
        cfg = SegmentConfig(inputs=(src,), out=tmp_path / rule, tile_size=64, tile_overlap=16, batch_size=1, scale_rule=rule)
        report = pipeline.run(cfg, pipeline.plan(cfg), engine)
        assert (report.done, report.failed) == (1, 0)
        masks[rule] = (len(engine.batches), read_grey(cfg.out / "masks" / "fine.png"))
    assert masks["calibre"][0] == masks["fov"][0]  # no second pass: DRIVE-sized images get no slower
    assert np.array_equal(masks["calibre"][1], masks["fov"][1])


def test_an_unknown_scale_rule_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scale_rule must be one of fov, calibre"):
        SegmentConfig(inputs=(tmp_path,), out=tmp_path / "o", scale_rule="disc")


def test_the_scale_rule_is_a_setting_of_the_run(tmp_path: Path) -> None:
    from segment_fakes import write_fundus
    from vesselcli.run.runrecord import SettingsMismatchError

    write_fundus(tmp_path / "in" / "a.png")
    cfg = SegmentConfig(inputs=(tmp_path / "in",), out=tmp_path / "out", tile_size=64, tile_overlap=16)
    assert pipeline.run_settings(cfg, DarkIsVessel())["scale_rule"] == "calibre"  # the default since issue 15
    pipeline.run(cfg, pipeline.plan(cfg), DarkIsVessel())
    again = SegmentConfig(inputs=(tmp_path / "in",), out=tmp_path / "out", tile_size=64, tile_overlap=16, scale_rule="fov")
    with pytest.raises(SettingsMismatchError, match="scale_rule"):
        pipeline.run(again, pipeline.plan(again), DarkIsVessel())


def test_ray_actors_take_the_same_first_look_as_the_local_pipeline(tmp_path: Path) -> None:
    """The Ray path's actor (called in-process here: no Ray needed) rescales like a local run."""
    from PIL import Image

    from vesselcli.io.discover import OutputPaths
    from vesselcli.run import ray_data

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_stripes(200, 200, 12)).save(src / "thick.png")
    engine = DarkIsVessel(fov_diameter=180.0)
    cfg = SegmentConfig(inputs=(src,), out=tmp_path / "local", tile_size=64, tile_overlap=16, batch_size=1,
                        scale_rule="calibre")
    the_plan = pipeline.plan(cfg)
    assert pipeline.run(cfg, the_plan, engine).done == 1
    actor = object.__new__(ray_data.Segmenter)  # what __init__ sets, with the fake engine
    actor.engine, actor.predict, actor.hook = engine, pipeline.predictor(engine, False), None
    actor.spec, actor.threshold, actor.overlays = cfg.tile_spec(8), 0.5, True
    job = pipeline.load_one(the_plan.items[0], the_plan.partners[the_plan.items[0].path], engine.info.preprocessing, cfg, 8)
    assert job.first_look
    first_factor_seen = job.factor
    out = actor({"payload": np.array([ray_data._pack(job)], dtype=object)})
    job, probability = ray_data._unpack(out["payload"][0])
    assert job.factor < first_factor_seen  # rescaled, as the local run did
    paths = OutputPaths(tmp_path / "ray")
    (tmp_path / "ray" / "masks").mkdir(parents=True)
    (tmp_path / "ray" / "overlays").mkdir()
    assert pipeline.finish_one(job, probability, 0.5, paths, cfg).status == "ok"
    assert (tmp_path / "ray" / "masks" / "thick.png").read_bytes() == (tmp_path / "local" / "masks" / "thick.png").read_bytes()


def test_cpu_ray_actors_load_look_and_write_like_the_local_pipeline(tmp_path: Path) -> None:
    """``SegmentOnCpu`` (a CPU-only cluster's actor, called in-process: no Ray needed) takes
    ``(Item, Partners)`` pickles and writes the local run's mask, first look included."""
    import csv
    import pickle
    from dataclasses import replace

    from PIL import Image

    from vesselcli.io.discover import OutputPaths
    from vesselcli.run import ray_data

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_stripes(200, 200, 12)).save(src / "thick.png")
    (src / "broken.png").write_bytes(b"not an image")
    engine = DarkIsVessel(fov_diameter=180.0)
    cfg = SegmentConfig(inputs=(src,), out=tmp_path / "local", tile_size=64, tile_overlap=16, batch_size=1,
                        scale_rule="calibre")
    the_plan = pipeline.plan(cfg)
    assert pipeline.run(cfg, the_plan, engine).done == 1
    ray_cfg = replace(cfg, out=tmp_path / "ray")
    actor = object.__new__(ray_data.SegmentOnCpu)  # what __init__ sets, with the fake engine
    actor.engine, actor.predict, actor.hook = engine, pipeline.predictor(engine, False), None
    actor.spec, actor.threshold, actor.overlays = cfg.tile_spec(8), 0.5, True
    actor.config, actor.info, actor.paths = ray_cfg, engine.info, OutputPaths(tmp_path / "ray")
    (tmp_path / "ray" / "masks").mkdir(parents=True)
    (tmp_path / "ray" / "overlays").mkdir()
    payload = np.array([pickle.dumps((item, the_plan.partners[item.path])) for item in the_plan.items], dtype=object)
    answers = [pickle.loads(blob) for blob in actor({"payload": payload})["payload"]]  # (row, identifier cells)
    assert [cells for _, cells in answers] == [None, None]  # no --keep-identifiers: none travel back
    rows = {r.image: r.row() for r, _ in answers}
    with open(tmp_path / "local" / "results.csv", newline="", encoding="utf-8") as handle:
        local = {r["image"]: r for r in csv.DictReader(handle)}
    for name in ("thick.png", "broken.png"):
        assert {k: v for k, v in rows[name].items() if k != "seconds"} == \
            {k: v for k, v in local[name].items() if k != "seconds"}, name
    assert local["thick.png"]["status"] == "ok" and local["broken.png"]["status"] == "error"
    for output in ("masks/thick.png", "overlays/thick.jpg"):
        assert (tmp_path / "ray" / output).read_bytes() == (tmp_path / "local" / output).read_bytes(), output
