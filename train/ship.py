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

from vesselcli.network.checkpoint import read_checkpoint, save_checkpoint

SHIPPED = Path(__file__).resolve().parents[1] / "vesselcli" / "models" / "default.pt"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.ship", description="Install a checkpoint as the shipped default model.")
    parser.add_argument("checkpoint")
    parser.add_argument("--out", default=str(SHIPPED))
    parser.add_argument("--threshold", type=float, default=None,
                        help="ship this threshold instead of the checkpoint's (one chosen on validation images, "
                             "e.g. by `python -m train.scales --sweep`); recorded as threshold_source")
    parser.add_argument("--threshold-source", default="", help="how --threshold was chosen (kept in the checkpoint)")
    args = parser.parse_args(argv)
    data = read_checkpoint(args.checkpoint)
    if data["model_args"].get("in_channels", 1) != 1:
        parser.error(f"{args.checkpoint} takes {data['model_args']['in_channels']} input planes (train --camera-channel); "
                     "segment feeds one: it cannot be shipped")
    kept = {k: v for k, v in data.items() if k not in ("format", "optimizer", "scheduler", "train_model")}
    if args.threshold is not None:
        if not 0.0 < args.threshold < 1.0:
            parser.error(f"--threshold must be a probability between 0 and 1, got {args.threshold}")
        kept["threshold_from_training"] = kept["threshold"]
        kept["threshold"] = args.threshold
        kept["threshold_source"] = args.threshold_source or "given to train.ship"
    save_checkpoint(Path(args.out), kept)
    print(f"wrote {args.out} (epoch {data['epoch']}, step {data['step']}, threshold {kept['threshold']:.3f}, metrics {data['metrics']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
