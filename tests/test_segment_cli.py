"""``vesselseg segment`` as a user runs it: the golden DRIVE run, exit codes, messages, interruption.

The golden run uses the shipped model (``vesselcli/models/default.onnx``); set
``VESSELSEG_TEST_MODEL`` to test another model file in its place.
"""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from segment_fakes import DarkIsVessel, write_fundus
from vesselcli.cli.segment import segment
from vesselcli.io.imageio import read_grey, read_mask
from vesselcli.io.lock import OutputLock
from vesselcli.analysis.metrics import confusion, dice
from vesselcli.run.report import COLUMNS

DICE_FLOOR = 0.78  # per image, inside the FOV, against 1st_manual (human agreement is ~0.79)


def invoke(*args: str):
    return CliRunner().invoke(segment, [str(a) for a in args], catch_exceptions=False)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


@pytest.mark.data
def test_golden_run_on_drive_images_meets_the_dice_floor(tmp_path: Path, drive_root: Path, model_file: Path) -> None:
    test = drive_root / "test"
    images = [test / "images" / f"{n:02d}_test.tif" for n in (1, 2, 3)]
    result = invoke(*images, "--out", tmp_path / "out", "--gt", test / "1st_manual", "--model", model_file)
    assert result.exit_code == 0, result.output
    header, table = read_csv(tmp_path / "out" / "results.csv")
    assert tuple(header) == COLUMNS
    assert [r["image"] for r in sorted(table, key=lambda r: r["image"])] == [p.name for p in images]
    for row in table:
        assert row["status"] == "ok" and float(row["dice"]) >= DICE_FLOOR, row
        assert float(row["auc"]) > 0.95 and 0.05 < float(row["vessel_density"]) < 0.2
        # the mask on disk gives the figure in the CSV: scored again against the annotation and official FOV
        key = row["image"][:2]
        mask = read_grey(tmp_path / "out" / "masks" / f"{key}_test.png")
        assert mask.shape == (584, 565) and set(np.unique(mask)) <= {0, 255}
        truth = read_mask(test / "1st_manual" / f"{key}_manual1.gif")
        fov = read_mask(test / "mask" / f"{key}_test_mask.gif")
        assert dice(confusion(mask > 0, truth, fov)) >= DICE_FLOOR
        assert (tmp_path / "out" / "overlays" / f"{key}_test.jpg").is_file()
        # morphology of the written mask: a DRIVE vessel tree is ~8,000-10,000 px of centre line,
        # ~3 px wide, with well over 50 branch points, and a box-counting dimension near 1.5
        assert 6000 < float(row["vessel_length_px"]) < 12000 and 2.0 < float(row["mean_width_px"]) < 5.0
        assert int(row["branch_points"]) > 50 and 1.3 < float(row["fractal_dimension"]) < 1.7
        assert 1.0 < float(row["tortuosity"]) < 1.3 and row["vessel_length_mm"] == ""
        # calibre against the annotation: DRIVE's drawn vessels ~2.7 px; the shipped masks ~1.1x that
        assert 2.3 < float(row["gt_mean_width_px"]) < 3.2 and 0.9 < float(row["width_ratio"]) < 1.35
        assert float(row["width_ratio"]) == pytest.approx(float(row["mean_width_px"]) / float(row["gt_mean_width_px"]), rel=1e-5)
    assert "mean Dice" in result.output
    ratios = [float(row["width_ratio"]) for row in table]
    assert f"mean width vs annotation {sum(ratios) / len(ratios):.2f}x" in " ".join(result.output.split())
    assert "lowest Dice" in (tmp_path / "out" / "report.html").read_text()


def test_no_images_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = invoke(tmp_path / "empty", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "no images found" in result.output
    assert not (tmp_path / "out").exists()


def test_an_unreadable_model_is_a_usage_error(tmp_path: Path) -> None:
    write_fundus(tmp_path / "in" / "a.png")
    bad = tmp_path / "model.onnx"
    bad.write_text("not a model")
    result = invoke(tmp_path / "in", "--out", tmp_path / "out", "--model", bad, "--engine", "onnxruntime")
    assert result.exit_code == 2 and "cannot use the model" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--tile-size", "64", "--tile-overlap", "64"], "not below --tile-size 64"),
    (["--device", "gpu"], "use auto, cpu, cuda or cuda:N"),
    (["--threshold", "1.5"], "--threshold"),
    (["--workers", "0"], "--workers"),
    (["--pixel-size", "0"], "--pixel-size"),
    (["--engine", "tflite"], "--engine"),
    (["--gt-pattern", "manual1"], "does not contain {stem}"),
    (["--gt-pattern", "{stem}_manual1.gif"], "without it"),  # the rule score applies (one check, vesselcli.io.pairing)
])
def test_bad_options_are_usage_errors_that_say_what_to_do(tmp_path: Path, args, message) -> None:
    write_fundus(tmp_path / "in" / "a.png")
    result = invoke(tmp_path / "in", "--out", tmp_path / "out", *args)
    assert result.exit_code == 2 and message in result.output


def test_some_failed_exits_1_with_one_line_per_broken_image(tmp_path: Path, fake_engine: DarkIsVessel) -> None:
    write_fundus(tmp_path / "in" / "good.png")
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    result = invoke(tmp_path / "in", "--out", tmp_path / "out", "--tile-size", "128")
    assert result.exit_code == 1
    error_lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and error_lines[0].startswith("error: broken.png: not a readable image")
    assert "Traceback" not in result.output and "1 image(s) failed" in result.output
    assert (tmp_path / "out" / "masks" / "good.png").is_file()
    assert fake_engine.closed


def test_all_done_exits_0_and_a_rerun_skips_everything(tmp_path: Path, fake_engine: DarkIsVessel) -> None:
    for name in ("a", "b"):
        write_fundus(tmp_path / "in" / f"{name}.jpg", seed=len(name))
    assert invoke(tmp_path / "in", "--out", tmp_path / "out", "--no-overlays", "-q", "--pixel-size", "12.5").exit_code == 0
    assert not (tmp_path / "out" / "overlays").exists()
    _, rows = read_csv(tmp_path / "out" / "results.csv")
    for row in rows:  # --pixel-size converts the pixel figures
        assert float(row["vessel_length_mm"]) == pytest.approx(float(row["vessel_length_px"]) * 0.0125, rel=1e-5)
        assert float(row["mean_width_um"]) == pytest.approx(float(row["mean_width_px"]) * 12.5, rel=1e-5)
    assert "2</b> done" in (tmp_path / "out" / "report.html").read_text()  # written at the end of the run
    calls = len(fake_engine.batches)
    result = invoke(tmp_path / "in", "--out", tmp_path / "out", "--no-overlays", "--pixel-size", "12.5")
    assert result.exit_code == 0 and "skipping 2 image(s) already done" in result.output
    assert len(fake_engine.batches) == calls


def test_a_second_concurrent_run_is_refused(tmp_path: Path, fake_engine: DarkIsVessel) -> None:
    write_fundus(tmp_path / "in" / "a.png")
    (tmp_path / "out").mkdir()
    with OutputLock(tmp_path / "out" / ".vesselseg.lock"):
        result = invoke(tmp_path / "in", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "another vesselseg run" in result.output
    assert not (tmp_path / "out" / "results.csv").exists()


def test_an_output_folder_that_cannot_be_made_is_a_clear_error(tmp_path: Path, fake_engine: DarkIsVessel) -> None:
    write_fundus(tmp_path / "in" / "a.png")
    (tmp_path / "a-file").write_text("x")  # (a read-only folder cannot be tested as root)
    result = invoke(tmp_path / "in", "--out", tmp_path / "a-file" / "out")
    assert result.exit_code == 2 and "choose a writable --out" in result.output
    assert "Traceback" not in result.output


@pytest.mark.data
@pytest.mark.slow
def test_sigint_stops_promptly_and_the_same_command_finishes(tmp_path: Path, drive_root: Path, model_file: Path) -> None:
    out = tmp_path / "out"
    command = [sys.executable, "-m", "vesselcli", "segment", str(drive_root / "test" / "images"), "--out", str(out),
               "--model", str(model_file), "--no-overlays", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        csv_path = out / "results.csv"
        if csv_path.is_file() and csv_path.read_text().count("\n") >= 3:  # header + 2 rows
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    assert time.monotonic() - sent < 20, "the run did not stop promptly"
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "rerun the same command" in stderr
    _, table = read_csv(out / "results.csv")
    names = [r["image"] for r in table]
    assert 2 <= len(names) < 20 and len(set(names)) == len(names)
    assert sorted(p.name for p in (out / "masks").iterdir()) == sorted(n.replace(".tif", ".png") for n in names)
    finished = subprocess.run(command, capture_output=True, env=env, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    _, table = read_csv(out / "results.csv")
    assert sorted(r["image"] for r in table) == [f"{n:02d}_test.tif" for n in range(1, 21)]
    assert all(r["status"] == "ok" for r in table)
    for mask in (out / "masks").iterdir():
        assert read_grey(mask).shape == (584, 565)
