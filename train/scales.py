"""Validation at full resolution across processing scales: F1, sensitivity and vessel width.

    python -m train.scales vesselcli/models/default.pt --data ../shared/data

Images (validation only; no test image is read): HRF's held-out training photographs
(``train.data.FIXED_VALIDATION``, 3504x2336), the CHASE_DB1 and DRIVE validation images of the
seed-0 split (the shipped model's), and borderless crops of the HRF and CHASE_DB1 ones (a
centred square of 0.6x the FOV diameter, wholly inside the FOV, so the photograph has no dark
border and its FOV is the whole crop).

Each image is segmented at several scales: ``multiple`` x the FOV rule's factor of the *whole*
photograph (the camera's own scale, also used for its crop), and ``rule``, the product's rule
applied to the image as given. The probability is brought back to full size and thresholded
there (as ``segment`` does); figures are inside the FOV at full size: F1, sensitivity, and the
width ratio = mean width of the mask / mean width of the annotation
(``vesselcli.analysis.morphology.mean_width``: vessel pixels / skeleton length, both inside
the FOV; the ``mean_width_px`` column of ``segment``'s results).
Means over images per set.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vesselcli.analysis import metrics
from vesselcli.analysis.morphology import mean_width, width_ratio
from vesselcli.imaging.calibre import edge_width, first_factor, next_factor
from vesselcli.network.checkpoint import load_model, preprocessing_of
from vesselcli.imaging.fov import detect_fov, fov_diameter
from vesselcli.io.imageio import encode_png, write_atomic
from vesselcli.imaging.preprocess import Preprocessing, network_input, resize_image, resize_mask, scale_factor, scaled_shape

from .data import Sample, camera_value, load_samples, split_validation, with_camera_plane

CROP_FRACTION = 0.6  # crop side / FOV diameter: a centred square this size lies inside the disc


@dataclass
class Case:
    """One validation image: ``sample`` at full size and the FOV rule's factor of its camera."""

    group: str
    sample: Sample
    camera_factor: float


def borderless_crop(sample: Sample) -> Sample:
    """A centred square of ``CROP_FRACTION`` x the FOV diameter around the FOV's centroid.

    The crop has no dark border; its FOV is detected from its pixels, as ``segment`` would.
    """
    ys, xs = np.nonzero(sample.fov)
    cy, cx = int(ys.mean()), int(xs.mean())
    half = int(CROP_FRACTION * fov_diameter(sample.fov) / 2)
    window = (slice(cy - half, cy + half), slice(cx - half, cx + half))
    rgb = np.ascontiguousarray(sample.rgb[window])
    return Sample(f"{sample.name}#crop", rgb, sample.vessels[window], detect_fov(rgb))


def validation_cases(data: Path, pre: Preprocessing) -> list[Case]:
    samples = load_samples([data / "DRIVE", data / "CHASE_DB1", data / "HRF"])
    _, val = split_validation(samples, 0.2, 0)
    cases = []
    for s in val:
        group = s.name.split("/")[0]
        factor = pre.fov_diameter / fov_diameter(s.fov)
        cases.append(Case(group, s, factor))
        if group in ("HRF", "CHASE_DB1"):
            cases.append(Case(f"{group} crops", borderless_crop(s), factor))
    return cases


@torch.no_grad()
def model_scale_probability(model: torch.nn.Module, sample: Sample, pre: Preprocessing, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """(probability ``(h, w) float32``, FOV ``(h, w) bool``), the network run at ``factor``."""
    shape = scaled_shape(sample.rgb.shape[:2], factor)
    small_fov = resize_mask(sample.fov, shape)
    x = network_input(resize_image(sample.rgb, shape), small_fov, pre)
    if model.config.in_channels == 2:  # train --camera-channel: the photograph's own FOV, at its size
        x = with_camera_plane(x, camera_value(sample.fov, pre, model.camera_scale))
    pad = [(-n) % 8 for n in shape]  # three poolings
    t = torch.nn.functional.pad(torch.from_numpy(x)[None], (0, pad[1], 0, pad[0]), mode="reflect")
    return torch.sigmoid(model(t).float())[0, 0, : shape[0], : shape[1]].numpy(), small_fov


def calibre_scale(model: torch.nn.Module, sample: Sample, pre: Preprocessing, threshold: float) -> tuple[float, float]:
    """(factor the calibre rule picks, as ``segment --scale-rule calibre`` does; the mask width
    at the model's scale of the first look, 0.0 when there is none)."""
    factor, look = first_factor(scale_factor(sample.fov, pre))
    if not look:
        return factor, 0.0
    prob, fov = model_scale_probability(model, sample, pre, factor)
    mask = (prob >= threshold) & fov
    again = next_factor(mask, factor)
    return (factor if again is None else again), edge_width(mask)


def probability_at(model: torch.nn.Module, sample: Sample, pre: Preprocessing, factor: float) -> np.ndarray:
    """Whole-image probability ``(H, W) float32`` at full size, the network run at ``factor``."""
    prob, _ = model_scale_probability(model, sample, pre, factor)
    return resize_image(prob, sample.rgb.shape[:2])


def _thresholded(sample: Sample, prob: np.ndarray, threshold: float) -> tuple[np.ndarray, metrics.Counts]:
    """The mask at ``threshold`` inside the FOV and its confusion counts against the annotation."""
    mask = (prob >= threshold) & sample.fov
    return mask, metrics.confusion(mask, sample.vessels, sample.fov)


def f1_at(sample: Sample, prob: np.ndarray, threshold: float) -> float:
    """F1 inside the FOV at ``threshold`` (``score``'s, without its vessel-width skeleton)."""
    return metrics.dice(_thresholded(sample, prob, threshold)[1])


def score(sample: Sample, prob: np.ndarray, threshold: float, truth_width: float) -> dict:
    mask, c = _thresholded(sample, prob, threshold)
    ratio = width_ratio(mean_width(mask, sample.fov), truth_width)
    return {"f1": metrics.dice(c), "se": metrics.summary(c)["sensitivity"], "width_ratio": float("nan") if ratio is None else ratio}


def print_reference(model: torch.nn.Module, cases: list[Case], pre: Preprocessing, threshold: float) -> int:
    """The calibre rule's reference: mean ``edge_width`` of the model's masks at its own scale
    on the DRIVE validation images, where the FOV rule is right."""
    widths = []
    for case in cases:
        if case.group == "DRIVE":
            prob, fov = model_scale_probability(model, case.sample, pre, scale_factor(case.sample.fov, pre))
            widths.append(edge_width((prob >= threshold) & fov))
            print(f"{case.sample.name:28s} mask width at model scale {widths[-1]:.3f} px")
    print(f"reference width (mean over {len(widths)} images): {np.mean(widths):.2f} px")
    return 0


def write_sets(cases: list[Case], out: Path) -> None:
    """Each validation set as folders ``segment`` and ``score`` read: ``OUT/<set>/images``,
    ``manual`` (annotations) and ``mask`` (FOV masks; for the crops, the FOV detected from the
    crop, as ``segment`` finds it), PNG files of the same stem (a crop's ends in ``_crop``)."""
    sets = {}
    for case in cases:
        s = case.sample
        folder = out / case.group.replace(" ", "_")
        stem = Path(s.name.split("/")[-1].replace("#crop", "")).stem + ("_crop" if s.name.endswith("#crop") else "")
        for sub, array in (("images", s.rgb), ("manual", s.vessels.astype(np.uint8) * 255), ("mask", s.fov.astype(np.uint8) * 255)):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            write_atomic(folder / sub / f"{stem}.png", encode_png(array))
        sets[folder] = sets.get(folder, 0) + 1
    for folder, n in sets.items():
        print(f"{folder}: {n} images; then: vesselseg segment {folder}/images --out O --gt {folder}/manual --fov {folder}/mask"
              f" && vesselseg score O/masks {folder}/manual --fov {folder}/mask")


def best_threshold(rows: list[dict]) -> tuple[str, dict[str, float]]:
    """The swept threshold with the best mean over (set, scale) groups of the group's mean F1,
    and that mean per threshold."""
    groups = {(r["group"], r["scale"]) for r in rows}
    means = {t: float(np.mean([np.mean([r["sweep"][t] for r in rows if (r["group"], r["scale"]) == g]) for g in groups]))
             for t in rows[0]["sweep"]}
    return max(means, key=means.get), means


def print_sweep(rows: list[dict]) -> None:
    best, means = best_threshold(rows)
    print("\nthreshold sweep (mean over sets of each set's mean F1):")
    for t, m in means.items():
        print(f"  {t:>6s}  {m:.4f}{'  <- best' if t == best else ''}")
    for group in dict.fromkeys(r["group"] for r in rows):
        sel = [r for r in rows if r["group"] == group]
        print(f"  {group:16s} at {best}: F1 {np.mean([r['sweep'][best] for r in sel]):.4f} ({len(sel)} rows)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.scales", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--multiples", type=float, nargs="*", default=[0.75, 1.0, 1.5, 2.0, 3.0])
    parser.add_argument("--calibre", action="store_true", help="also the calibre rule (segment --scale-rule calibre)")
    parser.add_argument("--threshold", type=float, default=None, help="default: the checkpoint's")
    parser.add_argument("--groups", nargs="+", default=None, help="only these sets (e.g. HRF 'HRF crops')")
    parser.add_argument("--only", nargs="*", default=None, help="only these scale labels (e.g. calibre)")
    parser.add_argument("--reference", action="store_true", help="only print the model's mask width on DRIVE validation at the FOV rule (vesselcli.imaging.calibre.REFERENCE_WIDTH)")
    parser.add_argument("--sweep", type=float, nargs="*", default=None,
                        help="also score each probability at these thresholds and print the one with the best mean "
                             "over sets of each set's mean F1 (every set weighs the same, however many pixels)")
    parser.add_argument("--json", default="", help="also write every image's figures to this file")
    parser.add_argument("--write-sets", metavar="DIR", default="",
                        help="only write the validation sets (and crops) as image, annotation and FOV folders under DIR, "
                             "for running them through vesselseg segment and score")
    args = parser.parse_args(argv)
    model, ckpt = load_model(args.checkpoint)
    model.camera_scale = float(ckpt.get("config", {}).get("camera_channel") or 0.0)  # the plane's scale, if any
    model.eval()
    pre = preprocessing_of(ckpt)
    threshold = args.threshold if args.threshold is not None else float(ckpt["threshold"])
    cases = validation_cases(Path(args.data), pre)
    if args.write_sets:
        write_sets(cases, Path(args.write_sets))
        return 0
    if args.reference:
        return print_reference(model, cases, pre, threshold)
    rows = []
    for case in cases:
        if args.groups and case.group not in args.groups:
            continue
        s = case.sample
        truth_width = mean_width(s.vessels, s.fov)
        scales = {f"x{m:g}": case.camera_factor * m for m in args.multiples}
        scales["rule"] = scale_factor(s.fov, pre)
        if args.calibre:
            scales["calibre"], first_width = calibre_scale(model, s, pre, threshold)
            print(f"{s.name:28s} mask width of the first look at model scale: {first_width:.3f} px (0: none)", flush=True)
        for label, factor in scales.items():
            if args.only and label not in args.only:
                continue
            start = time.perf_counter()
            prob = probability_at(model, s, pre, factor)
            row = {"group": case.group, "image": s.name, "scale": label, "factor": factor, **score(s, prob, threshold, truth_width)}
            row["seconds"] = time.perf_counter() - start
            if args.sweep:
                row["sweep"] = {f"{t:g}": f1_at(s, prob, t) for t in args.sweep}
            rows.append(row)
            print(f"{s.name:28s} {label:5s} factor {row['factor']:.3f}  F1 {row['f1']:.4f}  Se {row['se']:.4f}  width {row['width_ratio']:.2f}x", flush=True)
    print("\nmeans over images (F1, Se, mask/annotation width):")
    for group in dict.fromkeys(r["group"] for r in rows):
        for label in dict.fromkeys(r["scale"] for r in rows if r["group"] == group):
            sel = [r for r in rows if r["group"] == group and r["scale"] == label]
            mean = {k: float(np.mean([r[k] for r in sel])) for k in ("f1", "se", "width_ratio")}
            print(f"{group:16s} {label:5s} ({len(sel)} images)  F1 {mean['f1']:.4f}  Se {mean['se']:.4f}  width {mean['width_ratio']:.2f}x")
    if args.sweep:
        print_sweep(rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"checkpoint": args.checkpoint, "threshold": threshold, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
