"""Engines: ONNX Runtime and PyTorch agree, models describe themselves, ``open_engine``
picks and explains, bad models are clear errors, and the ONNX path never imports torch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_factory import exported
from vesselcli.engines import EngineUnavailable, ModelError, choose_engine, open_engine
from vesselcli.engines.metadata import info_from_checkpoint
from vesselcli.engines.select import nvidia_gpu_present
from vesselcli.engines.tensorrt import compatibility_problem, file_sha256, find_plans, plan_name, write_side

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def same(tmp_path_factory) -> tuple[Path, Path]:
    return exported(tmp_path_factory.mktemp("same"), "same")


def test_onnx_metadata_round_trips_the_checkpoint_description(same) -> None:
    from vesselcli.network.checkpoint import read_checkpoint

    checkpoint, onnx = same
    expected = info_from_checkpoint(read_checkpoint(checkpoint))
    engine = open_engine(onnx, device="cpu")
    assert engine.name == "onnxruntime" and engine.device == "cpu"
    got = engine.info
    assert got.preprocessing == expected.preprocessing
    assert got.threshold == expected.threshold
    assert got.model_args == expected.model_args
    assert got.tile_multiple == 8 and got.fixed_tile is None
    for key in ("data", "metrics", "epoch", "step", "created", "checkpoint_version"):
        assert got.metadata[key] == expected.metadata[key], key
    assert got.metadata["version"]


@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (3, 1, 40, 24), (2, 1, 37, 61), (1, 1, 9, 130)])
def test_onnxruntime_and_torch_engines_agree_on_any_tile_size(same, shape) -> None:
    checkpoint, onnx = same
    batch = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
    a = open_engine(onnx, "onnxruntime", "cpu").infer(batch)
    b = open_engine(checkpoint, "torch", "cpu").infer(batch)
    assert a.shape == b.shape == (shape[0], 1, *shape[2:]) and a.dtype == b.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
    assert a.std() > 1.0  # the fixture's logits are spread out, so the comparison means something


def test_engine_refuses_a_batch_of_the_wrong_layout(same) -> None:
    engine = open_engine(same[1], device="cpu")
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        engine.infer(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        engine.infer(np.zeros((32, 32), np.float32))


def test_auto_on_cpu_picks_onnxruntime_and_explains_why(same) -> None:
    selection = choose_engine(same[1], device="cpu")
    assert selection.engine.name == "onnxruntime"
    chosen = [a for a in selection.attempts if a.outcome == "chosen"]
    assert len(chosen) == 1 and chosen[0].device == "cpu"
    assert "onnxruntime" in selection.explain()


@pytest.mark.skipif(nvidia_gpu_present(), reason="checks the CPU-only fallback explanation")
def test_auto_without_gpu_says_tensorrt_was_skipped(same) -> None:
    selection = choose_engine(same[1])
    assert selection.engine.device == "cpu"
    skipped = [a for a in selection.attempts if a.engine == "tensorrt"]
    assert skipped and "no NVIDIA GPU" in skipped[0].reason
    with pytest.raises(EngineUnavailable, match="no NVIDIA GPU"):
        open_engine(same[1], engine="tensorrt")


def test_checkpoint_runs_with_torch_and_explicit_mismatches_are_clear(same) -> None:
    checkpoint, onnx = same
    assert open_engine(checkpoint, device="cpu").name == "torch"
    with pytest.raises(ModelError, match="vesselseg export"):
        open_engine(checkpoint, engine="onnxruntime")
    with pytest.raises(ModelError, match=r"\.pt training checkpoint"):
        open_engine(onnx, engine="torch")


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.onnx", None, "does not exist"),
        ("garbage.onnx", b"not a model", "not a readable ONNX model"),
        ("garbage.pt", b"not a checkpoint", "not a loadable checkpoint"),
        ("model.h5", b"", "cannot tell what kind of model"),
    ],
)
def test_unreadable_models_are_model_errors(tmp_path, name, content, message) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelError, match=message):
        open_engine(path, device="cpu")


def test_onnx_without_vesselseg_metadata_says_how_to_make_one(tmp_path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, "h", "w"])],
    )
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    with pytest.raises(ModelError, match="vesselseg export"):
        open_engine(path, device="cpu")


def test_unknown_engine_or_device_is_a_model_error(same) -> None:
    with pytest.raises(ModelError, match="unknown engine"):
        open_engine(same[1], engine="tflite")
    with pytest.raises(ModelError, match="unknown device"):
        open_engine(same[1], device="gpu")


def test_onnxruntime_path_never_imports_torch(same) -> None:
    code = (
        "import sys, numpy as np\n"
        "from vesselcli.engines import open_engine, sigmoid\n"
        f"engine = open_engine({str(same[1])!r})\n"
        "probability = sigmoid(engine.infer(np.zeros((2, 1, 48, 40), np.float32)))\n"
        "assert probability.shape == (2, 1, 48, 40)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorrt', 'onnx')))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


# TensorRT engine descriptions: pure file logic, runs without TensorRT.


def test_plan_names_carry_gpu_compute_capability_and_version() -> None:
    assert plan_name("default", "NVIDIA H100 80GB HBM3", "9.0", "10.3.0", "fp16") == "default-nvidia-h100-80gb-hbm3-sm90-trt10.3.0-fp16.plan"


def test_a_plan_for_another_gpu_or_version_is_refused_with_both_descriptions() -> None:
    built = {"gpu": "NVIDIA A100-SXM4-40GB", "compute_capability": "8.0", "tensorrt": "10.3.0"}
    assert compatibility_problem(built, dict(built)) is None
    problem = compatibility_problem(built, {**built, "gpu": "NVIDIA H100", "compute_capability": "9.0"})
    assert problem and "sm80" in problem and "sm90" in problem and "make engine" in problem
    assert "TensorRT 10.5.0" in compatibility_problem(built, {**built, "tensorrt": "10.5.0"})


def test_plans_are_matched_to_their_onnx_by_content_and_fall_back_to_it(same, tmp_path) -> None:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(same[1].read_bytes())
    plan = tmp_path / "model-gpu-sm90-trt10.0-fp16.plan"
    plan.write_bytes(b"not really a plan")
    identity = {"gpu": "Some GPU", "compute_capability": "9.0", "tensorrt": "10.0"}
    write_side(plan, {**identity, "onnx": "model.onnx", "onnx_sha256": file_sha256(onnx), "metadata": {}})
    stranger = tmp_path / "other-gpu-sm90-trt10.0-fp16.plan"
    stranger.write_bytes(b"")
    write_side(stranger, {**identity, "onnx": "other.onnx", "onnx_sha256": "0" * 64})
    assert find_plans(onnx, [tmp_path]) == [plan]
    assert json.loads(plan.with_suffix(".json").read_text())["format"] == 1
    # A plan that cannot run here (no TensorRT, or another GPU) falls back to its ONNX model.
    selection = choose_engine(plan, device="auto")
    assert selection.engine.name == "onnxruntime"
    assert selection.attempts[0].engine == "tensorrt" and selection.attempts[0].outcome == "failed"


def test_a_plan_without_side_file_is_refused(tmp_path) -> None:
    plan = tmp_path / "orphan.plan"
    plan.write_bytes(b"")
    with pytest.raises(EngineUnavailable, match="side file"):
        open_engine(plan, engine="tensorrt")


@pytest.mark.parametrize(
    "files, expected",
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 2),
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "400000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 4),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_cpu_quota_of_a_container_caps_the_threads(tmp_path, files, expected) -> None:
    from vesselcli.engines.onnxruntime import _cgroup_quota

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert _cgroup_quota(tmp_path) == expected


def test_onnxruntime_cpu_threads_sleep_instead_of_spinning(same) -> None:
    # On a 2-core machine, spinning intra-op threads starve the reader and writer threads
    # beside the network (make bench: 2.62 -> 2.43 s for 20 DRIVE images when they sleep).
    engine = open_engine(same[1], engine="onnxruntime", device="cpu")
    options = engine._session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
