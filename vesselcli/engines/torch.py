"""PyTorch engine: runs a training checkpoint directly (CPU or CUDA).

Channels-last memory layout and ``torch.inference_mode``; on CUDA optionally FP16 or bf16
autocast. Logits are always returned as float32, so the caller's sigmoid and threshold stay
in full precision.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import ModelInfo
from .errors import EngineUnavailable, ModelError
from .metadata import check_batch, info_from_checkpoint

PRECISIONS = ("fp32", "fp16", "bf16")


class TorchEngine:
    """A ``.pt`` checkpoint (see ``vesselcli.network.checkpoint``) as an engine.

    ``device``: ``"cpu"`` or ``"cuda[:N]"``; ``precision``: ``"fp32"``, or on CUDA ``"fp16"``
    / ``"bf16"`` (autocast: convolutions in reduced precision, reductions in float32).
    """

    name = "torch"

    def __init__(self, path: Path | str, device: str = "cpu", precision: str = "fp32", threads: int | None = None) -> None:
        import torch

        from ..network.checkpoint import load_model

        path = Path(path)
        if not path.is_file():
            raise ModelError(f"checkpoint {path} does not exist")
        if precision not in PRECISIONS:
            raise ModelError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise EngineUnavailable("PyTorch sees no CUDA device (CPU-only build of torch, or no NVIDIA driver)")
        elif device != "cpu":
            raise ModelError(f"unknown device {device!r} for PyTorch; expected 'cpu' or 'cuda[:N]'")
        elif precision != "fp32":
            raise ModelError(f"precision {precision} needs a CUDA device; on the CPU use fp32")
        if threads:
            torch.set_num_threads(threads)
        try:
            model, ckpt = load_model(path)
        except ValueError as exc:
            raise ModelError(str(exc)) from None
        self._torch = torch
        self._device = torch.device(device)
        self._model = model.to(self._device, memory_format=torch.channels_last)
        self._dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        self.device = device
        self.precision = precision
        self.path = path
        self.info: ModelInfo = info_from_checkpoint(ckpt)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """``(N, C, H, W) float32`` -> ``(N, 1, H, W) float32`` logits."""
        torch = self._torch
        array = check_batch(batch, self.info)
        x = torch.from_numpy(array).to(self._device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if self._dtype is None:
                logits = self._model(x)
            else:
                with torch.autocast(self._device.type, dtype=self._dtype):
                    logits = self._model(x)
        return np.ascontiguousarray(logits.float().cpu().numpy())

    def close(self) -> None:
        self._model = None  # type: ignore[assignment]
