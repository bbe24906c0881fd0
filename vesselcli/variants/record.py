"""Variant files beside a float32 model, their gate records, and the choice of precision.

A float32 model ``default.onnx`` may have an INT8 variant ``default.int8.onnx`` with its gate
record ``default.int8.json``::

    {"format": 1, "precision": "int8", "source": "default.onnx", "source_sha256": "...",
     "passed": true, "min_dice": 0.99, "max_f1_drop": 0.003,
     "datasets": {"DRIVE training": {"images": 20, "min_dice": 0.991, "mean_dice": 0.995}, ...},
     "f1": {"fp32": 0.8217, "int8": 0.8205},
     "ms_per_batch": {"fp32": 343.0, "int8": 170.0}, "batch": "2x1x592x592",
     "machine": "...", "created": "..."}

The record is written only when the gate passed (``vesselcli.variants.gate``), and names the
exact float32 file it was built from by SHA-256: a variant of other weights (a new model
shipped without ``make engine``) is never used.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engines.errors import ModelError
from ..provenance import file_sha256

#: What ``--precision`` takes: ``auto`` picks the fastest variant that passed its gate.
PRECISIONS = ("auto", "fp32", "int8")
RECORD_FORMAT = 1


def variant_path(model: Path, precision: str) -> Path:
    """``default.onnx`` -> ``default.int8.onnx`` (the float32 model itself for ``fp32``)."""
    model = Path(model)
    return model if precision == "fp32" else model.with_name(f"{model.stem}.{precision}{model.suffix}")


def gate_path(variant: Path) -> Path:
    """``default.int8.onnx`` -> ``default.int8.json``."""
    return Path(variant).with_suffix(".json")


@dataclass(frozen=True)
class GateRecord:
    """A variant's gate record (see the module docstring); ``raw`` is the whole JSON object."""

    precision: str
    source_sha256: str
    passed: bool
    ms_fp32: float | None
    ms_variant: float | None
    raw: dict[str, Any]

    @property
    def speedup(self) -> float | None:
        """float32 time over the variant's, as measured when it was built."""
        if not self.ms_fp32 or not self.ms_variant:
            return None
        return self.ms_fp32 / self.ms_variant

    def summary(self) -> str:
        """One line: what the gate measured."""
        parts = []
        for name, d in self.raw.get("datasets", {}).items():
            parts.append(f"{name} Dice >= {d['min_dice']:.4f}")
        f1 = self.raw.get("f1", {})
        if "fp32" in f1 and self.precision in f1:
            parts.append(f"DRIVE test F1 {f1[self.precision]:.4f} vs {f1['fp32']:.4f}")
        if self.speedup:
            parts.append(f"{self.speedup:.2f}x the float32 speed where built")
        return "; ".join(parts)


def read_record(variant: Path) -> GateRecord | None:
    """The gate record of ``variant``, or None when it is missing or unreadable."""
    try:
        raw = json.loads(gate_path(variant).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(raw, dict) or raw.get("format") != RECORD_FORMAT:
        return None
    ms = raw.get("ms_per_batch", {})
    return GateRecord(
        precision=str(raw.get("precision", "")),
        source_sha256=str(raw.get("source_sha256", "")),
        passed=bool(raw.get("passed")),
        ms_fp32=ms.get("fp32"),
        ms_variant=ms.get(raw.get("precision", "")),
        raw=raw,
    )


def write_record(variant: Path, record: dict[str, Any]) -> None:
    path = gate_path(variant)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps({"format": RECORD_FORMAT, **record}, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


@dataclass(frozen=True)
class Choice:
    """The model file a run uses, its precision, and why (one line for ``vesselseg info``)."""

    path: Path
    precision: str
    why: str


def _usable(model: Path, precision: str) -> tuple[Path, GateRecord | None, str]:
    """(variant path, its record if usable, else the reason it is not)."""
    variant = variant_path(model, precision)
    if not variant.is_file():
        return variant, None, f"no {precision} variant {variant.name} beside {model.name} (`make engine` builds one)"
    record = read_record(variant)
    if record is None:
        return variant, None, f"{variant.name} has no readable gate record {gate_path(variant).name}; rebuild it with `make engine`"
    if not record.passed:
        return variant, None, f"{variant.name} did not pass its parity gate ({record.summary()})"
    if record.source_sha256 != file_sha256(model):
        return variant, None, f"{variant.name} was built from other weights than {model.name} (SHA-256 differs); rebuild it with `make engine`"
    return variant, record, ""


def choose(model: Path, requested: str = "auto") -> Choice:
    """Which file runs for ``requested`` precision of the float32 ONNX ``model``.

    ``fp32``: the model itself. ``int8``: its INT8 variant, which must exist, have passed its
    gate and come from exactly this model (``ModelError`` saying what to do otherwise).
    ``auto``: the INT8 variant when it qualifies and was measured faster than float32 where
    it was built, else float32; ``why`` says which and why.
    """
    if requested not in PRECISIONS:
        raise ModelError(f"unknown precision {requested!r}; expected one of {', '.join(PRECISIONS)}")
    model = Path(model)
    if requested == "fp32":
        return Choice(model, "fp32", "float32, as asked (--precision fp32)")
    variant, record, reason = _usable(model, "int8")
    if requested == "int8":
        if record is None:
            raise ModelError(f"--precision int8 cannot be used: {reason}")
        return Choice(variant, "int8", f"int8, as asked; its gate: {record.summary()}")
    if record is None:
        return Choice(model, "fp32", f"float32: {reason}")
    if not record.speedup or record.speedup <= 1.0:
        return Choice(model, "fp32", f"float32: {variant.name} passed its gate but was not faster where it was built")
    return Choice(variant, "int8", f"int8 variant {variant.name}, the fastest that passed its gate ({record.summary()})")
