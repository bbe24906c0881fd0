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
