"""TensorRT engine runner (optional: needs the ``tensorrt`` package and PyTorch with CUDA).

A serialized engine (``.plan``) only runs on the GPU model, compute capability and TensorRT
version it was built with. Each plan therefore has a side file ``<plan stem>.json``
written by ``vesselseg export`` (see ``vesselcli.export.tensorrt_engine``)::

    {"format": 1, "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
     "tensorrt": "10.3.0", "precision": "fp16", "onnx": "default.onnx",
     "onnx_sha256": "...", "profile": {"min": [...], "opt": [...], "max": [...]},
     "metadata": {ONNX metadata_props: preprocessing, threshold, model arguments, ...}}

``TensorRTEngine`` compares it with the running machine before deserializing anything and
raises ``EngineUnavailable`` with both descriptions when they differ, so ``--engine auto``
falls back to ONNX Runtime (the side file names the ONNX model the plan came from).
Device buffers and the CUDA stream come from PyTorch, which the GPU machine has anyway for
export; nothing here is imported until a plan is opened.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..provenance import file_sha256
from .base import ModelInfo
from .errors import EngineUnavailable, ModelError
from .metadata import check_batch, info_from_metadata, pad_to_multiple

SIDE_FORMAT = 1
IDENTITY_KEYS = ("gpu", "compute_capability", "tensorrt")


def plan_name(model: str, gpu: str, compute_capability: str, tensorrt: str, precision: str) -> str:
    """``<model>-<gpu>-sm<cc>-trt<ver>-<precision>.plan``, the GPU name made file-safe.

    >>> plan_name("default", "NVIDIA H100 80GB HBM3", "9.0", "10.3.0", "fp16")
    'default-nvidia-h100-80gb-hbm3-sm90-trt10.3.0-fp16.plan'
    """
    return f"{model}-{_machine(gpu, compute_capability, tensorrt)}-{precision}.plan"


def timing_cache_name(identity: dict[str, str]) -> str:
    """``timing-<gpu>-sm<cc>-trt<ver>.cache``: TensorRT's tactic timings, reused by later builds."""
    return f"timing-{_machine(identity['gpu'], identity['compute_capability'], identity['tensorrt'])}.cache"


def _machine(gpu: str, compute_capability: str, tensorrt: str) -> str:
    gpu_slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-") or "gpu"
    return f"{gpu_slug}-sm{compute_capability.replace('.', '')}-trt{tensorrt}"


def side_path(plan: Path) -> Path:
    return Path(plan).with_suffix(".json")


def read_side(plan: Path) -> dict[str, Any]:
    """The plan's side file; ``EngineUnavailable`` if it is missing or unreadable."""
    path = side_path(plan)
    try:
        side = json.loads(path.read_text())
    except FileNotFoundError:
        raise EngineUnavailable(
            f"{plan} has no side file {path.name} saying which GPU and TensorRT version built it; rebuild it with `make engine`"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise EngineUnavailable(f"cannot read {path} ({exc}); rebuild the engine with `make engine`") from None
    if not isinstance(side, dict) or side.get("format") != SIDE_FORMAT or any(k not in side for k in IDENTITY_KEYS):
        raise EngineUnavailable(f"{path} is not a vesselseg engine description (format {SIDE_FORMAT}); rebuild with `make engine`")
    return side


def write_side(plan: Path, side: dict[str, Any]) -> None:
    side_path(plan).write_text(json.dumps({"format": SIDE_FORMAT, **side}, indent=2, sort_keys=True) + "\n")


def compatibility_problem(side: dict[str, Any], here: dict[str, str]) -> str | None:
    """Why a plan described by ``side`` cannot run on ``here`` (same keys), or None if it can."""
    differs = [k for k in IDENTITY_KEYS if str(side.get(k)) != str(here.get(k))]
    if not differs:
        return None

    def describe(d: dict) -> str:
        return f"{d.get('gpu')} (sm{str(d.get('compute_capability')).replace('.', '')}) with TensorRT {d.get('tensorrt')}"

    return f"built for {describe(side)}, this machine has {describe(here)}; rebuild it here with `make engine`"


def plan_source(plan: Path) -> Path | None:
    """The ONNX model a plan was built from, if its side file names one that still exists."""
    try:
        side = read_side(plan)
    except EngineUnavailable:
        return None
    onnx = Path(plan).parent / str(side.get("onnx", ""))
    return onnx if side.get("onnx") and onnx.is_file() else None


def find_plans(onnx: Path, dirs: list[Path]) -> list[Path]:
    """Plans in ``dirs`` whose side file says they were built from exactly this ONNX file."""
    digest = None
    found = []
    for folder in dirs:
        for plan in sorted(Path(folder).glob("*.plan")):
            try:
                side = read_side(plan)
            except EngineUnavailable:
                continue
            digest = digest or file_sha256(onnx)
            if side.get("onnx_sha256") == digest:
                found.append(plan)
    return found


def local_identity(device: str = "cuda:0") -> dict[str, str]:
    """GPU name, compute capability and TensorRT version of this machine (imports both)."""
    import tensorrt as trt
    import torch

    if not torch.cuda.is_available():
        raise EngineUnavailable("PyTorch sees no CUDA device, which the TensorRT engine needs for its buffers")
    index = torch.device(device).index or 0
    major, minor = torch.cuda.get_device_capability(index)
    return {"gpu": torch.cuda.get_device_name(index), "compute_capability": f"{major}.{minor}", "tensorrt": trt.__version__}


class TensorRTEngine:
    """A serialized TensorRT engine with one FP32 input and one FP32 logit output.

    Batches larger than the optimization profile's maximum are run in chunks; tile sizes
    outside the profile are refused with the profile's range in the message.
    """

    name = "tensorrt"

    def __init__(self, plan: Path | str, device: str = "cuda:0") -> None:
        plan = Path(plan)
        if not plan.is_file():
            raise ModelError(f"TensorRT engine {plan} does not exist")
        side = read_side(plan)
        import tensorrt as trt
        import torch

        device = device if device.startswith("cuda") else "cuda:0"
        problem = compatibility_problem(side, local_identity(device))
        if problem:
            raise EngineUnavailable(f"{plan.name}: {problem}")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan.read_bytes())
        if self._engine is None:
            raise EngineUnavailable(f"TensorRT could not deserialize {plan} (see the TensorRT messages above); rebuild it with `make engine`")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{plan} has inputs {inputs} and outputs {outputs}; expected one of each")
        self._input, self._output = inputs[0], outputs[0]
        low, _, high = self._engine.get_tensor_profile_shape(self._input, 0)
        self._low, self._high = tuple(low), tuple(high)
        self._torch = torch
        self._device = torch.device(device)
        self._stream = torch.cuda.Stream(self._device)
        self.device = str(self._device)
        self.path = plan
        self.precision = str(side.get("precision", "fp16"))
        self.info: ModelInfo = info_from_metadata(side.get("metadata", {}), str(plan))

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """``(N, C, H, W) float32`` -> ``(N, 1, H, W) float32`` logits."""
        array = check_batch(batch, self.info)
        height, width = array.shape[2:]
        array = pad_to_multiple(array, self.info)
        for axis in (2, 3):
            if not self._low[axis] <= array.shape[axis] <= self._high[axis]:
                raise ValueError(
                    f"tile {array.shape[2]}x{array.shape[3]} is outside this engine's profile "
                    f"({self._low[2]}x{self._low[3]} to {self._high[2]}x{self._high[3]}); use a tile size in range "
                    "or rebuild with `vesselseg export --tile-min/--tile-max`"
                )
        step = self._high[0]
        chunks = [self._run(array[i : i + step]) for i in range(0, array.shape[0], step)]
        return np.ascontiguousarray(np.concatenate(chunks)[:, :, :height, :width])

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.cuda.stream(self._stream):
            x = torch.from_numpy(chunk).to(self._device, non_blocking=False)
            if not self._context.set_input_shape(self._input, tuple(chunk.shape)):
                raise ValueError(f"TensorRT refused input shape {chunk.shape}")
            y = torch.empty(tuple(self._context.get_tensor_shape(self._output)), dtype=torch.float32, device=self._device)
            self._context.set_tensor_address(self._input, x.data_ptr())
            self._context.set_tensor_address(self._output, y.data_ptr())
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed (see the TensorRT messages above)")
            out = y.cpu()  # on the engine's stream: waits for the inference to finish
        self._stream.synchronize()
        return out.numpy()

    def close(self) -> None:
        self._context = None
        self._engine = None
        self._runtime = None
