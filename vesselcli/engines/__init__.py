"""Inference backends behind one interface (see ``base.Engine``); imported lazily.

``open_engine(model, engine, device)`` returns a ready ``Engine``; ``choose_engine`` also
says which backends were considered and why (``vesselseg info``). Only the chosen backend
module is imported, so the ONNX Runtime path never imports torch or tensorrt.
"""
from __future__ import annotations

from .base import Engine, ModelInfo, sigmoid
from .errors import EngineUnavailable, ModelError
from .select import ENGINES, Selection, choose_engine, open_engine, shipped_model

__all__ = [
    "ENGINES",
    "Engine",
    "EngineUnavailable",
    "ModelError",
    "ModelInfo",
    "Selection",
    "choose_engine",
    "open_engine",
    "shipped_model",
    "sigmoid",
]
