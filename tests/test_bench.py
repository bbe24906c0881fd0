"""The benchmark command (``python -m bench``): its measuring parts and one quick end-to-end run."""
from __future__ import annotations

import csv
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.commands import Shown, relative_to_repo
from bench.measure import Measurement, Run, run_once
from bench.report import DEFAULT_SUBJECT, FLOOR_SUBJECT, OURS_PREFIX, REPORT_SUBJECT, Results, render
from bench.workloads import count_set, fit_to_frame
from vesselcli.engines import shipped_model

ROOT = Path(__file__).resolve().parents[1]


def _allocate(mib: int) -> list[str]:
    return [sys.executable, "-c", f"import numpy as np; a = np.ones({mib} * 2**20 // 8); a += 1; print('{{\"ok\": 1}}')"]


def test_peak_memory_is_each_processs_own() -> None:
    big = run_once(_allocate(300))
    small = run_once(_allocate(10))
    assert big.peak_rss_mib >= 300
    assert small.peak_rss_mib < 200  # not polluted by the earlier, larger child
    assert big.report == {"ok": 1}


def test_a_failing_command_names_itself() -> None:
    with pytest.raises(RuntimeError, match="exited with 3"):
        run_once([sys.executable, "-c", "import sys; sys.exit(3)"])


def test_fit_to_frame_keeps_aspect_and_centres_on_black() -> None:
    rgb = np.full((584, 565, 3), 200, dtype=np.uint8)
    frame = fit_to_frame(rgb, 3504, 2336)
    assert frame.shape == (2336, 3504, 3)
    scaled_width = round(565 * 2336 / 584)
    left = (3504 - scaled_width) // 2
    assert not frame[:, : left - 1].any() and not frame[:, left + scaled_width + 1 :].any()
    assert (frame[:, left + 2 : left + scaled_width - 2] == 200).all()


def test_count_set_cycles_through_the_sources(tmp_path: Path) -> None:
    sources = []
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(name.encode())
        sources.append(tmp_path / name)
    folder = count_set(sources, 7, tmp_path / "sets")
    files = sorted(folder.iterdir())
    assert [f.read_bytes() for f in files] == [s.name.encode() for s in (sources * 3)[:7]]
    assert count_set(sources, 7, tmp_path / "sets") == folder  # reused as is


@pytest.mark.data
@pytest.mark.slow
def test_quick_bench_writes_a_well_formed_report(drive_root: Path, tmp_path: Path) -> None:
    if not shipped_model(".onnx").is_file():
        pytest.skip(f"the shipped model {shipped_model('.onnx')} is missing: run `make engine`")
    out = tmp_path / "BENCHMARKS.md"
    table = tmp_path / "results.csv"
    png = tmp_path / "chart.png"
    command = [
        sys.executable, "-m", "bench", "--data", str(drive_root.parent), "--quick",
        "--out", str(out), "--csv", str(table), "--chart", str(png), "--scratch", str(tmp_path / "scratch"),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    text = out.read_text()
    for heading in ("## Headline", "## Accuracy", "## Speed on the same DRIVE images", "## Where the time goes", "## Model cost",
                    "## Scaling with the number", "## Scaling with the image size", "## Morphology and the HTML report"):
        assert heading in text
    assert "published, not measured here" in text and "Machine: " in text
    # Commands a reader can run from the repository root: no interpreter or checkout of this machine.
    assert sys.executable not in text and f"{ROOT}/" not in text
    commands = re.findall(r"`((?:python|vesselseg) [^`]*)`", text)
    assert any(c.startswith("python -m bench.cost ") for c in commands)
    for command in commands:
        for word in shlex.split(command):
            if "/" in word and not word.startswith("/") and "{" not in word:
                assert (ROOT / word).exists(), f"{word} in `{command}` is not a path from the repository root"

    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and list(rows[0]) == ["section", "subject", "condition", "metric", "value", "unit", "machine", "date_utc"]
    speed = {(r["subject"], r["metric"]): float(r["value"]) for r in rows if r["section"] == "speed"}
    subjects = {s for s, _ in speed}
    assert any(s.startswith("Report's path") for s in subjects)
    assert any(s.startswith("I/O floor") for s in subjects)
    assert any(s.endswith("--engine onnxruntime --precision auto") for s in subjects)
    assert any(s.endswith("--engine onnxruntime --precision fp32") for s in subjects)
    stages = {r["subject"] for r in rows if r["section"] == "stages"}
    assert {"decode", "fov", "morphology", "network fp32", "network int8", "network int8 parallel", "startup int8"} <= stages
    for subject in subjects:
        assert speed[(subject, "images_per_s")] > 0 and speed[(subject, "peak_rss")] > 10
    f1 = [float(r["value"]) for r in rows if r["section"] == "accuracy" and r["subject"] == "vesselseg" and r["condition"] == "DRIVE test" and r["metric"] == "f1"]
    assert len(f1) == 1 and 0.5 < f1[0] <= 1.0
    tta = {r["metric"]: float(r["value"]) for r in rows if r["section"] == "accuracy" and r["subject"] == "vesselseg --tta" and r["condition"] == "DRIVE test"}
    assert 0.5 < tta["f1"] <= 1.0 and tta["f1_lo"] <= tta["f1"] <= tta["f1_hi"] and tta["f1_gain_lo"] <= tta["f1_gain"] <= tta["f1_gain_hi"]
    assert "| vesselseg (ours), `--tta` |" in text
    analysis = {(r["subject"], r["metric"]): float(r["value"]) for r in rows if r["section"] == "analysis"}
    assert 0 < analysis[("morphology", "ms_per_image")] and 0 < analysis[("morphology", "share_of_image_time")] < 1
    assert 0 < analysis[("report.html", "size")] < 5  # MB

    with Image.open(png) as chart:
        assert chart.format == "PNG" and chart.size[0] > 500


def test_commands_are_shown_as_run_from_the_repository_root(tmp_path: Path) -> None:
    data = tmp_path / "data"
    images = data / "DRIVE" / "test" / "images"
    images.mkdir(parents=True)
    linked = tmp_path / "scratch" / "count-20"
    linked.mkdir(parents=True)
    shown = Shown(ROOT, Path("../shared/data")).with_alias(linked, "../shared/data/DRIVE/test/images")
    model = ROOT / "vesselcli" / "__init__.py"
    command = [sys.executable, "-m", "vesselcli", "segment", str(linked), "--out", "OUT", "--model", str(model)]
    assert shown.command(command) == "python -m vesselcli segment ../shared/data/DRIVE/test/images --out OUT --model vesselcli/__init__.py"
    assert Shown(ROOT, Path("data")).path(str(data)) == str(data)  # not the data folder given: left alone
    assert relative_to_repo(Path("../shared/data"), ROOT) == Path("../shared/data")
    assert relative_to_repo(ROOT.parent / "shared" / "data", ROOT) == Path("../shared/data")


def _measurement(subject: str, wall: float, images: int = 20, peak: float = 100.0) -> Measurement:
    return Measurement(subject, f"{images} images", images, "cmd", (Run(wall, peak, {"loop_s": wall - 1.0}),))


def test_speed_table_and_headline_state_the_ratios() -> None:
    results = Results(command="python -m bench", machine=_MACHINE, quick=False)
    results.speed = [
        _measurement(REPORT_SUBJECT, 100.0),
        _measurement(DEFAULT_SUBJECT, 10.0),
        _measurement(OURS_PREFIX + "onnxruntime --precision fp32", 8.0),  # faster, but not what a user runs
        _measurement(FLOOR_SUBJECT, 2.5),
    ]
    results.counts = [_measurement(DEFAULT_SUBJECT, 10.0), _measurement(DEFAULT_SUBJECT, 55.0, images=200)]
    text = render(results, "chart.png")
    ours_row = next(line for line in text.splitlines() if line.startswith(f"| {DEFAULT_SUBJECT} | 10.00"))
    assert "| 10.0x | 4.0x |" in ours_row  # 100 s / 10 s faster than the report; 10 s / 2.5 s of the floor
    assert "**10.0x faster**" in text and "**4.0x** the floor" in text  # the headline is the default command's
    assert "--precision fp32`: 12.5x" in text
    # Once started: 180 images in 45 s = 4 images/s against 20 images in 99 s inside the report's loop.
    assert "4.00 images/s" in text and f"**{4.0 / (20 / 99.0):.1f}x**" in text


_MACHINE = {
    "date_utc": "2026-01-01 00:00 UTC", "cpu": "test CPU", "cores": 2, "memory_gib": 8.0, "os": "Linux", "commit": "abc",
    "python": "3.11", "torch": "2", "onnxruntime": "1", "numpy": "2", "opencv-python-headless": "4", "pillow": "10",
}


def test_an_option_run_is_compared_with_the_default_image_by_image() -> None:
    from bench.accuracy import paired_gain, summarise

    base = {f"{i:02d}.png": {"f1": 0.80 + 0.01 * i, "iou": 0.70, "auc": 0.98} for i in range(10)}
    # The option raises F1 by 0.002 on every image but one, which it lowers by 0.001.
    other = {k: {**v, "f1": v["f1"] + (0.002 if k != "03.png" else -0.001)} for k, v in base.items()}
    other["extra.png"] = {"f1": 0.1, "iou": 0.1}  # an image only one run has is not paired
    figures = summarise(base)
    assert figures["images"] == 10 and figures["f1"] == pytest.approx(0.845)
    # The spread of the images' F1 (0.80-0.89) shows in the interval; a constant figure has none.
    assert figures["f1_lo"] < 0.845 < figures["f1_hi"] and figures["f1_hi"] - figures["f1_lo"] > 0.02
    assert figures["iou_lo"] == pytest.approx(0.70) and figures["iou_hi"] == pytest.approx(0.70)
    assert "auc_lo" not in figures  # intervals only for INTERVAL_FIGURES
    gain = paired_gain(base, other)
    assert gain["f1_gain"] == pytest.approx((9 * 0.002 - 0.001) / 10)
    assert gain["f1_better"] == 9
    # Paired: the image-to-image spread of F1 cancels, so the gain's interval is narrow and above 0.
    assert 0 < gain["f1_gain_lo"] < gain["f1_gain"] < gain["f1_gain_hi"] < 0.0025
    assert gain["iou_gain"] == 0 and gain["iou_better"] == 0 and "iou_whole_image_gain" not in gain


def test_accuracy_section_gives_intervals_and_the_option_rows() -> None:
    results = Results(command="python -m bench", machine=_MACHINE, quick=False)
    results.accuracy = {"DRIVE test": {"images": 20.0, "f1": 0.8215, "f1_lo": 0.8155, "f1_hi": 0.8287, "iou": 0.6974,
                                       "iou_lo": 0.6884, "iou_hi": 0.7078, "auc": 0.9792}}
    results.accuracy_options = {"--tta": {"DRIVE test": {
        "images": 20.0, "f1": 0.8231, "f1_lo": 0.8166, "f1_hi": 0.8304, "iou": 0.6996, "iou_lo": 0.69, "iou_hi": 0.71,
        "f1_gain": 0.0015, "f1_gain_lo": 0.0010, "f1_gain_hi": 0.0020, "f1_better": 18.0}}}
    results.accuracy_commands = {"DRIVE test": "vesselseg segment X --out OUT --gt Y"}
    text = render(results, None)
    assert "| **vesselseg (ours)** | DRIVE test (20 images, inside FOV) | **0.8215** [0.8155, 0.8287] | 0.6974 [0.6884, 0.7078] |" in text
    assert "| vesselseg (ours), `--tta` | DRIVE test (20 images, inside FOV) | 0.8231 [0.8166, 0.8304] |" in text
    assert "- DRIVE test: F1 +0.0015 [+0.0010, +0.0020], higher on 18 of 20 images." in text
    assert "DRIVE test F1 inside the FOV **0.8215** [0.8155, 0.8287]" in text  # the headline too


def test_scaleout_section_states_the_ray_ratio_and_the_million_image_plan() -> None:
    from bench.scaleout import ONE_PROCESS, RAY_LOCAL, csv_rows, plan_figures

    results = Results(command="python -m bench", machine=_MACHINE, quick=False)
    results.scaleout = [_measurement(ONE_PROCESS, 100.0, images=200), _measurement(RAY_LOCAL, 120.0, images=200)]
    figures = plan_figures(results.scaleout)
    assert figures["ray_over_one_process"] == pytest.approx(1.2)
    # 2 images/s per node: 1e6 / 2 / 86400 = 5.8 node-days, so 6 nodes for one day
    assert figures["million_one_day_cpu_nodes"] == 6 and figures["million_cpu_node_days"] == pytest.approx(5.787, abs=1e-3)
    text = render(results, None)
    assert "| vesselseg segment --ray local | 200 | 1 | 120.0 | 1.67 | 1.20x |" in text
    assert "**2.00 images/s**" in text and "**6 such nodes**" in text and "not measured (no GPU" in text
    assert ["scaleout", "plan", "this machine", "ray_over_one_process", 1.2, ""] in csv_rows(results.scaleout)


def test_scaleout_alternates_the_two_paths_and_reports_each_median(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    import bench.scaleout as scaleout

    order: list[str] = []
    walls = iter([10.0, 16.0, 30.0, 15.0, 11.0, 99.0])  # one, Ray, one, Ray, one, Ray

    def fake_measure(subject, condition, images, command_for, scratch, repeats, cwd=None):  # noqa: ANN001, ANN202
        order.append(subject)
        return Measurement(subject, condition, images, " ".join(command_for(Path("OUT"))), (Run(next(walls), 1.0, {}),))

    monkeypatch.setattr(scaleout, "measure", fake_measure)
    one, ray = scaleout.measure_scaleout(tmp_path, 200, tmp_path, 3, tmp_path)
    assert order == [scaleout.ONE_PROCESS, scaleout.RAY_LOCAL] * 3
    assert (one.subject, len(one.runs), one.wall_s) == (scaleout.ONE_PROCESS, 3, 11.0)
    assert (ray.subject, len(ray.runs), ray.wall_s) == (scaleout.RAY_LOCAL, 3, 16.0)
    assert "--ray local" in ray.command and "--ray" not in one.command
