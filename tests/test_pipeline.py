"""The streaming pipeline with a numpy engine: outputs, error rows, resume, stop, lock, disk errors."""
from __future__ import annotations

import csv
import errno
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segment_fakes import DarkIsVessel, fundus, write_fundus, write_mask
from vesselcli.run import pipeline, stages
from vesselcli.run.config import SegmentConfig
from vesselcli.io.imageio import read_grey
from vesselcli.io.lock import LockedError, OutputLock


def config(tmp_path: Path, *inputs: Path, **options) -> SegmentConfig:
    options.setdefault("tile_size", 64)
    options.setdefault("tile_overlap", 16)
    options.setdefault("batch_size", 3)
    return SegmentConfig(inputs=tuple(inputs) or (tmp_path / "in",), out=tmp_path / "out", **options)


def run(cfg: SegmentConfig, engine: DarkIsVessel | None = None, **kwargs):
    return pipeline.run(cfg, pipeline.plan(cfg), engine or DarkIsVessel(), **kwargs)


def rows(cfg: SegmentConfig) -> list[dict[str, str]]:
    with open(cfg.out / "results.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_every_image_gets_a_mask_of_its_own_size_an_overlay_and_a_row(tmp_path: Path) -> None:
    src = tmp_path / "in"
    write_fundus(src / "a.png", 96, 110, seed=1)
    write_fundus(src / "nested" / "deeper" / "b.jpg", 150, 130, seed=2)
    Image.fromarray(fundus(80, 80, 3)[..., 1]).save(src / "grey.tif")  # 8-bit grey
    Image.fromarray(np.dstack([fundus(70, 90, 4), np.full((70, 90), 255, np.uint8)])).save(src / "rgba.png")
    Image.fromarray(fundus(64, 64, 5)[..., 0].astype(np.uint16) * 257).save(src / "deep16.png")  # 16-bit grey
    before = files_under(tmp_path)
    cfg = config(tmp_path, save_probabilities=True)
    report = run(cfg)
    assert (report.done, report.failed, report.exit_code) == (5, 0, 0)
    expected = {"a": (96, 110), "nested/deeper/b": (150, 130), "grey": (80, 80), "rgba": (70, 90), "deep16": (64, 64)}
    for key, shape in expected.items():
        mask = read_grey(cfg.out / "masks" / f"{key}.png")
        assert mask.shape == shape and set(np.unique(mask)) <= {0, 255}
        assert 0 < (mask == 255).mean() < 0.5  # the dark lines, not the whole disc
        assert mask[0, 0] == 0  # the black corner is outside the FOV
        assert (cfg.out / "overlays" / f"{key}.jpg").is_file()
        assert read_grey(cfg.out / "probabilities" / f"{key}.png").shape == shape
    table = rows(cfg)
    assert sorted(r["image"] for r in table) == ["a.png", "deep16.png", "grey.tif", "nested/deeper/b.jpg", "rgba.png"]
    assert all(r["status"] == "ok" and r["error"] == "" for r in table)
    a = next(r for r in table if r["image"] == "a.png")
    assert (a["width"], a["height"]) == ("110", "96")
    assert float(a["vessel_density"]) == pytest.approx(int(a["vessel_pixels"]) / int(a["fov_pixels"]), abs=1e-6)
    # nothing outside OUT changed
    assert {f for f in files_under(tmp_path) if not f.startswith("out")} == before


def test_broken_files_are_error_rows_and_the_rest_goes_on(tmp_path: Path) -> None:
    src = tmp_path / "in"
    write_fundus(src / "good.png", 80, 80)
    (src / "empty.png").write_bytes(b"")
    (src / "text.jpg").write_text("this is not an image")
    whole = (write_fundus(tmp_path / "whole.png", 90, 90)).read_bytes()
    (src / "truncated.png").write_bytes(whole[: len(whole) // 2])
    write_fundus(src / "huge.png", 100, 100)
    cfg = config(tmp_path, max_pixels=100 * 100 - 1)
    report = run(cfg)
    assert (report.done, report.failed, report.exit_code) == (1, 4, 1)
    errors = {r["image"]: r["error"] for r in rows(cfg) if r["status"] == "error"}
    assert "empty" in errors["empty.png"]
    assert "not a readable image" in errors["text.jpg"]
    assert "damaged or truncated" in errors["truncated.png"]
    assert "--max-pixels" in errors["huge.png"] and "9,999" in errors["huge.png"]
    assert all("\n" not in e and "Traceback" not in e for e in errors.values())
    assert not (cfg.out / "masks" / "empty.png").exists()


def test_the_engine_is_fed_full_batches_across_images(tmp_path: Path) -> None:
    for i in range(7):
        write_fundus(tmp_path / "in" / f"{i}.png", 96, 120, seed=i)
    engine = DarkIsVessel()
    cfg = config(tmp_path, tile_size=104, tile_overlap=8, batch_size=4, workers=3)
    assert run(cfg, engine).done == 7
    sizes = [shape[0] for shape in engine.batches]
    assert sizes == [4] * 7  # 2 x 2 tiles per image, 28 in all, batched across images
    # Tiles shaped to the image (the same for images of one size): each FOV box, a little over
    # 104 px each way at the model's scale, is cut into two tiles per axis no longer than they need.
    shapes = {shape[2:] for shape in engine.batches}
    assert len(shapes) == 1 and all(side <= 104 // 2 + 24 for side in shapes.pop())


def test_tiles_are_rounded_up_to_the_engine_multiple(tmp_path: Path) -> None:
    write_fundus(tmp_path / "in" / "a.png")
    engine = DarkIsVessel(tile_multiple=32)
    run(config(tmp_path, tile_size=70, tile_overlap=10), engine)
    assert {shape[2:] for shape in engine.batches} == {(96, 96)}


def test_ground_truth_is_scored_inside_the_fov_and_bad_partners_are_error_rows(tmp_path: Path) -> None:
    src, gt, fov = tmp_path / "in", tmp_path / "gt", tmp_path / "fov"
    rgb = fundus(96, 110)
    write_fundus(src / "01_test.png", 96, 110)
    write_mask(gt / "01_manual1.gif", rgb[..., 1] < 60)  # the dark lines
    write_mask(fov / "01_test_mask.gif", rgb[..., 0] > 0)
    write_fundus(src / "02_test.png", 96, 110)
    write_mask(gt / "02_manual1.gif", np.zeros((50, 60), bool))  # wrong size
    write_fundus(src / "03_test.png")
    write_mask(gt / "03_manual1.png", np.zeros((96, 110), bool))
    write_mask(gt / "03_gt.png", np.zeros((96, 110), bool))  # ambiguous
    write_fundus(src / "04_test.png")  # no annotation at all
    cfg = config(tmp_path, gt_dir=gt, fov_dir=fov)
    the_plan = pipeline.plan(cfg)
    assert [i.name for i in the_plan.unannotated] == ["04_test.png"]
    report = pipeline.run(cfg, the_plan, DarkIsVessel())
    table = {r["image"]: r for r in rows(cfg)}
    first = table["01_test.png"]
    assert first["status"] == "ok" and float(first["dice"]) > 0.7 and float(first["auc"]) > 0.9
    assert int(first["fov_pixels"]) == int((rgb[..., 0] > 0).sum())
    assert "50x60" not in table["02_test.png"]["error"]
    assert "60x50" in table["02_test.png"]["error"] and "110x96" in table["02_test.png"]["error"]
    assert "03_gt.png" in table["03_test.png"]["error"] and table["03_test.png"]["status"] == "error"
    assert table["04_test.png"]["status"] == "ok" and table["04_test.png"]["dice"] == ""
    assert (report.done, report.failed) == (2, 2)


def test_a_rerun_skips_images_done_and_redoes_the_rest_without_duplicate_rows(tmp_path: Path) -> None:
    src = tmp_path / "in"
    for name in ("a", "b", "c"):
        write_fundus(src / f"{name}.png", seed=ord(name))
    (src / "d.png").write_bytes(b"")  # fails the first time
    cfg = config(tmp_path)
    assert run(cfg).failed == 1
    (cfg.out / "masks" / "b.png").unlink()  # a mask lost: b must be redone
    write_fundus(src / "d.png", seed=4)  # fixed: d must be redone
    engine = DarkIsVessel()
    report = run(cfg, engine)
    assert (report.skipped, report.done, report.failed, report.exit_code) == (2, 2, 0, 0)
    table = rows(cfg)
    assert sorted(r["image"] for r in table) == ["a.png", "b.png", "c.png", "d.png"]
    assert all(r["status"] == "ok" for r in table)
    report = run(config(tmp_path, overwrite=True))
    assert (report.skipped, report.done) == (0, 4)
    assert len(rows(cfg)) == 4


def test_overwrite_leaves_no_output_of_the_earlier_settings_behind(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_fundus(tmp_path / "in" / f"{name}.png", seed=ord(name))
    assert run(config(tmp_path, save_probabilities=True)).done == 2
    out = tmp_path / "out"
    assert files_under(out / "overlays") == {"a.jpg", "b.jpg"} and files_under(out / "probabilities") == {"a.png", "b.png"}
    (tmp_path / "in" / "b.png").write_bytes(b"")  # b fails this time: its earlier mask must not stand beside its error row
    report = run(config(tmp_path, overlays=False, overwrite=True))
    assert (report.done, report.failed) == (1, 1)
    assert files_under(out / "masks") == {"a.png"}
    assert files_under(out / "overlays") == set() and files_under(out / "probabilities") == set()
    assert {r["image"]: r["status"] for r in rows(config(tmp_path))} == {"a.png": "ok", "b.png": "error"}


def test_overwrite_deletes_nothing_through_a_link_inside_out(tmp_path: Path) -> None:
    write_fundus(tmp_path / "in" / "sub" / "a.png", seed=1)
    assert run(config(tmp_path)).done == 1
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "a.png").write_bytes(b"not ours")
    (tmp_path / "out" / "masks" / "sub" / "a.png").unlink()
    (tmp_path / "out" / "masks" / "sub").rmdir()
    (tmp_path / "out" / "masks" / "sub").symlink_to(elsewhere, target_is_directory=True)
    report = run(config(tmp_path, overwrite=True))
    assert (elsewhere / "a.png").read_bytes() == b"not ours"  # the overwrite did not reach through the link
    assert report.failed == 1 and report.done == 0  # the write refuses the link: an error row


def test_stopping_mid_run_leaves_whole_files_and_the_rerun_finishes(tmp_path: Path) -> None:
    for i in range(12):
        write_fundus(tmp_path / "in" / f"{i:02d}.png", seed=i)
    stop = threading.Event()
    engine = DarkIsVessel(on_infer=lambda calls: stop.set() if calls == 2 else None)
    cfg = config(tmp_path, tile_size=128, tile_overlap=8, batch_size=2, workers=2)
    report = run(cfg, engine, stop=stop)
    assert report.remaining > 0 and report.failed == 0 and report.exit_code == 1
    table = rows(cfg)
    assert len(table) == report.done == len({r["image"] for r in table})
    masks = sorted(p.name for p in (cfg.out / "masks").iterdir())
    assert masks == sorted(r["image"] for r in table)  # every row has its mask, no stray files
    assert not list(cfg.out.rglob(".tmp-*"))
    again = run(cfg)
    assert (again.skipped, again.done, again.exit_code) == (report.done, 12 - report.done, 0)
    assert sorted(r["image"] for r in rows(cfg)) == [f"{i:02d}.png" for i in range(12)]


def test_a_second_run_into_the_same_folder_is_refused(tmp_path: Path) -> None:
    write_fundus(tmp_path / "in" / "a.png")
    cfg = config(tmp_path)
    cfg.out.mkdir()
    with OutputLock(cfg.out / ".vesselseg.lock"):
        with pytest.raises(LockedError, match="another vesselseg run .*pid %d.*choose another --out" % os.getpid()):
            run(cfg)
    assert run(cfg).done == 1  # released


def test_a_full_disk_stops_the_run_and_keeps_what_was_written(tmp_path: Path, monkeypatch) -> None:
    for i in range(6):
        write_fundus(tmp_path / "in" / f"{i}.png", seed=i)
    real = stages.write_atomic
    calls = {"n": 0}

    def filling_disk(path: Path, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] > 4:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(stages, "write_atomic", filling_disk)
    cfg = config(tmp_path, workers=1)
    report = run(cfg)
    assert "No space left on device" in report.fatal and report.exit_code == 1
    table = rows(cfg)
    assert 1 <= len(table) <= 2 and all(r["status"] == "ok" for r in table)
    for r in table:
        assert read_grey(cfg.out / "masks" / r["image"]).shape == (96, 110)
    monkeypatch.setattr(stages, "write_atomic", real)
    assert run(cfg).exit_code == 0 and len(rows(cfg)) == 6


def test_exif_orientation_is_applied_to_the_mask_and_overlay(tmp_path: Path) -> None:
    img = Image.fromarray(fundus(60, 100))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    img.save(tmp_path / "in.jpg", exif=exif.tobytes())
    cfg = config(tmp_path, tmp_path / "in.jpg")
    run(cfg)
    assert read_grey(cfg.out / "masks" / "in.png").shape == (100, 60)
    assert Image.open(cfg.out / "overlays" / "in.jpg").size == (60, 100)


def test_no_images_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("x")
    with pytest.raises(pipeline.NoImagesError, match="no images found"):
        pipeline.plan(config(tmp_path))


def test_flip_averaging_runs_four_flips_and_agrees_with_a_flip_symmetric_engine(tmp_path: Path) -> None:
    write_fundus(tmp_path / "in" / "a.png")
    plain, flipped = DarkIsVessel(), DarkIsVessel()
    run(config(tmp_path), plain)
    first = read_grey(tmp_path / "out" / "masks" / "a.png")
    run(config(tmp_path, tta=True, overwrite=True), flipped)
    assert len(flipped.batches) == 4 * len(plain.batches)
    assert np.array_equal(read_grey(tmp_path / "out" / "masks" / "a.png"), first)


def test_a_threshold_option_overrides_the_model_threshold(tmp_path: Path) -> None:
    write_fundus(tmp_path / "in" / "a.png")
    counts = []
    for threshold in (0.2, 0.5, 0.9):
        run(config(tmp_path, threshold=threshold, overwrite=True))
        counts.append(int(rows(config(tmp_path))[0]["vessel_pixels"]))
    assert counts[0] > counts[1] > counts[2] > 0


# --- Only the FOV's box goes through the network ------------------------------------------

def test_fov_box_is_the_smallest_box_holding_the_fov_starting_on_the_grid() -> None:
    from vesselcli.imaging.preprocess import fov_box

    fov = np.zeros((100, 120), bool)
    fov[29:66, 14:101] = True
    assert fov_box(fov) == (29, 14, 37, 87)
    assert fov_box(fov, 8) == (24, 8, 42, 93)  # starts moved back onto the 8-pixel grid; ends kept
    assert fov_box(np.zeros((10, 12), bool), 8) == (0, 0, 10, 12)  # no FOV: the whole image


def test_the_network_sees_only_the_fov_box_and_the_mask_comes_back_in_place(tmp_path) -> None:
    image = np.zeros((200, 180, 3), np.uint8)
    image[60:170, 40:150] = fundus(110, 110, seed=3)  # a lit disc well inside a black frame
    path = tmp_path / "off_centre.png"
    Image.fromarray(image).save(path)
    from vesselcli.io.discover import Item

    engine = DarkIsVessel(fov_diameter=100.0)  # the disc is about 99 px across: no rescaling
    job = stages.load(Item(path, path.name, path.stem), stages.Partners(), engine.info.preprocessing, 10**8, align=8)
    top, left, bh, bw = job.box
    assert job.model_shape == (200, 180) and top % 8 == 0 and left % 8 == 0
    assert job.network_input.shape == (1, bh, bw) and bh * bw < 0.5 * 200 * 180
    assert job.fov[:top].sum() == 0 and job.fov[:, :left].sum() == 0 and job.fov[top + bh :].sum() == 0
    # A probability of 1 everywhere in the box: the mask is the FOV, at the image's own place.
    mask, result = stages.finish(job, np.ones((bh, bw), np.float32), 0.5)
    assert mask.shape == (200, 180) and (mask == job.fov).all() and result.vessel_pixels == int(job.fov.sum())
