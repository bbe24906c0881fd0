"""Make a training checkpoint the package's default model.

    python -m train.ship runs/default/best.pt

Writes ``vesselcli/models/default.pt``: the same self-describing checkpoint without the
optimizer and scheduler state and, for an ``--ema`` run, without the raw training weights
(weights, model arguments, preprocessing, threshold, data, validation metrics, config).
Then ``make engine`` (``vesselseg export --update-shipped``) rebuilds the shipped ONNX model
from it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vesselcli.checkpoint import read_checkpoint, save_checkpoint

SHIPPED = Path(__file__).resolve().parents[1] / "vesselcli" / "models" / "default.pt"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.ship", description="Install a checkpoint as the shipped default model.")
    parser.add_argument("checkpoint")
    parser.add_argument("--out", default=str(SHIPPED))
    args = parser.parse_args(argv)
    data = read_checkpoint(args.checkpoint)
    kept = {k: v for k, v in data.items() if k not in ("format", "optimizer", "scheduler", "train_model")}
    save_checkpoint(Path(args.out), kept)
    print(f"wrote {args.out} (epoch {data['epoch']}, step {data['step']}, threshold {data['threshold']:.3f}, metrics {data['metrics']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
