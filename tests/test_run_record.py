"""OUT/run.json and the one results.csv schema: a rerun with other settings is refused, the same resumes."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from segment_fakes import DarkIsVessel, write_fundus, write_mask
from vesselcli.cli.segment import segment
from vesselcli.run.report import COLUMNS
from vesselcli.run.runrecord import differences, output_settings

SETTINGS = dict(threshold=0.5, fov_diameter=540.0, precision="fp32", tile_size=592, tile_overlap=64, tta=False,
                gt_dir=None, gt_pattern=None, fov_dir=None, overlays=True, probabilities=False)


def invoke(*args: object):
    return CliRunner().invoke(segment, [str(a) for a in args], catch_exceptions=False)


def header(out: Path) -> tuple[str, ...]:
    with open(out / "results.csv", newline="", encoding="utf-8") as handle:
        return tuple(next(csv.reader(handle)))


def test_the_same_model_elsewhere_is_the_same_setting_and_other_values_are_listed(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder / "m.onnx").write_bytes(b"model bytes")
    old = output_settings(model=tmp_path / "a" / "m.onnx", **SETTINGS)
    assert old["model_sha256"] == hashlib.sha256(b"model bytes").hexdigest()
    assert differences(old, output_settings(model=tmp_path / "b" / "m.onnx", **SETTINGS)) == []
    (tmp_path / "b" / "m.onnx").write_bytes(b"other bytes")
    new = output_settings(model=tmp_path / "b" / "m.onnx", **{**SETTINGS, "threshold": 0.9, "probabilities": True})
    changed = {name: (before, after) for name, before, after in differences(old, new)}
    assert set(changed) == {"model", "model_sha256", "threshold", "probabilities"}
    assert changed["threshold"] == (0.5, 0.9) and changed["probabilities"] == (False, True)
    # a setting one version records and another does not differs
    assert differences({**old, "extra": 1}, old) == [("extra", 1, None)]


def test_a_rerun_with_other_settings_is_refused_and_says_what_differs(tmp_path: Path, fake_engine: DarkIsVessel) -> None:
    write_fundus(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    assert invoke(tmp_path / "in", "--out", out, "--tile-size", 128, "-q").exit_code == 0
    mask = (out / "masks" / "a.png").read_bytes()
    record = json.loads((out / "run.json").read_text())
    calls = len(fake_engine.batches)
    result = invoke(tmp_path / "in", "--out", out, "--tile-size", 128, "--threshold", 0.9, "--save-probabilities")
    assert result.exit_code == 2, result.output
    assert "threshold: 0.5 -> 0.9" in result.output and "probabilities: false -> true" in result.output
    assert "--overwrite" in result.output and "another --out" in result.output
    assert len(fake_engine.batches) == calls and (out / "masks" / "a.png").read_bytes() == mask
    assert not (out / "probabilities").exists() and json.loads((out / "run.json").read_text()) == record
    # settings that shape no output may differ: the run resumes as before
    result = invoke(tmp_path / "in", "--out", out, "--tile-size", 128, "--workers", 3, "--batch-size", 5)
    assert result.exit_code == 0 and "skipping 1 image(s) already done" in result.output
    assert len(fake_engine.batches) == calls
    # --overwrite redoes it with the new settings and records them
    result = invoke(tmp_path / "in", "--out", out, "--tile-size", 128, "--threshold", 0.9, "--save-probabilities",
                    "--overwrite", "-q")
    assert result.exit_code == 0 and (out / "probabilities" / "a.png").is_file()
    assert json.loads((out / "run.json").read_text())["settings"]["threshold"] == 0.9


def test_run_json_holds_the_settings_and_what_the_run_did(tmp_path: Path, fake_engine: DarkIsVessel) -> None:
    write_fundus(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "b.png").write_bytes(b"broken")
    out = tmp_path / "out"
    assert invoke(tmp_path / "in", "--out", out, "--tile-size", 100, "--no-overlays", "-q").exit_code == 1
    record = json.loads((out / "run.json").read_text())
    assert record["settings"] == {
        "model": None, "model_sha256": None, "threshold": 0.5, "scale_fov_diameter_px": 120.0, "scale_rule": "calibre", "precision": "fp32",
        "tile_size": 104, "tile_overlap": 64, "tta": False, "gt": None, "gt_pattern": None, "fov": None,
        "masks": True, "overlays": False, "probabilities": False, "pixel_size_um": None,
    }
    assert record["engine"] == "fake" and record["device"] == "cpu" and record["version"]
    assert record["counts"] == {"done": 1, "failed": 1, "skipped": 0}
    assert record["started"] <= record["finished"] and record["duration_s"] >= 0
    assert record["machine"]["cpus"] >= 1 and record["options"]["workers"] == 2
    assert record["options"]["inputs"] == [str(tmp_path / "in")] and record["options"]["quiet"] is True


def test_every_run_writes_the_one_schema_with_or_without_ground_truth(tmp_path: Path, fake_engine: DarkIsVessel) -> None:
    import numpy as np

    write_fundus(tmp_path / "in" / "a.png")
    write_mask(tmp_path / "gt" / "a.png", np.zeros((96, 110), bool))
    assert invoke(tmp_path / "in", "--out", tmp_path / "plain", "--tile-size", 128, "-q").exit_code == 0
    assert invoke(tmp_path / "in", "--out", tmp_path / "truth", "--gt", tmp_path / "gt", "--tile-size", 128, "-q").exit_code == 0
    assert header(tmp_path / "plain") == header(tmp_path / "truth") == COLUMNS
    with open(tmp_path / "plain" / "results.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    assert row["status"] == "ok" and row["vessel_density"] and row["iou"] == row["auc"] == ""


def test_results_without_a_run_record_are_refused_as_of_unknown_settings(tmp_path: Path, fake_engine: DarkIsVessel) -> None:
    write_fundus(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    assert invoke(tmp_path / "in", "--out", out, "--tile-size", 128, "-q").exit_code == 0
    (out / "run.json").unlink()  # as an older vesselseg left it
    result = invoke(tmp_path / "in", "--out", out, "--tile-size", 128)
    assert result.exit_code == 2 and "no run.json" in result.output and "--overwrite" in result.output
    old = "image,width,height,fov_pixels,vessel_pixels,vessel_density,seconds,status,error\n"
    (out / "results.csv").write_text(old + "a.png,110,96,100,10,0.1,1.0,ok,\n")  # an older version's header
    result = invoke(tmp_path / "in", "--out", out, "--tile-size", 128)
    assert result.exit_code == 2 and "not written by this version" in result.output
    assert (out / "results.csv").read_text().startswith(old)
    assert invoke(tmp_path / "in", "--out", out, "--tile-size", 128, "--overwrite", "-q").exit_code == 0
    assert header(out) == COLUMNS


# -- symbolic links planted inside OUT -------------------------------------------------------
def _outside(tmp_path: Path) -> Path:
    outside = tmp_path / "elsewhere"
    outside.mkdir(exist_ok=True)
    (outside / "keep.txt").write_text("not vesselseg's")
    return outside


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("entry", ["masks", "overlays", "probabilities", "results.csv", "run.json", ".vesselseg.lock"])
def test_a_link_where_an_output_of_out_goes_is_refused(tmp_path: Path, fake_engine: DarkIsVessel, entry: str) -> None:
    write_fundus(tmp_path / "in" / "a.png")
    outside = _outside(tmp_path)
    target = outside if entry in ("masks", "overlays", "probabilities") else outside / "keep.txt"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / entry).symlink_to(target)
    before = _listing(outside)
    result = invoke(tmp_path / "in", "--out", tmp_path / "out", "--tile-size", 128, "--save-probabilities")
    assert result.exit_code == 2, result.output
    assert f"{tmp_path / 'out' / entry} is a symbolic link (to {target})" in result.output
    assert "remove the link or choose another --out" in result.output
    assert _listing(outside) == before and not fake_engine.batches
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [entry]


def test_a_link_at_a_sub_folder_fails_that_image_and_one_at_a_file_is_replaced(tmp_path: Path,
                                                                             fake_engine: DarkIsVessel) -> None:
    write_fundus(tmp_path / "in" / "sub" / "a.png")
    write_fundus(tmp_path / "in" / "b.png", seed=1)
    outside = _outside(tmp_path)
    (tmp_path / "out" / "masks").mkdir(parents=True)
    (tmp_path / "out" / "masks" / "sub").symlink_to(outside)
    (tmp_path / "out" / "masks" / "b.png").symlink_to(outside / "keep.txt")
    before = _listing(outside)
    result = invoke(tmp_path / "in", "--out", tmp_path / "out", "--tile-size", 128)
    assert result.exit_code == 1
    assert f"error: sub/a.png: {tmp_path / 'out' / 'masks' / 'sub'} is a symbolic link" in result.output
    assert _listing(outside) == before
    mask = tmp_path / "out" / "masks" / "b.png"
    assert not mask.is_symlink() and mask.read_bytes().startswith(b"\x89PNG")  # the link replaced, not followed


def test_a_run_started_before_the_width_columns_resumes_and_gains_them(tmp_path: Path, fake_engine: DarkIsVessel) -> None:
    import numpy as np

    from vesselcli.run.report import ADDED_COLUMNS

    for name in ("a.png", "b.png"):
        write_fundus(tmp_path / "in" / name)
        write_mask(tmp_path / "gt" / name, np.zeros((96, 110), bool))
    out = tmp_path / "out"
    args = (tmp_path / "in", "--out", out, "--gt", tmp_path / "gt", "--tile-size", 128, "-q")
    assert invoke(*args).exit_code == 0
    # As the previous version left it: no width columns, and b.png not done yet.
    with open(out / "results.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["image"] == "a.png"]
    old = [c for c in COLUMNS if c not in ADDED_COLUMNS]
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, old, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    calls = len(fake_engine.batches)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert header(out) == COLUMNS
    with open(out / "results.csv", newline="") as handle:
        table = {r["image"]: r for r in csv.DictReader(handle)}
    assert set(table) == {"a.png", "b.png"} and table["a.png"]["iou"] == rows[0]["iou"]  # a.png kept, not redone
    assert table["a.png"]["width_ratio"] == "" and len(fake_engine.batches) > calls  # b.png run now
    # Anything else missing is still refused.
    with open(out / "results.csv", "w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerow([c for c in COLUMNS if c != "dice"])
    refused = invoke(*args)
    assert refused.exit_code == 2 and "it lacks dice" in " ".join(refused.output.split())
