"""OUT/report.html: built from the outputs alone, self-contained, capped, and rendered by a real browser."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from vesselcli.analysis.html_report import SAMPLE, WORST, ReportError, build_report, output_file, read_outputs
from vesselcli.analysis.plots import fences
from vesselcli.cli import main
from vesselcli.run.report import ImageResult, ResultsWriter


def make_run(out: Path, n: int, failed: int = 0, truth: bool = True, overlays: int | None = None) -> None:
    """A run folder: results.csv with ``n`` ok rows (+ ``failed`` error rows) and small overlays."""
    rng = np.random.default_rng(0)
    writer = ResultsWriter(out / "results.csv", [])
    for i in range(n):
        dice = float(rng.uniform(0.7, 0.9)) if truth else None
        density = 0.5 if i == 3 else float(rng.uniform(0.1, 0.14))  # image 3: a wrong FOV, an outlier
        figures = {"iou": dice / (2 - dice), "dice": dice, "sensitivity": 0.8, "specificity": 0.97,
                   "accuracy": 0.95, "auc": 0.97} if truth else None
        morph = {"vessel_length_px": 9000.0 + i, "mean_width_px": 3.3, "branch_points": 120, "end_points": 160,
                 "segments": 270, "tortuosity": 1.1, "fractal_dimension": 1.47, "vessel_length_mm": None,
                 "mean_width_um": None}
        writer.append(ImageResult(f"sub/img{i:05d}.png", "ok", 0.3, 64, 48, 1000, int(density * 1000), figures, morph))
    for i in range(failed):
        writer.append(ImageResult(f"bad{i}.png", "error", 0.0, error=f"not a readable image <b>#{i}</b>"))
    writer.close()
    (out / "overlays" / "sub").mkdir(parents=True)
    for i in range(n if overlays is None else overlays):
        picture = np.full((48, 64, 3), (30, 60 + i % 100, 200), np.uint8)
        cv2.imwrite(str(out / "overlays" / "sub" / f"img{i:05d}.jpg"), picture)


def test_the_page_holds_header_counts_failures_plots_and_thumbnails(tmp_path: Path) -> None:
    make_run(tmp_path, 30, failed=2)
    (tmp_path / "run.json").write_text(json.dumps({
        "version": "9.9", "engine": "onnxruntime", "device": "cpu", "started": "2026-11-29T10:00:00Z",
        "duration_s": 12.5, "counts": {"done": 30, "failed": 2, "skipped": 7},
        "settings": {"model": "default.onnx", "model_sha256": "ab" * 32, "threshold": 0.51}}))
    page = build_report(tmp_path).read_text()
    assert "<title>vesselseg report" in page and "9.9" in page and "ab" * 32 in page and "onnxruntime" in page
    assert "<b>30</b> done" in page and "<b>2</b> failed" in page and "<b>7</b> skipped" in page
    assert "not a readable image &lt;b&gt;#1&lt;/b&gt;" in page and "<b>#1</b>" not in page  # escaped
    assert page.count('<svg class="plot"') == 10  # density, the 7 morphology figures in px, iou, dice (not mm, um)
    # the density outlier is marked and linked to its overlay
    assert re.search(r'<a href="overlays/sub/img00003.jpg"><circle', page)
    assert page.index("Worst cases: lowest Dice") < page.index("Sample")
    assert page.count('src="data:image/jpeg;base64,') == 30
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_worst_cases_come_lowest_dice_first(tmp_path: Path) -> None:
    make_run(tmp_path, 10)
    rows = read_outputs(tmp_path).rows
    lowest = min(rows, key=lambda r: float(r["dice"]))["image"]
    page = build_report(tmp_path).read_text()
    worst = page[page.index("Worst cases"):]
    assert worst.index(lowest) == min(worst.index(r["image"]) for r in rows)


def test_without_truth_the_extreme_densities_come_first(tmp_path: Path) -> None:
    make_run(tmp_path, 40, truth=False)
    page = build_report(tmp_path).read_text()
    assert "extreme densities" in page and "lowest Dice" not in page
    worst = page[page.index("Worst cases"):page.index("Sample")]
    assert "img00003.png" in worst  # the 0.5 density


def test_thumbnails_are_capped_for_a_big_run(tmp_path: Path) -> None:
    make_run(tmp_path, 400, failed=600, overlays=400)
    page = build_report(tmp_path).read_text()
    assert page.count('src="data:image/jpeg;base64,') == WORST + SAMPLE
    assert "and 100 more" in page  # failures listed up to 500


def test_a_missing_or_broken_run_json_is_a_note_and_no_results_is_an_error(tmp_path: Path) -> None:
    make_run(tmp_path, 3)
    assert "no run.json" in build_report(tmp_path).read_text()
    (tmp_path / "run.json").write_text("{not json")
    assert "run.json could not be read" in build_report(tmp_path).read_text()
    with pytest.raises(ReportError, match="point at the --out folder"):
        read_outputs(tmp_path / "overlays")


def test_output_files_are_found_by_stem_or_by_full_name(tmp_path: Path) -> None:
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "a.tif.png").write_bytes(b"x")  # a.tif and a.png shared a stem
    (tmp_path / "masks" / "b.png").write_bytes(b"x")
    assert output_file(tmp_path, "a.tif", "mask") == tmp_path / "masks" / "a.tif.png"
    assert output_file(tmp_path, "b.jpg", "mask") == tmp_path / "masks" / "b.png"
    assert output_file(tmp_path, "../../etc/passwd", "mask") is None


def test_fences_are_tukeys() -> None:
    assert fences(np.arange(1.0, 10.0)) == (-3.0, 13.0)  # Q1 3, Q3 7, IQR 4


def test_the_report_command_rebuilds_the_page_and_refuses_a_folder_without_results(tmp_path: Path) -> None:
    make_run(tmp_path / "run", 5)
    result = CliRunner().invoke(main, ["report", str(tmp_path / "run")])
    assert result.exit_code == 0 and "report.html" in result.output
    assert (tmp_path / "run" / "report.html").is_file()
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "does not exist" in result.output


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no headless Chromium (Debian: apt-get install chromium; .ci/run installs it)")


def _browse(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_chromium_renders_the_page_with_its_elements(tmp_path: Path) -> None:
    browser = _chromium()
    make_run(tmp_path / "run", 12, failed=1)
    page = build_report(tmp_path / "run")
    shot = tmp_path / "shot.png"
    _browse(browser, tmp_path / "p1", "--window-size=1200,1600", f"--screenshot={shot}", page.as_uri())
    picture = cv2.imread(str(shot))
    assert picture is not None and picture.shape[:2] == (1600, 1200)
    assert (picture < 200).any(axis=2).mean() > 0.02 and picture.std() > 20  # not blank
    dom = _browse(browser, tmp_path / "p2", "--dump-dom", page.as_uri()).stdout  # the page as rendered
    assert "<title>vesselseg report: run</title>" in dom
    assert re.search(r'<b>12</b> done', dom) and re.search(r'<b>1</b> failed', dom)
    assert '<svg class="plot"' in dom and '<img class="thumb" src="data:image/jpeg;base64,' in dom
