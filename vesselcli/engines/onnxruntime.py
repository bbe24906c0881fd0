"""ONNX Runtime engine: the default backend (CPU everywhere, CUDA where its provider loads).

Never imports torch. The model's preprocessing, threshold and tiling constraints come from
the ONNX file's own metadata (see ``metadata``), so no side file is needed.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import numpy as np

from .base import ModelInfo
from .errors import EngineUnavailable, ModelError
from .metadata import check_batch, info_from_metadata, pad_to_multiple


def cpu_threads() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (containers)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cpus, quota) if quota else cpus)


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """CPUs allowed by cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us`` (rounded up), or None."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        return None if quota in ("max", "-1") else max(1, -(-int(quota) // int(period)))
    except ValueError:
        return None


def cuda_provider_listed() -> bool:
    """Whether this onnxruntime build has a CUDA provider (its libraries may still fail to load)."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def preload_cuda_libraries(ort) -> str:  # noqa: ANN001 - the onnxruntime module
    """Load the CUDA and cuDNN libraries of NVIDIA's wheels (``vesselseg[gpu]``) so the CUDA
    provider finds them without a system CUDA install; ONNX Runtime's documented way
    (``onnxruntime.preload_dlls``, 1.21+). Returns what it printed (missing libraries), else ''."""
    if not hasattr(ort, "preload_dlls"):
        return ""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        try:
            ort.preload_dlls()
        except Exception as exc:  # noqa: BLE001 - a failed preload only means the provider may not load
            print(f"{exc.__class__.__name__}: {exc}")
    return " ".join(printed.getvalue().split())


def provider_error(printed: str) -> str:
    """The cause in what onnxruntime printed when its CUDA provider failed, e.g. 'CUDA failure 35:
    CUDA driver version is insufficient for CUDA runtime version', or a library that failed to load."""
    text = " ".join(printed.split())
    match = re.search(r"(CUDA failure \d+: [^;]+|Failed to load [^;]+)", text)
    return match.group(1).strip()[:200] if match else ""


class OnnxRuntimeEngine:
    """An ``.onnx`` model in an ``onnxruntime.InferenceSession``.

    ``device``: ``"cpu"`` or ``"cuda[:N]"``. On the CPU the session uses every core this
    process may run on (``threads`` overrides), one inter-op thread (the U-Net is a chain
    with no parallel branches worth scheduling) and all graph optimisations (constant
    folding, BatchNorm/Conv fusion, layout transforms). ``infer`` pads H and W up to the
    model's ``tile_multiple`` by edge replication, as the PyTorch network does, and crops back.

    ``parallel_calls``: how many ``infer`` calls the caller runs at once (from as many
    threads; a session runs concurrent calls safely). On the CPU each call then gets its
    share of the cores (``threads`` defaults to cores // calls, at least 1) and
    ``self.parallel_calls`` says how many to run; on CUDA it stays 1. Outputs are the same
    bits whatever the split (checked on DRIVE and CHASE_DB1 inputs, float32 and INT8).
    """

    name = "onnxruntime"

    def __init__(self, path: Path | str, device: str = "cpu", threads: int | None = None,
                 parallel_calls: int = 1) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist; pass an .onnx file, a .plan engine or a .pt checkpoint")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: the provider fallback is reported by us
        self.parallel_calls = 1
        if device == "cpu":
            cores = cpu_threads()
            self.parallel_calls = max(1, min(int(parallel_calls), cores))
            options.intra_op_num_threads = threads or max(1, cores // self.parallel_calls)
            providers: list = ["CPUExecutionProvider"]
        elif device.startswith("cuda"):
            if not cuda_provider_listed():
                raise EngineUnavailable(
                    "this onnxruntime is the CPU build, with no CUDA provider "
                    "(`pip uninstall -y onnxruntime` then `pip install 'vesselseg[gpu]'`)"
                )
            preloaded = preload_cuda_libraries(ort)
            index = int(device.partition(":")[2] or 0)
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        else:
            raise ModelError(f"unknown device {device!r} for ONNX Runtime; expected 'cpu' or 'cuda[:N]'")
        printed = io.StringIO()
        try:
            if device.startswith("cuda"):
                ort.set_default_logger_severity(4)  # the CUDA provider's own error lines: we report the cause once
            with contextlib.redirect_stdout(printed):  # onnxruntime prints "EP Error ... Falling back" there
                self._session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception zoo
            if device.startswith("cuda"):  # the GPU failed (memory, CUDA error); the CPU then says if the model is bad
                raise EngineUnavailable(f"ONNX Runtime could not create a CUDA session ({exc.__class__.__name__}: "
                                        f"{' '.join(str(exc).split())[:300]})") from None
            raise ModelError(f"{path} is not a readable ONNX model ({exc.__class__.__name__}: {str(exc)[:300]})") from None
        if device.startswith("cuda") and "CUDAExecutionProvider" not in self._session.get_providers():
            cause = provider_error(printed.getvalue() + " " + preloaded)
            raise EngineUnavailable(
                f"onnxruntime's CUDA provider did not start ({cause or 'CUDA or cuDNN libraries missing or not matching this onnxruntime-gpu'}); "
                "`vesselseg info` says what is missing"
            )
        self.device = device
        self.path = path
        self.info: ModelInfo = info_from_metadata(self._session.get_modelmeta().custom_metadata_map, str(path))
        self.precision = str(self.info.metadata.get("precision", "fp32"))  # "int8" for a quantized variant
        self._input = self._session.get_inputs()[0].name
        self._output = self._session.get_outputs()[0].name

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """``(N, C, H, W) float32`` -> ``(N, 1, H, W) float32`` logits."""
        array = check_batch(batch, self.info)
        height, width = array.shape[2:]
        array = pad_to_multiple(array, self.info)
        (logits,) = self._session.run([self._output], {self._input: array})
        return np.ascontiguousarray(logits[:, :, :height, :width], dtype=np.float32)

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]
