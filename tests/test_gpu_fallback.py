"""``--engine auto`` keeps working when a GPU backend is present but fails to start.

No GPU here: an NVIDIA driver is faked present and the GPU backends fail at the engine
boundary the way real ones do: onnxruntime lists its CUDA provider but cannot create a CUDA
session (out of memory), PyTorch opens on the GPU and runs out of CUDA memory on its first
batch. The CPU backend is the real ONNX Runtime engine on the shipped model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from click.testing import CliRunner

import vesselcli.engines.select as select
import vesselcli.engines.torch as torch_engine
from segment_fakes import DarkIsVessel, write_fundus
from vesselcli.cli.info import info
from vesselcli.cli.segment import segment
from vesselcli.engines import choose_engine

REAL_SESSION = onnxruntime.InferenceSession


def session_without_cuda_memory(path, sess_options=None, providers=None):  # noqa: ANN001, ANN201
    """``onnxruntime.InferenceSession`` on a GPU with no memory left: CUDA fails, the CPU is real."""
    if any("CUDAExecutionProvider" in str(p) for p in providers or ()):
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : CUDA failure 2: out of memory ; "
                           "GPU=0 ; expr=cudaMalloc(&p, size)")
    return REAL_SESSION(path, sess_options=sess_options, providers=providers)


class TorchOutOfMemory(DarkIsVessel):
    """A PyTorch engine that opens on the GPU and runs out of memory on its first batch."""

    opened: list[TorchOutOfMemory] = []

    def __init__(self, path, device="cpu", precision="fp32", threads=None) -> None:  # noqa: ANN001
        super().__init__()
        self.name, self.device = "torch", device
        TorchOutOfMemory.opened.append(self)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.11 GiB total capacity)")


@pytest.fixture()
def failing_gpu(monkeypatch):
    """A driver 'present', ONNX Runtime CUDA and PyTorch CUDA both failing to start."""
    TorchOutOfMemory.opened.clear()
    monkeypatch.setattr(select, "nvidia_gpu_present", lambda: True)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(onnxruntime, "preload_dlls", lambda *args, **kwargs: None, raising=False)
    monkeypatch.setattr(onnxruntime, "InferenceSession", session_without_cuda_memory)
    monkeypatch.setattr(torch_engine, "TorchEngine", TorchOutOfMemory)
    return TorchOutOfMemory.opened


def test_auto_falls_back_to_the_cpu_with_each_gpu_failure_explained(failing_gpu) -> None:
    selection = choose_engine()
    assert (selection.engine.name, selection.engine.device) == ("onnxruntime", "cpu")
    failed = {(a.engine, a.device): a.reason for a in selection.attempts if a.outcome == "failed"}
    assert "could not create a CUDA session" in failed[("onnxruntime", "cuda:0")]
    assert "out of memory" in failed[("onnxruntime", "cuda:0")]
    torch_reason = failed[("torch", "cuda:0")]
    assert "first batch on cuda:0 failed" in torch_reason and "CUDA out of memory" in torch_reason
    assert "--device cpu" in torch_reason
    assert failing_gpu and failing_gpu[0].closed  # the engine that failed its first batch was released
    lines = selection.fallbacks()
    assert len(lines) == 2 and all("using onnxruntime on cpu instead" in line for line in lines)
    selection.engine.close()


def test_a_gpu_engine_that_opens_and_runs_is_chosen_after_its_first_batch(monkeypatch, failing_gpu) -> None:
    monkeypatch.setattr(torch_engine, "TorchEngine", lambda path, device, precision, threads: DarkIsVessel())
    selection = choose_engine()
    assert selection.engine.name == "fake"  # PyTorch on cuda:0 passed its probe batch
    assert [a.outcome for a in selection.attempts if a.engine != "tensorrt"] == ["failed", "chosen"]
    assert selection.engine.batches == [(1, 1, 64, 64)]


def test_a_broken_model_is_still_a_model_error_not_a_gpu_fallback(tmp_path: Path, failing_gpu) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(select.ModelError, match="not a readable ONNX model"):
        choose_engine(bad)


def test_segment_falls_back_and_says_why_on_stderr_without_a_traceback(tmp_path: Path, failing_gpu) -> None:
    for i in range(2):
        write_fundus(tmp_path / "in" / f"{i}.png", seed=i)
    result = CliRunner().invoke(segment, [str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2 and "onnxruntime on cuda:0 failed to start" in warnings[0]
    assert "out of memory" in warnings[0] and "torch on cuda:0" in warnings[1]
    assert "Traceback" not in result.output
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["0.png", "1.png"]


def test_info_shows_the_gpu_failures_and_the_cpu_engine_it_uses(failing_gpu) -> None:
    result = CliRunner(env={"COLUMNS": "400"}).invoke(info, [])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()]
    assert ["failed", "onnxruntime", "cuda:0"] in [row[:3] for row in rows]
    assert ["failed", "torch", "cuda:0"] in [row[:3] for row in rows]
    assert "could not create a CUDA session" in result.output and "uses: onnxruntime on cpu" in result.output


def session_that_drops_cuda(path, sess_options=None, providers=None):  # noqa: ANN001, ANN201
    """What onnxruntime-gpu does without a usable driver: prints the EP error, retries on the CPU."""
    if any("CUDAExecutionProvider" in str(p) for p in providers or ()):
        print("*************** EP Error ***************\nEP Error ... [ONNXRuntimeError] : 1 : FAIL : CUDA failure 35: "
              "CUDA driver version is insufficient for CUDA runtime version ; GPU=-1 ; hostname=vm\n"
              "Falling back to ['CPUExecutionProvider'] and retrying.")
    return REAL_SESSION(path, sess_options=sess_options, providers=["CPUExecutionProvider"])


def test_a_cuda_provider_that_silently_drops_to_the_cpu_is_a_failed_attempt_with_its_cause(
        monkeypatch, failing_gpu, capsys) -> None:
    monkeypatch.setattr(onnxruntime, "InferenceSession", session_that_drops_cuda)
    selection = choose_engine()
    reason = next(a.reason for a in selection.attempts if a.outcome == "failed" and a.engine == "onnxruntime")
    assert "CUDA provider did not start (CUDA failure 35: CUDA driver version is insufficient" in reason
    assert (selection.engine.name, selection.engine.device) == ("onnxruntime", "cpu")
    assert "EP Error" not in capsys.readouterr().out  # onnxruntime's banner is folded into the reason


def test_no_onnxruntime_installed_says_which_extra_to_install(monkeypatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # `import onnxruntime` now fails
    with pytest.raises(select.EngineUnavailable, match=r"onnxruntime is not installed.*pip install 'vesselseg\[cpu\]'"):
        choose_engine(device="cpu")
