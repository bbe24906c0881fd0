"""What a model says about itself, as flat string key/value pairs (ONNX ``metadata_props``,
TensorRT side files) and as ``ModelInfo``.

No torch, no onnx: the ONNX Runtime path reads these through ``onnxruntime`` alone.
Keys (all prefixed ``vesselseg.``; values are JSON):

``format`` (``1``), ``model_args`` (``UNetConfig``), ``preprocessing`` (``Preprocessing``),
``threshold``, ``tile_multiple``, ``fixed_tile`` (``null`` or ``[H, W]``), ``version`` (the
vesselseg that exported it), ``checkpoint_version``, ``data`` (training data), ``metrics``
(validation figures), ``epoch``, ``step``, ``created``.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np

from ..imaging.preprocess import Preprocessing
from .base import ModelInfo
from .errors import ModelError

PREFIX = "vesselseg."
FORMAT = 1
#: Descriptive fields copied from a checkpoint into ``ModelInfo.metadata``.
DESCRIPTIVE = ("data", "metrics", "epoch", "step", "created")


def tile_multiple_of(model_args: Mapping[str, Any]) -> int:
    """Height/width multiple the network runs at without internal padding (2**depth for 'same')."""
    if model_args.get("padding", "same") == "same":
        return 2 ** int(model_args.get("depth", 3))
    return 1


def info_from_checkpoint(ckpt: Mapping[str, Any]) -> ModelInfo:
    """``ModelInfo`` of a checkpoint dict (see ``vesselcli.network.checkpoint``); no torch needed."""
    try:
        model_args = dict(ckpt["model_args"])
        pre = Preprocessing.from_dict(ckpt["preprocessing"])
        threshold = float(ckpt["threshold"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"checkpoint lacks model description field {exc}; re-save it with the training code") from None
    meta: dict[str, Any] = {k: ckpt[k] for k in DESCRIPTIVE if k in ckpt}
    meta["checkpoint_version"] = ckpt.get("version", "unknown")
    return ModelInfo(pre, threshold, model_args, tile_multiple_of(model_args), None, meta)


def info_to_metadata(info: ModelInfo, version: str) -> dict[str, str]:
    """``ModelInfo`` -> flat ``{key: JSON string}`` for ONNX ``metadata_props``."""
    fields: dict[str, Any] = {
        "format": FORMAT,
        "model_args": info.model_args,
        "preprocessing": info.preprocessing.to_dict(),
        "threshold": info.threshold,
        "tile_multiple": info.tile_multiple,
        "fixed_tile": list(info.fixed_tile) if info.fixed_tile else None,
        "version": version,
    }
    for key, value in info.metadata.items():
        fields.setdefault(key, value)
    return {PREFIX + k: json.dumps(v, sort_keys=True) for k, v in fields.items()}


def info_from_metadata(props: Mapping[str, str], source: str) -> ModelInfo:
    """Flat ``{key: JSON string}`` -> ``ModelInfo``; ``ModelError`` naming ``source`` if absent."""
    fields: dict[str, Any] = {}
    for key, text in props.items():
        if key.startswith(PREFIX):
            try:
                fields[key[len(PREFIX):]] = json.loads(text)
            except json.JSONDecodeError:
                raise ModelError(f"{source}: metadata {key!r} is not valid JSON ({text[:60]!r})") from None
    if fields.get("format") != FORMAT:
        raise ModelError(
            f"{source} carries no vesselseg model description (metadata 'vesselseg.format' = {fields.get('format')!r}, "
            f"expected {FORMAT}); export the model with `vesselseg export CHECKPOINT`"
        )
    try:
        pre = Preprocessing.from_dict(fields["preprocessing"])
        fixed = fields.get("fixed_tile")
        info = ModelInfo(
            preprocessing=pre,
            threshold=float(fields["threshold"]),
            model_args=dict(fields["model_args"]),
            tile_multiple=int(fields.get("tile_multiple", 1)),
            fixed_tile=(int(fixed[0]), int(fixed[1])) if fixed else None,
            metadata={k: v for k, v in fields.items() if k not in _STRUCTURAL},
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelError(f"{source}: incomplete vesselseg metadata ({exc.__class__.__name__}: {exc}); re-export it") from None
    return info


_STRUCTURAL = ("format", "model_args", "preprocessing", "threshold", "tile_multiple", "fixed_tile")


def pad_to_multiple(array: np.ndarray, info: ModelInfo) -> np.ndarray:
    """Edge-pad ``(N, C, H, W)`` so H and W are multiples of the model's tile multiple.

    The padding replicates edges as the PyTorch network does internally; callers crop the
    logits back to the input size. Fixed-tile engines are left alone (their size is checked).
    """
    height, width = array.shape[2:]
    multiple = 1 if info.fixed_tile else info.tile_multiple
    ph, pw = (-height) % multiple, (-width) % multiple
    if ph or pw:
        array = np.pad(array, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="edge")
    return array


def check_batch(batch: object, info: ModelInfo) -> np.ndarray:
    """Validate an engine input: ``(N, C, H, W)`` with the model's channel count -> float32 C-contiguous."""
    array = np.ascontiguousarray(batch, dtype=np.float32)
    channels = int(info.model_args.get("in_channels", 1))
    if array.ndim != 4 or array.shape[1] != channels or array.shape[0] < 1:
        raise ValueError(f"engine input must be (N, {channels}, H, W) with N >= 1, got shape {array.shape}")
    if info.fixed_tile and tuple(array.shape[2:]) != info.fixed_tile:
        raise ValueError(
            f"this model was exported for {info.fixed_tile[0]}x{info.fixed_tile[1]} tiles only, got "
            f"{array.shape[2]}x{array.shape[3]}; use that tile size or re-export with a different --tile"
        )
    return array
