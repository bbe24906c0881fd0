"""TensorRT: build a plan from the ONNX export, keep it only if its masks match ONNX Runtime
FP32, run it through the Engine interface, and refuse a plan made for another GPU.

Needs the ``tensorrt`` package and an NVIDIA GPU; skipped with the reason otherwise (this is
the case on CPU machines and in CI, where nothing here pretends to have run).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_factory import exported
from vesselcli.engines import EngineUnavailable, choose_engine, open_engine, sigmoid
from vesselcli.engines.select import nvidia_gpu_present
from vesselcli.export.onnx_export import drive_tiles, mask_dice

pytestmark = pytest.mark.tensorrt

trt = pytest.importorskip("tensorrt", reason="the tensorrt package is not installed (pip install 'vesselseg[tensorrt]' on an NVIDIA GPU machine)")
if not nvidia_gpu_present():
    pytest.skip("no NVIDIA GPU driver found", allow_module_level=True)


@pytest.fixture(scope="module")
def plan(tmp_path_factory) -> tuple[Path, Path]:
    from vesselcli.export.tensorrt_engine import Profile, build_plan

    folder = tmp_path_factory.mktemp("trt")
    _, onnx = exported(folder, "same")
    return build_plan(onnx, folder, Profile(tile_opt=128, tile_min=32, tile_max=256, batch_opt=4, batch_max=4), say=lambda s: None), onnx


def test_plan_is_named_for_this_gpu_and_described_by_its_side_file(plan) -> None:
    path, onnx = plan
    side = json.loads(path.with_suffix(".json").read_text())
    assert f"-sm{side['compute_capability'].replace('.', '')}-trt{side['tensorrt']}-" in path.name
    assert (path.parent / side["onnx"]).resolve() == onnx.resolve()
    assert side["profile"]["max"][0] == 4


def test_plan_masks_match_onnxruntime_fp32(plan, drive_root) -> None:
    path, onnx = plan
    engine, reference = open_engine(path, engine="tensorrt"), open_engine(onnx, "onnxruntime", "cpu")
    assert engine.info == reference.info
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((6, 1, 128, 96)).astype(np.float32), drive_tiles(drive_root, reference.info.preprocessing, 128)]
    for batch in batches:  # 6 and 8 tiles: more than the profile's batch of 4, so chunked
        a, b = engine.infer(batch), reference.infer(batch)
        assert a.shape == b.shape and a.dtype == np.float32
        t = reference.info.threshold
        assert mask_dice(sigmoid(a) > t, sigmoid(b) > t) >= 0.99


def test_auto_picks_the_matching_plan(plan) -> None:
    path, onnx = plan
    selection = choose_engine(onnx)
    assert selection.engine.name == "tensorrt", selection.explain()


def test_a_plan_for_another_gpu_is_refused_and_auto_falls_back(plan, tmp_path) -> None:
    path, onnx = plan
    moved = tmp_path / path.name
    moved.write_bytes(path.read_bytes())
    side = json.loads(path.with_suffix(".json").read_text())
    side.update(gpu="Some Other GPU", compute_capability="7.5", onnx=str(onnx))
    moved.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(EngineUnavailable, match="sm75"):
        open_engine(moved, engine="tensorrt")
    selection = choose_engine(moved)
    assert selection.engine.name == "onnxruntime"
    assert "Some Other GPU" in selection.attempts[0].reason
