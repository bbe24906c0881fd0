"""Test-set accuracy of a checkpoint on the public protocols (the model card's figures).

    python -m train.evaluate vesselcli/models/default.pt --data ../shared/data

- DRIVE: the 20 test images against 1st_manual, inside the provided FOV masks;
- CHASE_DB1: Image_11L ... Image_14R against 1st_manual (1stHO), inside the FOV masks;
- DRIVE-512: the same 20 DRIVE test photographs squashed to 512x512 (the seed project's
  re-packaging and protocol): whole image, FOV detected from the pixels.

Which images are test images is decided in one place, ``vesselcli.io.protocols``.

Figures are means over images (F1 = Dice); AUC is computed from the probabilities. F1 and IoU
come with a 95% bootstrap interval over images (2,000 resamples of the images, seed 0).
The model runs on whole images at model scale (the same ``prepare`` as ``segment``), so this
is the network's accuracy; ``vesselseg segment`` + ``vesselseg score`` measure the product.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from vesselcli.analysis import metrics
from vesselcli.network.checkpoint import load_model, preprocessing_of
from vesselcli.imaging.fov import detect_fov
from vesselcli.io.imageio import read_image, read_mask
from vesselcli.io.protocols import evaluation_sets

from .data import Sample, find_triples
from .loop import predict_probability


def protocol_sets(data: Path) -> dict[str, list[tuple[Path, Path, Path | None]]]:
    """(image, truth, FOV or None) per protocol present under ``data`` (``vesselcli.io.protocols``)."""
    return {s.name: find_triples(list(s.images), s.truth_dir, s.fov_dir) for s in evaluation_sets(data)}


def score_set(model: torch.nn.Module, pre, threshold: float, triples, whole_image: bool) -> dict:
    """Mean figures over a protocol's images; ``whole_image`` scores outside the FOV too."""
    rows = []
    for image, truth_path, fov_path in triples:
        rgb = read_image(image)
        fov = read_mask(fov_path) if fov_path else detect_fov(rgb)
        truth = read_mask(truth_path)
        prob = predict_probability(model, Sample(image.name, rgb, truth, fov), pre, torch.device("cpu"))
        pred = (prob >= threshold) & fov
        region = None if whole_image else fov
        c = metrics.confusion(pred, truth, region)
        rows.append({**metrics.summary(c), "auc": metrics.roc_auc(np.where(fov, prob, 0.0), truth, region)})
    means = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    intervals = {k: metrics.bootstrap_interval([r[k] for r in rows]) for k in ("dice", "iou")}
    return means | {"images": len(rows), "interval95": intervals}


def interval_line(r: dict) -> str:
    """The printed interval line of one protocol's figures."""
    f1, iou = r["interval95"]["dice"], r["interval95"]["iou"]
    return f"           95% bootstrap interval over images (2,000 draws): F1 [{f1[0]:.4f}, {f1[1]:.4f}]  IoU [{iou[0]:.4f}, {iou[1]:.4f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", default="../shared/data", help="folder holding DRIVE, CHASE_DB1, DRIVE-512")
    parser.add_argument("--threshold", type=float, default=None, help="default: the checkpoint's")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    model, ckpt = load_model(args.checkpoint)
    pre = preprocessing_of(ckpt)
    threshold = args.threshold if args.threshold is not None else float(ckpt["threshold"])
    results = {}
    with torch.inference_mode():
        for test_set in evaluation_sets(Path(args.data)):
            triples = find_triples(list(test_set.images), test_set.truth_dir, test_set.fov_dir)
            r = results[test_set.name] = score_set(model, pre, threshold, triples, whole_image=test_set.whole_image)
            if not args.json:
                print(
                    f"{test_set.name:10s} ({r['images']} images{', whole image' if test_set.whole_image else ', inside FOV'}): "
                    f"F1 {r['dice']:.4f}  IoU {r['iou']:.4f}  AUC {r['auc']:.4f}  Se {r['sensitivity']:.4f}  "
                    f"Sp {r['specificity']:.4f}  Acc {r['accuracy']:.4f}  MCC {r['mcc']:.4f}",
                    flush=True,
                )
                print(interval_line(r), flush=True)
    if args.json:
        print(json.dumps({"threshold": threshold, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
