"""The one engine interface every backend implements (ONNX Runtime, PyTorch, TensorRT).

Engines know nothing of files of images: they take a batch of network inputs and return
logits. The sigmoid and the threshold are applied by the caller in float32, so a reduced
precision engine can never turn a probability map black through overflow in its last layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..imaging.preprocess import Preprocessing


@dataclass(frozen=True)
class ModelInfo:
    """What a model file says about itself (checkpoint, ONNX metadata or engine side data).

    ``tile_multiple``: input height and width must be multiples of this.
    ``fixed_tile``: ``(H, W)`` when the engine only accepts one input size, else None.
    ``metadata``: training data, validation metrics, version and other descriptive fields.
    """

    preprocessing: Preprocessing
    threshold: float
    model_args: dict[str, Any]
    tile_multiple: int = 8
    fixed_tile: tuple[int, int] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class Engine(Protocol):
    """A loaded model on one backend and device."""

    name: str  # "onnxruntime" | "torch" | "tensorrt"
    device: str  # e.g. "cpu", "cuda:0"
    info: ModelInfo

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """``(N, C, H, W) float32`` network input -> ``(N, 1, H, W) float32`` vessel logits."""
        ...

    def close(self) -> None:
        """Release the backend's resources; the engine is unusable afterwards."""
        ...


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically safe float32 sigmoid."""
    logits = np.asarray(logits, dtype=np.float32)
    return (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(np.float32)
