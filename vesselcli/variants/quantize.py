"""INT8 by ONNX Runtime static quantization (QDQ), calibrated on real network inputs.

    quantize_int8(fp32_onnx, out, calibration)   -> out, an ONNX model with QDQ pairs

- Weights: signed INT8, one scale per output channel (per-channel), symmetric.
- Activations: unsigned INT8 with a zero point (U8S8, the form x86 VNNI instructions run),
  ranges from MinMax calibration over whole network inputs of training images at the
  model's scale (``vesselcli.imaging.preprocess.prepare``, the inference path).
- The first convolution stays float32: it sees the standardised image, whose tails carry the
  faint thin vessels, and it is under 1% of the arithmetic. Quantizing it too cost 0.0018 of
  mask Dice inside the FOV on the worst of every third DRIVE, CHASE_DB1 and HRF training image
  of the shipped model (0.9925 against 0.9943, each tiled whole at model scale), and as an INT8
  convolution with one input channel it was slower than in float32.
- The 1x1 head stays float32 too, so the logits (and the saved probability maps, the AUC) keep
  float precision: an INT8 head left about 85 probability levels inside a DRIVE FOV. It runs as
  a channels-last Gemm (``channels_last.gemm_head``) on the dequantized last feature map.
- The decoder's transposed convolutions are rewritten as 1x1 convolutions and a channels-last
  interleave (``channels_last.pixel_shuffle_upsampling``), which INT8 kernels run.
- The model's ``vesselseg.*`` metadata is carried over, with ``vesselseg.precision`` = int8.

Imports onnx and onnxruntime.quantization (the ``export`` extra); never on the inference path.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..engines.metadata import PREFIX
from .channels_last import gemm_head, pixel_shuffle_upsampling


def sensitive_nodes(model) -> list[str]:  # noqa: ANN001 - an onnx.ModelProto
    """Name of the first convolution of a graph (kept in float32), as a list."""
    convs = [n.name for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    return convs[:1]


def float_graph(source):  # noqa: ANN001, ANN201 - onnx.ModelProto in, (ModelProto, list[str]) out
    """``source`` respelt for INT8 (``channels_last``) and the nodes to keep in float32."""
    rewritten, head = gemm_head(pixel_shuffle_upsampling(source))
    return rewritten, sensitive_nodes(rewritten) + head


def pad_to(array: np.ndarray, multiple: int) -> np.ndarray:
    """``(C, H, W)`` -> ``(1, C, H', W')`` edge-padded so H' and W' are multiples of ``multiple``."""
    h, w = array.shape[1:]
    return np.pad(array, ((0, 0), (0, -h % multiple), (0, -w % multiple)), mode="edge")[None].astype(np.float32)


def quantize_int8(fp32: Path, out: Path, calibration: Iterable[np.ndarray], multiple: int = 8) -> Path:
    """Write the INT8 QDQ model of ``fp32`` to ``out`` (atomically).

    ``calibration``: ``(C, H, W) float32`` network inputs at model scale (any sizes; each is
    padded to ``multiple``). Returns ``out``.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    source = onnx.load(str(fp32))
    rewritten, keep_float = float_graph(source)
    input_name = source.graph.input[0].name
    inputs = [pad_to(x, multiple) for x in calibration]
    if not inputs:
        raise ValueError("quantize_int8 needs at least one calibration input")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter([{input_name: x} for x in inputs])

        def get_next(self):  # noqa: ANN201 - onnxruntime's protocol
            return next(self._feeds, None)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")
    float_tmp = out.with_name(f".tmp-float-{out.name}")
    onnx.save_model(rewritten, str(float_tmp))
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs a pre-processing hint that does not apply here
    try:
        quantize_static(
            str(float_tmp), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=keep_float,
        )
    finally:
        root.setLevel(level)
        float_tmp.unlink(missing_ok=True)
    model = onnx.load(str(tmp))
    props = {p.key: p.value for p in source.metadata_props}
    props[PREFIX + "precision"] = json.dumps("int8")
    del model.metadata_props[:]
    for key, value in sorted(props.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save_model(model, str(tmp))
    os.replace(tmp, out)
    return out
