"""Faster variants: INT8 quantization keeps the sensitive layers in float32 and the model's
description; a variant runs only when its gate passed for exactly this model; auto picks the
fastest; nothing that failed its gate ships; the shipped INT8 variant matches float32."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_factory import exported
from vesselcli.engines import ModelError, choose_engine, open_engine, shipped_model
from vesselcli.variants.record import choose, file_sha256, gate_path, variant_path, write_record

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def same(tmp_path_factory) -> tuple[Path, Path]:
    return exported(tmp_path_factory.mktemp("same"), "same")


def _record(model: Path, passed: bool = True, fp32_ms: float = 300.0, int8_ms: float = 150.0, sha: str | None = None) -> dict:
    return {
        "precision": "int8", "source": model.name, "source_sha256": sha or file_sha256(model), "passed": passed,
        "datasets": {"DRIVE training": {"images": 20, "min_dice": 0.995, "mean_dice": 0.997}},
        "f1": {"fp32": 0.82, "int8": 0.819}, "ms_per_batch": {"fp32": fp32_ms, "int8": int8_ms},
    }


def _variant(folder: Path, record: dict | None) -> tuple[Path, Path]:
    model = folder / "m.onnx"
    model.write_bytes(b"float32 model bytes")
    variant = variant_path(model, "int8")
    variant.write_bytes(b"int8 model bytes")
    if record is not None:
        write_record(variant, {**_record(model), **record})
    return model, variant


def test_auto_picks_a_gated_faster_variant_of_exactly_this_model(tmp_path) -> None:
    model, variant = _variant(tmp_path, {})
    choice = choose(model, "auto")
    assert choice.path == variant and choice.precision == "int8"
    assert "passed its gate" in choice.why and "2.00x" in choice.why
    assert choose(model, "fp32").path == model


@pytest.mark.parametrize("record, reason", [
    (None, "no readable gate record"),
    ({"passed": False}, "did not pass its parity gate"),
    ({"source_sha256": "0" * 64}, "other weights"),
    ({"ms_per_batch": {"fp32": 100.0, "int8": 120.0}}, "not faster"),
])
def test_auto_falls_back_to_float32_and_says_why(tmp_path, record, reason) -> None:
    model, _ = _variant(tmp_path, record)
    choice = choose(model, "auto")
    assert choice.path == model and choice.precision == "fp32"
    assert reason in choice.why


def test_asking_for_int8_without_a_usable_variant_says_what_to_do(tmp_path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    with pytest.raises(ModelError, match="make engine"):
        choose(model, "int8")
    _variant(tmp_path, {"source_sha256": "0" * 64})
    with pytest.raises(ModelError, match="other weights"):
        choose(model, "int8")
    with pytest.raises(ModelError, match="unknown precision"):
        choose(model, "int4")


def _calibration(n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal((1, 40, 48)).astype(np.float32) for _ in range(n)]


def test_quantized_model_keeps_its_description_and_its_first_convolution_in_float32(same, tmp_path) -> None:
    import onnx

    from vesselcli.variants.quantize import quantize_int8, sensitive_nodes

    _, fp32 = same
    out = quantize_int8(fp32, tmp_path / "tiny.int8.onnx", _calibration())
    model = onnx.load(str(out))
    produced_by = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert not [n for n in convs if n.op_type == "ConvTranspose"]  # no float32 upsampling left (see variants.channels_last)
    dequantized = [produced_by.get(n.input[1]) is not None and produced_by[n.input[1]].op_type == "DequantizeLinear" for n in convs]
    assert dequantized[0] is False  # the first convolution stays float32
    assert all(dequantized[1:])  # every other convolution, the upsamplings included, has INT8 weights
    assert [convs[0].name] == sensitive_nodes(onnx.load(str(fp32)))
    (head,) = [n for n in model.graph.node if n.op_type == "Gemm"]  # the head: float32 weights, logits in float
    assert head.input[1] not in produced_by
    assert not [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == head.output[0]]
    engine, reference = open_engine(out, "onnxruntime", "cpu", precision="fp32"), open_engine(fp32, "onnxruntime", "cpu")
    assert engine.precision == "int8" and reference.precision == "fp32"
    assert engine.info.threshold == reference.info.threshold and engine.info.preprocessing == reference.info.preprocessing
    batch = _calibration(2)
    a, b = engine.infer(np.stack(batch)), reference.infer(np.stack(batch))
    assert a.shape == b.shape and np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95


@pytest.mark.parametrize("shape", [(1, 1, 40, 48), (2, 1, 64, 32), (1, 1, 8, 8)])
def test_channels_last_rewrites_are_the_same_function_without_transposed_convolutions(same, shape) -> None:
    import onnx
    import onnxruntime as ort

    from vesselcli.variants.channels_last import gemm_head, pixel_shuffle_upsampling

    _, fp32 = same
    source = onnx.load(str(fp32))
    rewritten, head = gemm_head(pixel_shuffle_upsampling(source))
    assert any(n.op_type == "ConvTranspose" for n in source.graph.node)  # the rewrite has work to do, and leaves the source be
    assert not any(n.op_type == "ConvTranspose" for n in rewritten.graph.node)
    assert [n.op_type for n in rewritten.graph.node if n.name in head] == ["Gemm"]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    outputs = []
    for model in (source, rewritten):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {session.get_inputs()[0].name: x})[0])
    assert outputs[0].shape == outputs[1].shape == (shape[0], 1, *shape[2:])
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=0, atol=1e-5)


def test_choose_engine_runs_the_int8_variant_and_explains_why(same, tmp_path) -> None:
    import shutil

    from vesselcli.variants.quantize import quantize_int8

    _, source = same
    fp32 = tmp_path / "tiny.onnx"
    shutil.copy(source, fp32)
    variant = quantize_int8(fp32, variant_path(fp32, "int8"), _calibration())
    write_record(variant, _record(fp32))
    selection = choose_engine(fp32, "auto", "cpu")
    assert selection.engine.precision == "int8" and Path(selection.engine.path) == variant
    assert "int8 variant" in selection.explain()
    from click.testing import CliRunner

    from vesselcli.cli import main

    shown = CliRunner().invoke(main, ["info", "--model", str(fp32), "--device", "cpu"], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "onnxruntime on cpu, int8" in shown.output and "passed its gate" in shown.output
    forced = CliRunner().invoke(main, ["info", "--model", str(fp32), "--device", "cpu", "--precision", "fp32"], terminal_width=200)
    assert "onnxruntime on cpu, fp32" in forced.output and "as asked" in forced.output
    assert choose_engine(fp32, "auto", "cpu", precision="fp32").engine.precision == "fp32"
    with pytest.raises(ModelError, match="runs on the CPU"):
        choose_engine(fp32, "auto", "cuda", precision="int8")
    checkpoint = same[0]
    with pytest.raises(ModelError, match="needs an .onnx model"):
        choose_engine(checkpoint, "auto", "cpu", precision="int8")


def test_a_variant_that_fails_its_gate_is_not_kept_and_the_shipped_copy_goes(same, tmp_path, monkeypatch) -> None:
    from vesselcli.export import onnx_export as export
    from vesselcli.variants import gate

    checkpoint, _ = same
    shipped = tmp_path / "shipped" / "tiny.onnx"
    shipped.parent.mkdir()
    stale = variant_path(shipped, "int8")
    stale.write_bytes(b"an older int8 model")
    gate_path(stale).write_text("{}")
    monkeypatch.setattr(gate, "training_sets", lambda data: [])
    monkeypatch.setattr(gate, "drive_test", lambda data: None)
    monkeypatch.setattr(gate, "calibration_inputs", lambda sets, pre: _calibration())
    monkeypatch.setattr(gate, "run_gate", lambda fp32, variant, precision, data, work, say: {
        **_record(fp32, passed=False), "datasets": {"HRF training": {"images": 15, "min_dice": 0.97, "mean_dice": 0.98}}})
    config = export.ExportConfig(checkpoint, tmp_path / "out", "tiny", tensorrt=False, update_shipped=shipped, data_root=tmp_path)
    report = export.export_checkpoint(config, say=lambda line: None)
    assert report.variants["int8"].startswith("not shipped: the gate failed") and "HRF training min Dice 0.9700" in report.variants["int8"]
    assert not variant_path(report.onnx, "int8").exists() and not stale.exists() and not gate_path(stale).exists()
    assert shipped.is_file()  # the float32 model itself is shipped as before


@pytest.mark.data
def test_gate_sets_are_the_training_images_of_three_datasets(drive_root) -> None:
    from vesselcli.variants.gate import drive_test, training_sets

    sets = {s.name: s for s in training_sets(drive_root.parent)}
    assert {name: len(s.images) for name, s in sets.items()} == {"DRIVE training": 20, "CHASE_DB1 training": 20, "HRF training": 15}
    chase = {p.stem for p in sets["CHASE_DB1 training"].images}
    assert "Image_10R" in chase and "Image_11L" not in chase  # Image_11L ... 14R are the test images
    assert len(drive_test(drive_root.parent).images) == 20


# --- The shipped INT8 variant ---------------------------------------------------------------

@pytest.mark.data
@pytest.mark.slow
def test_shipped_int8_variant_passed_its_gate_for_the_shipped_model_and_matches_float32(drive_root, tmp_path) -> None:
    fp32 = shipped_model(".onnx")
    variant = variant_path(fp32, "int8")
    if not variant.is_file():
        pytest.fail(f"{variant.name} is not shipped: run `make engine` (it builds and gates the INT8 variant)")
    record = json.loads(gate_path(variant).read_text())
    assert record["passed"] and record["source_sha256"] == file_sha256(fp32), (
        f"{variant.name} was not gated for the shipped {fp32.name}: run `make engine`")
    assert all(d["min_dice"] >= 0.99 for d in record["datasets"].values()) and len(record["datasets"]) == 3
    assert record["f1"]["fp32"] - record["f1"]["int8"] <= 0.003
    images = sorted((drive_root / "test" / "images").glob("*.tif"))[:2]
    masks = {}
    for precision in ("fp32", "int8"):
        out = tmp_path / precision
        done = subprocess.run([sys.executable, "-m", "vesselcli", "segment", *map(str, images), "--out", str(out), "-q",
                               "--no-overlays", "--precision", precision], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        masks[precision] = out / "masks"
    from vesselcli.io.imageio import read_mask
    from vesselcli.variants.gate import mask_dice

    for image in images:
        name = image.with_suffix(".png").name
        assert mask_dice(read_mask(masks["fp32"] / name), read_mask(masks["int8"] / name)) >= 0.99
