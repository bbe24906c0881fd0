"""Small checkpoints and their ONNX exports for the engine and export tests.

Checkpoints are built here (random weights with spread-out logits, random BatchNorm
statistics) in the format ``vesselcli.network.checkpoint`` writes, so the tests never depend on a
training run. Exports are cached per test session: the dynamo exporter takes seconds.
"""
from __future__ import annotations

from pathlib import Path

import torch

from vesselcli.network.checkpoint import save_checkpoint
from vesselcli.imaging.preprocess import Preprocessing
from vesselcli.network.unet import UNet, UNetConfig

TINY_SAME = UNetConfig(in_channels=1, base_channels=4, depth=3, norm="batch", padding="same")
#: The report's architecture (valid convolutions, no normalisation), shrunk for speed.
TINY_VALID = UNetConfig(in_channels=1, base_channels=4, depth=2, norm="none", padding="valid")
VALID_TILE = 64

_cache: dict[str, tuple[Path, Path]] = {}


def make_checkpoint(path: Path, config: UNetConfig, seed: int = 0, threshold: float = 0.45) -> Path:
    """Write a self-describing checkpoint of a randomly initialised network to ``path``."""
    torch.manual_seed(seed)
    model = UNet(config)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
        # Calibrate the head so logits on noise have mean 0 and std 3: masks then depend on
        # the network and few pixels sit within rounding distance of the threshold.
        model.eval()
        logits = model(torch.randn(2, config.in_channels, 64, 64))
        model.head.weight.mul_(3.0 / float(logits.std()))
        model.head.bias.sub_(float(model(torch.randn(2, config.in_channels, 64, 64)).mean()))
    payload = {
        "version": "test",
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "model_args": config.to_dict(),
        "preprocessing": Preprocessing().to_dict(),
        "threshold": threshold,
        "data": ["DRIVE: 16 training / 4 validation images (test fixture)"],
        "metrics": {"val_dice": 0.5, "val_auc": 0.9},
        "epoch": 1,
        "step": 10,
        "config": {},
        "created": "2026-01-01T00:00:00Z",
    }
    save_checkpoint(path, payload)
    return path


def exported(folder: Path, name: str) -> tuple[Path, Path]:
    """(checkpoint, onnx) for ``name`` in ('same', 'valid'), made once per session."""
    from vesselcli.export.onnx_export import export_onnx

    if name not in _cache:
        config = {"same": TINY_SAME, "valid": TINY_VALID}[name]
        checkpoint = make_checkpoint(folder / f"tiny-{name}.pt", config, seed=1 if name == "same" else 2)
        onnx = folder / f"tiny-{name}.onnx"
        export_onnx(checkpoint, onnx, tile=VALID_TILE)
        _cache[name] = (checkpoint, onnx)
    return _cache[name]
