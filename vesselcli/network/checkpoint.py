"""Self-describing training checkpoints (imports torch; the ONNX path never loads this).

A checkpoint is a plain dict of tensors and Python primitives, so it loads with
``torch.load(weights_only=True)`` and never executes code:

``format``, ``version``, ``model`` (state dict), ``model_args`` (``UNetConfig``),
``preprocessing`` (``Preprocessing``), ``threshold``, ``data`` (training data description),
``metrics`` (validation figures), ``epoch``, ``step``, ``config`` (the resolved training
options), and for resuming ``optimizer`` / ``scheduler`` state.
"""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from ..imaging.preprocess import Preprocessing
from .unet import UNet, UNetConfig

FORMAT = "vesselseg-checkpoint/1"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a temporary file in the same folder, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    torch.save({"format": FORMAT, **payload}, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load a checkpoint dict safely; a clear ``ValueError`` if it is not ours."""
    try:
        data = torch.load(Path(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own text advises loading with weights_only=False: exactly what must not be done.
        found = re.search(r"Unsupported (global: GLOBAL \S+|operand \d+)", str(exc))
        detail = found.group(0) if found else "weights-only load failed"
        raise ValueError(
            f"{path} is not a loadable checkpoint: a safe, weights-only load refused it ({detail}) and "
            "nothing in it was run; use a checkpoint written by vesselseg's training"
        ) from None
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds here
        text = " ".join(str(exc).split())
        raise ValueError(f"{path} is not a loadable checkpoint ({exc.__class__.__name__}: {text})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a vesselseg checkpoint (expected format {FORMAT!r})")
    return data


def load_model(path: Path | str) -> tuple[UNet, dict[str, Any]]:
    """Rebuild the network from a checkpoint alone; returns (model in eval mode, checkpoint)."""
    data = read_checkpoint(path)
    model = UNet(UNetConfig.from_dict(data["model_args"]))
    model.load_state_dict(data["model"])
    model.eval()
    return model, data


def preprocessing_of(data: dict[str, Any]) -> Preprocessing:
    return Preprocessing.from_dict(data["preprocessing"])
