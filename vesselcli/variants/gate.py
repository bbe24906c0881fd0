"""The parity gate a faster variant must pass before it ships, measured through ``segment``.

    run_gate(fp32_onnx, variant_onnx, data_root, work)  -> record (dict; ``passed`` says it all)

Both models segment the same images through the product's own pipeline (``vesselcli.run.pipeline``:
reading, FOV, scaling, tiling and blending, threshold, resizing back), with the datasets'
FOV masks:

1. Training images of DRIVE (21-40), CHASE_DB1 (Image_01L-Image_10R) and HRF (the 15 of its
   training split, 3504x2336): every image's variant mask must reach Dice >= ``MIN_DICE``
   (0.99) against the float32 mask. Training images, so the test sets decide nothing here.
2. DRIVE test (20 images against 1st_manual, inside the FOV): the variant's mean F1 may be at
   most ``MAX_F1_DROP`` (0.003) below float32's.
3. Speed: milliseconds of one engine batch (2 tiles of 592x592, the pipeline's default) for
   each model, interleaved and repeated (median), so ``--precision auto`` can pick the faster.

Calibration inputs for quantization come from every fourth training image
(``calibration_inputs``); the gate checks all of them, calibrated or not.
"""
from __future__ import annotations

import csv
import platform
import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..io.protocols import drive_test_set, is_chase_test

#: Smallest mask Dice of any training image against the float32 model.
MIN_DICE = 0.99
#: Largest drop of DRIVE test mean F1 against the float32 model.
MAX_F1_DROP = 0.003
TIMING_BATCH = (2, 1, 592, 592)


@dataclass(frozen=True)
class ImageSet:
    """Images of one dataset with their FOV masks (and annotations for the F1 check)."""

    name: str
    images: tuple[Path, ...]
    fov_dir: Path
    gt_dir: Path | None = None


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def training_sets(data: Path) -> list[ImageSet]:
    """The training images of DRIVE, CHASE_DB1 and HRF; ``FileNotFoundError`` naming what is missing."""
    data = Path(data)
    folders = {
        "DRIVE training": (data / "DRIVE" / "training" / "images", data / "DRIVE" / "training" / "mask"),
        "CHASE_DB1 training": (data / "CHASE_DB1" / "images", data / "CHASE_DB1" / "fov"),
        "HRF training": (data / "HRF" / "images", data / "HRF" / "mask"),
    }
    sets = []
    for name, (images, fov) in folders.items():
        if not images.is_dir() or not fov.is_dir():
            raise FileNotFoundError(f"the gate needs {images} and {fov}; pass --data DIR holding DRIVE/, CHASE_DB1/ and HRF/")
        files = _files(images)
        if name.startswith("CHASE"):
            files = [p for p in files if not is_chase_test(p)]  # Image_01L ... Image_10R train
        sets.append(ImageSet(name, tuple(files), fov))
    return sets


def drive_test(data: Path) -> ImageSet:
    test = drive_test_set(data)  # FileNotFoundError saying where it looked
    return ImageSet("DRIVE test", test.images, test.fov_dir, test.truth_dir)


def calibration_inputs(sets: list[ImageSet], pre, every: int = 4) -> list[np.ndarray]:  # noqa: ANN001
    """``(C, h, w) float32`` network inputs of every ``every``-th image of each set, at model scale."""
    from ..io.imageio import read_image, read_mask
    from ..io.pairing import pair_files
    from ..imaging.preprocess import prepare

    inputs = []
    for image_set in sets:
        chosen = list(image_set.images[::every])
        pairs, _, _ = pair_files(chosen, _files(image_set.fov_dir), None)
        for path in chosen:
            rgb = read_image(path)
            fov = read_mask(pairs[path])
            inputs.append(prepare(rgb, fov, pre)[0])
    return inputs


def segment_set(model: Path, image_set: ImageSet, out: Path) -> dict[str, dict[str, str]]:
    """Run ``segment``'s pipeline with ``model`` on ``image_set`` into ``out``; rows by image name."""
    from ..run import pipeline
    from ..run.config import SegmentConfig
    from ..engines.onnxruntime import OnnxRuntimeEngine

    config = SegmentConfig(inputs=image_set.images, out=out, fov_dir=image_set.fov_dir, gt_dir=image_set.gt_dir,
                           overlays=False, overwrite=True)
    engine = OnnxRuntimeEngine(model, "cpu")
    try:
        report = pipeline.run(config, pipeline.plan(config), engine)
    finally:
        engine.close()
    if report.failed or report.fatal:
        raise RuntimeError(f"segment failed on {report.failed} image(s) of {image_set.name} ({report.fatal or 'see results.csv'})")
    with open(out / "results.csv", newline="") as handle:
        return {row["image"]: row for row in csv.DictReader(handle)}


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two ``(H, W) bool`` masks; 1.0 when both are empty."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def compare_masks(first: Path, second: Path, names: list[str]) -> list[float]:
    """Dice of ``first/masks/<key>.png`` against ``second/masks/<key>.png`` for each key."""
    from ..io.imageio import read_mask

    return [mask_dice(read_mask(first / "masks" / f"{n}.png"), read_mask(second / "masks" / f"{n}.png")) for n in names]


def time_models(models: dict[str, Path], repeats: int = 7) -> dict[str, float]:
    """Median ms of one ``TIMING_BATCH`` through each model's engine, the models interleaved."""
    from ..engines.onnxruntime import OnnxRuntimeEngine

    batch = np.random.default_rng(0).standard_normal(TIMING_BATCH).astype(np.float32)
    engines = {name: OnnxRuntimeEngine(path, "cpu") for name, path in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    try:
        for engine in engines.values():
            engine.infer(batch)  # warm-up
        for _ in range(repeats):
            for name, engine in engines.items():
                start = time.perf_counter()
                engine.infer(batch)
                times[name].append(1000.0 * (time.perf_counter() - start))
    finally:
        for engine in engines.values():
            engine.close()
    return {name: statistics.median(t) for name, t in times.items()}


def _keys(rows: dict[str, dict[str, str]]) -> list[str]:
    # Output names are the image names without their extension (see vesselcli.io.discover).
    return [Path(name).with_suffix("").as_posix() for name in rows]


def run_gate(fp32: Path, variant: Path, precision: str, data: Path, work: Path, say=print) -> dict:  # noqa: ANN001
    """Measure ``variant`` against ``fp32``; the gate record (``passed`` True or False)."""
    datasets = {}
    for image_set in training_sets(data):
        say(f"gate: {image_set.name}, {len(image_set.images)} images, float32 and {precision}")
        rows = segment_set(fp32, image_set, work / "fp32" / image_set.name)
        segment_set(variant, image_set, work / precision / image_set.name)
        dice = compare_masks(work / "fp32" / image_set.name, work / precision / image_set.name, _keys(rows))
        worst = int(np.argmin(dice))
        datasets[image_set.name] = {"images": len(dice), "min_dice": round(min(dice), 5),
                                    "mean_dice": round(float(np.mean(dice)), 5), "worst": list(rows)[worst]}
    test = drive_test(data)
    say(f"gate: {test.name}, {len(test.images)} images, F1 against 1st_manual inside the FOV")
    f1 = {}
    for name, model in (("fp32", fp32), (precision, variant)):
        rows = segment_set(model, test, work / name / test.name)
        f1[name] = round(float(np.mean([float(r["dice"]) for r in rows.values()])), 5)
    say("gate: timing both models")
    ms = {k: round(v, 2) for k, v in time_models({"fp32": fp32, precision: variant}).items()}
    passed = all(d["min_dice"] >= MIN_DICE for d in datasets.values()) and f1["fp32"] - f1[precision] <= MAX_F1_DROP
    from ..provenance import cpu_model, file_sha256

    return {
        "precision": precision, "source": fp32.name, "source_sha256": file_sha256(fp32), "passed": passed,
        "min_dice": MIN_DICE, "max_f1_drop": MAX_F1_DROP, "datasets": datasets, "f1": f1,
        "ms_per_batch": ms, "batch": "x".join(map(str, TIMING_BATCH)),
        "machine": f"{platform.machine()} {cpu_model()}", "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
