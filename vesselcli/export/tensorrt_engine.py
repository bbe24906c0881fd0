"""Build a TensorRT engine from an exported ONNX model, then prove it before keeping it.

    build_plan(onnx, out_dir, profile)   -> Path   (engines/<model>-<gpu>-sm<cc>-trt<ver>-fp16.plan)
    validate_plan(plan, onnx, tiles)     -> float  (mask Dice vs ONNX Runtime FP32)

Written against TensorRT's documented Python API (Builder, OnnxParser, IBuilderConfig,
optimization profiles, timing cache). The ONNX parser's errors are reported one per line.
FP16 is used where the GPU has fast FP16; the network's output (the logits) stays FP32 and
the sigmoid and threshold run in float32 outside the engine, so FP16 cannot saturate the
probability map. A plan is only kept when its masks match ONNX Runtime FP32 on real tiles
(Dice >= MIN_DICE); otherwise it is deleted and, if it was FP16, rebuilt in FP32.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..analysis import metrics
from ..run.config import DEFAULT_TILE_SIZE
from ..engines.base import sigmoid
from ..engines.metadata import info_from_metadata
from ..engines.tensorrt import TensorRTEngine, file_sha256, local_identity, plan_name, timing_cache_name, write_side
from .errors import ExportError

MIN_DICE = 0.99
WORKSPACE_BYTES = 4 << 30


@dataclass(frozen=True)
class Profile:
    """Input shapes the engine is optimised for: batch 1..batch_max, square tiles tile_min..tile_max."""

    tile_opt: int = DEFAULT_TILE_SIZE
    tile_min: int = 64
    tile_max: int = 1024
    batch_opt: int = 8
    batch_max: int = 16

    def shapes(self, channels: int, fixed: tuple[int, int] | None) -> tuple[tuple[int, ...], ...]:
        """(min, opt, max) NCHW shapes; a fixed-tile model gets its one tile size."""
        low = fixed or (self.tile_min, self.tile_min)
        opt = fixed or (self.tile_opt, self.tile_opt)
        high = fixed or (self.tile_max, self.tile_max)
        return (1, channels, *low), (self.batch_opt, channels, *opt), (self.batch_max, channels, *high)


def build_plan(
    onnx: Path,
    out_dir: Path,
    profile: Profile,
    *,
    fp16: bool = True,
    device: str = "cuda:0",
    say: Callable[[str], None] = print,
) -> Path:
    """Serialize a TensorRT engine for ``onnx`` on this GPU into ``out_dir``; returns the plan path."""
    import onnxruntime
    import tensorrt as trt

    session = onnxruntime.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    props = dict(session.get_modelmeta().custom_metadata_map)
    info = info_from_metadata(props, str(onnx))
    identity = local_identity(device)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx).read_bytes()):
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        lines = "\n".join(f"  {i + 1}. node {e.node()} ({_node_name(e)}): {e.desc()}" for i, e in enumerate(errors))
        raise ExportError(f"TensorRT's ONNX parser rejected {onnx} with {len(errors)} error(s):\n{lines}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    fp16 = fp16 and bool(getattr(builder, "platform_has_fast_fp16", True))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        _keep_logits_fp32(trt, network, config)
    image = network.get_input(0)
    low, opt, high = profile.shapes(int(info.model_args.get("in_channels", 1)), info.fixed_tile)
    shapes = builder.create_optimization_profile()
    shapes.set_shape(image.name, low, opt, high)
    config.add_optimization_profile(shapes)
    cache_path = Path(out_dir) / timing_cache_name(identity)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    precision = "fp16" if fp16 else "fp32"
    say(f"building TensorRT {identity['tensorrt']} {precision} engine for {identity['gpu']} (sm{identity['compute_capability']}), shapes {low} .. {high}")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError("TensorRT could not build the engine (see the TensorRT messages above)")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    cache_path.write_bytes(memoryview(config.get_timing_cache().serialize()))
    plan = Path(out_dir) / plan_name(Path(onnx).stem, identity["gpu"], identity["compute_capability"], identity["tensorrt"], precision)
    tmp = plan.with_name(f".tmp-{plan.name}")
    tmp.write_bytes(memoryview(serialized))
    os.replace(tmp, plan)
    side = {**identity, "precision": precision, "onnx": os.path.relpath(onnx, plan.parent), "onnx_sha256": file_sha256(onnx)}
    side["profile"] = {"min": list(low), "opt": list(opt), "max": list(high)}
    side["metadata"] = props
    write_side(plan, side)
    return plan


def _node_name(error) -> str:
    """The failing ONNX node's name (``IParserError.node_name`` exists from TensorRT 8.6 on)."""
    name = getattr(error, "node_name", None)
    return (name() if callable(name) else "") or "unnamed"


def _keep_logits_fp32(trt, network, config) -> None:
    """Pin the layer that produces the network output to FP32 (prefer, not obey)."""
    output = network.get_output(0)
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if any(layer.get_output(j).name == output.name for j in range(layer.num_outputs)):
            layer.precision = trt.float32
            layer.set_output_type(0, trt.float32)
    output.dtype = trt.float32
    config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)


def validate_plan(plan: Path, onnx: Path, tiles: np.ndarray, min_dice: float = MIN_DICE) -> float:
    """Mask Dice of the plan against ONNX Runtime FP32 (CPU) on ``tiles`` ``(N, C, T, T) float32``."""
    from ..engines.onnxruntime import OnnxRuntimeEngine

    reference = OnnxRuntimeEngine(onnx, "cpu")
    engine = TensorRTEngine(plan)
    threshold = reference.info.threshold
    a = sigmoid(engine.infer(tiles)) >= threshold  # the product's rule: vessel where probability >= threshold
    b = sigmoid(reference.infer(tiles)) >= threshold
    engine.close()
    return metrics.dice(metrics.confusion(a, b))
