"""Export: ONNX models that pass onnx.checker, describe themselves, match PyTorch on random
and real DRIVE tiles for both the 'same' and the report's valid-convolution networks, refuse
to be written when they do not, and the shipped ONNX model matches a fresh export (same metadata,
logits within 1e-4 on a DRIVE tile)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from model_factory import VALID_TILE, exported, make_checkpoint, TINY_SAME
from vesselcli.engines import open_engine, sigmoid
from vesselcli.export.onnx_export import (
    LOGIT_ATOL, MIN_DICE, OPSET, ExportConfig, ParityError, check_parity, drive_tiles, export_checkpoint, mask_dice,
    random_batches,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_PT = ROOT / "vesselcli" / "models" / "default.pt"
SHIPPED_ONNX = ROOT / "vesselcli" / "models" / "default.onnx"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("export")
    return {name: exported(folder, name) for name in ("same", "valid")}


def test_onnx_passes_the_checker_with_a_current_opset_and_dynamic_axes(models) -> None:
    import onnx

    proto = onnx.load(str(models["same"][1]))
    onnx.checker.check_model(proto, full_check=True)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, False, True, True]  # batch, 1, H, W
    keys = {p.key for p in proto.metadata_props}
    assert {"vesselseg.preprocessing", "vesselseg.threshold", "vesselseg.model_args", "vesselseg.data", "vesselseg.version"} <= keys


def test_valid_convolution_model_is_exported_for_its_fixed_tile(models) -> None:
    engine = open_engine(models["valid"][1], device="cpu")
    assert engine.info.fixed_tile == (VALID_TILE, VALID_TILE)
    assert engine.infer(np.zeros((3, 1, VALID_TILE, VALID_TILE), np.float32)).shape == (3, 1, VALID_TILE, VALID_TILE)
    with pytest.raises(ValueError, match=f"{VALID_TILE}x{VALID_TILE} tiles only"):
        engine.infer(np.zeros((1, 1, VALID_TILE + 16, VALID_TILE), np.float32))


@pytest.mark.parametrize("name", ["same", "valid"])
def test_onnxruntime_matches_torch_on_random_inputs(models, name) -> None:
    checkpoint, onnx = models[name]
    info = open_engine(onnx, device="cpu").info
    parity = check_parity(onnx, checkpoint, random_batches(info, 64))
    assert len(parity.cases) >= 2
    assert parity.max_abs_diff <= LOGIT_ATOL and parity.min_case_dice >= MIN_DICE


@pytest.mark.data
@pytest.mark.parametrize("name", ["same", "valid"])
def test_onnxruntime_matches_torch_on_real_drive_tiles(models, name, drive_root) -> None:
    checkpoint, onnx = models[name]
    info = open_engine(onnx, device="cpu").info
    tile = info.fixed_tile[0] if info.fixed_tile else 128
    tiles = drive_tiles(drive_root, info.preprocessing, tile)
    assert tiles.shape[0] >= 8 and tiles.shape[1:] == (1, tile, tile) and tiles.std() > 0.5  # real, standardised images
    parity = check_parity(onnx, checkpoint, {"drive": tiles})
    assert parity.max_abs_diff <= LOGIT_ATOL and parity.min_case_dice >= MIN_DICE


def test_parity_check_catches_a_model_that_computes_something_else(models, tmp_path) -> None:
    other = make_checkpoint(tmp_path / "other.pt", TINY_SAME, seed=7)
    info = open_engine(models["same"][1], device="cpu").info
    with pytest.raises(ParityError, match="disagree"):
        check_parity(models["same"][1], other, random_batches(info, 64))


def test_a_failed_parity_check_leaves_no_model_behind(models, tmp_path, monkeypatch) -> None:
    import vesselcli.export.onnx_export as export

    def broken(onnx, checkpoint, batches, **kwargs):
        raise ParityError("simulated disagreement")

    monkeypatch.setattr(export, "check_parity", broken)
    config = ExportConfig(models["same"][0], tmp_path / "out", "tiny", tile=64, tensorrt=False)
    with pytest.raises(ParityError):
        export_checkpoint(config, say=lambda line: None)
    assert list((tmp_path / "out").iterdir()) == []


def test_export_writes_the_model_and_says_why_tensorrt_was_skipped(models, tmp_path) -> None:
    lines: list[str] = []
    config = ExportConfig(models["same"][0], tmp_path, "tiny", tile=64, drive_root=tmp_path / "no-drive", update_shipped=tmp_path / "pkg" / "default.onnx")
    report = export_checkpoint(config, say=lines.append)
    assert report.onnx == tmp_path / "tiny.onnx" and report.onnx.is_file()
    assert report.shipped and report.shipped.read_bytes() == report.onnx.read_bytes()
    assert report.real_tiles.startswith("skipped: DRIVE not found")
    if importlib.util.find_spec("tensorrt") is None:
        assert report.tensorrt.startswith("skipped: the tensorrt package is not installed") and report.plan is None


@pytest.mark.parametrize(("gpu", "dices", "outcome", "kept"), [
    (False, [], "skipped: no NVIDIA GPU driver found on this machine", None),
    (True, [0.995], "built tiny-fp16.plan; masks vs ONNX Runtime FP32: Dice 0.9950", "tiny-fp16.plan"),
    (True, [0.5, 0.999], "built tiny-fp32.plan; masks vs ONNX Runtime FP32: Dice 0.9990", "tiny-fp32.plan"),
    (True, [0.5, 0.98], "no TensorRT engine matched", None),
])
def test_tensorrt_step_keeps_a_plan_only_when_its_masks_match(models, tmp_path, monkeypatch, gpu, dices, outcome, kept) -> None:
    """The TensorRT step's decisions, on any machine: TensorRT and the GPU are stood in for."""
    import sys
    import types

    import vesselcli.engines.select as select
    import vesselcli.export.onnx_export as export

    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    monkeypatch.setattr(select, "nvidia_gpu_present", lambda: gpu)

    def build_plan(onnx, out_dir, profile, fp16, device, say):
        plan = Path(out_dir) / f"tiny-{'fp16' if fp16 else 'fp32'}.plan"
        plan.write_bytes(b"plan")
        plan.with_suffix(".json").write_text("{}")
        return plan

    measured = iter(dices)
    monkeypatch.setattr(export, "build_plan", build_plan)
    monkeypatch.setattr(export, "validate_plan", lambda plan, onnx, tiles: next(measured))
    config = ExportConfig(models["same"][0], tmp_path, "tiny", tile=64)
    report = export.ExportReport(models["same"][1], open_engine(models["same"][1], device="cpu").info, export.Parity(), "")
    said: list[str] = []
    tiles = np.zeros((1, 1, 64, 64), np.float32)
    if kept is None and gpu:
        with pytest.raises(export.ExportError, match=outcome):
            export._tensorrt_step(config, report, tiles, said.append)
    else:
        assert export._tensorrt_step(config, report, tiles, said.append) == outcome
    assert report.plan == (tmp_path / kept if kept else None)
    assert report.plan_dice == (dices[-1] if kept else None)
    assert sorted(p.name for p in tmp_path.glob("*.plan")) == ([kept] if kept else [])  # rejected plans are deleted
    assert sum(line.startswith("rejected tiny-") for line in said) == len(dices) - bool(kept)


def test_export_command_exit_codes(models, tmp_path) -> None:
    from click.testing import CliRunner

    from vesselcli.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["export", str(models["same"][0]), "--out", str(tmp_path), "--onnx-only", "--tile", "64"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and (tmp_path / "tiny-same.onnx").is_file()
    assert "TensorRT: skipped: --onnx-only was given" in result.output
    missing = runner.invoke(main, ["export", str(tmp_path / "nope.pt"), "--out", str(tmp_path)])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    bad_tile = runner.invoke(main, ["export", str(models["same"][0]), "--tile", "100"])
    assert bad_tile.exit_code == 2 and "multiple of 16" in bad_tile.output


def test_info_command_names_the_engine_and_why(models) -> None:
    from click.testing import CliRunner

    from vesselcli.cli import main

    result = CliRunner().invoke(main, ["info", "--model", str(models["same"][1]), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "chosen" in result.output and "onnxruntime" in result.output and "training data" in result.output
    missing = CliRunner().invoke(main, ["info", "--model", "nope.onnx"])
    assert missing.exit_code == 2 and "does not exist" in missing.output


# The shipped model (vesselcli/models/default.{pt,onnx}, made by `python -m train.ship` and
# `vesselseg export --update-shipped`).


def _require_shipped() -> None:
    missing = [p.name for p in (SHIPPED_PT, SHIPPED_ONNX) if not p.is_file()]
    if missing:
        pytest.fail(
            f"shipped model file(s) {', '.join(missing)} missing from vesselcli/models: run "
            "`python -m train.ship runs/default/best.pt` then `vesselseg export --update-shipped`"
        )


@pytest.mark.data
def test_shipped_onnx_matches_a_fresh_export_of_the_shipped_checkpoint(tmp_path, drive_root) -> None:
    _require_shipped()
    config = ExportConfig(SHIPPED_PT, tmp_path, "default", drive_root=drive_root, tensorrt=False)
    report = export_checkpoint(config, say=lambda line: None)  # includes ORT vs torch on real tiles
    assert any(case.name.startswith("DRIVE") for case in report.parity.cases)
    shipped = open_engine(SHIPPED_ONNX, device="cpu", precision="fp32")  # the float32 file itself, not its INT8 variant
    fresh = open_engine(report.onnx, device="cpu", precision="fp32")
    assert shipped.info == fresh.info, "the shipped ONNX model's metadata is stale: run `vesselseg export --update-shipped`"
    tiles = drive_tiles(drive_root, shipped.info.preprocessing, 256, images=1)
    a, b = shipped.infer(tiles), fresh.infer(tiles)
    assert float(np.abs(a - b).max()) <= 1e-4, "the shipped ONNX model differs from default.pt: run `vesselseg export --update-shipped`"
    threshold = shipped.info.threshold
    assert mask_dice(sigmoid(a) >= threshold, sigmoid(b) >= threshold) >= MIN_DICE


def test_default_model_opens_without_arguments() -> None:
    _require_shipped()
    engine = open_engine(device="cpu")
    assert engine.name == "onnxruntime"
    assert any("DRIVE" in d for d in engine.info.metadata["data"])
    assert open_engine(engine="torch", device="cpu").info.threshold == engine.info.threshold
