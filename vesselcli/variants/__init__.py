"""Faster variants of a model: INT8 built from its float32 ONNX, each shipped only past a gate.

- ``record``: where a variant lies beside its float32 model and its gate record (a JSON side
  file), and which precision a run uses (``choose``); reads files only, imports nothing heavy,
  so the inference path can call it.
- ``quantize``: ONNX Runtime static quantization (QDQ, per-channel INT8 weights, UINT8
  activations calibrated on training images, sensitive layers kept in float32).
- ``gate``: the parity gate a variant must pass before it is kept: mask Dice against the
  float32 model through ``segment``'s own pipeline on DRIVE, CHASE_DB1 and HRF training
  images, DRIVE test F1, and the speed of both.

``vesselseg export`` (``make engine``) builds and gates every variant of the model it exports,
so a new model gets new variants and nothing here depends on particular weights.
"""
from __future__ import annotations

from .record import PRECISIONS, Choice, GateRecord, choose, gate_path, variant_path

__all__ = ["PRECISIONS", "Choice", "GateRecord", "choose", "gate_path", "variant_path"]
