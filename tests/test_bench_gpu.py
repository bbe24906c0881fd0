"""``bench/gpu.py``, the prepared GPU check: it runs (on the CPU here), compares every variant
with the CPU's FP32 masks, and its exit code says whether the device passed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import gpu


@pytest.mark.data
def test_the_smoke_run_on_the_cpu_matches_the_reference_and_a_missing_gpu_is_exit_2(drive_root: Path, capsys) -> None:
    args = ["--data", str(drive_root.parent), "--repeats", "1", "--batch", "2", "--tile", "64"]
    assert gpu.main([*args, "--device", "cpu"]) == 0
    rows = {row["engine"]: row for row in json.loads(capsys.readouterr().out)["rows"]}
    assert rows["onnxruntime"]["dice_vs_cpu_fp32"] == 1.0 and rows["onnxruntime"]["pass"]
    assert rows["torch"]["dice_vs_cpu_fp32"] >= 0.999 and rows["torch"]["max_abs_logit_diff"] < 1e-3
    assert rows["torch"]["images_per_s"] > 0
    assert gpu.main([*args, "--device", "cuda"]) == 2  # no GPU here: every row says why, none measured
    errors = [row["error"] for row in json.loads(capsys.readouterr().out)["rows"]]
    assert len(errors) == 2 and "vesselseg info" in errors[0] and "CUDA" in errors[1]


def test_reduced_precision_passes_at_0_99_and_fp32_needs_0_999() -> None:
    reference = np.linspace(-4, 4, 2000, dtype=np.float32).reshape(1, 1, 40, 50)
    logits = reference.copy()
    logits.flat[1000:1008] = -10.0  # 8 of ~1000 vessel pixels lost: Dice ~0.996
    fp16 = gpu.compare("torch", "fp16", logits, 0.5, reference, 0.5, 1)
    fp32 = gpu.compare("onnxruntime", "fp32", logits, 0.5, reference, 0.5, 1)
    assert 0.99 < fp16["dice_vs_cpu_fp32"] == fp32["dice_vs_cpu_fp32"] < 0.999
    assert fp16["pass"] and not fp32["pass"]
    assert fp16["images_per_s"] == 2.0 and fp16["max_abs_logit_diff"] == pytest.approx(10.03, abs=0.01)
